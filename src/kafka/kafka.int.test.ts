/**
 * Integration tests of the Kafka binding against a real broker (`KAFKA_BROKERS`, default
 * 127.0.0.1:9092; `scripts/services.sh up` starts one). Every test creates its own topics with a
 * unique name and deletes them afterwards, so runs never collide.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Admin, Consumer, KafkaError, nextOffsets, Producer, TransactionalProducer, type KafkaConfig, type Message, type TopicPartition } from "./index.ts";
import { loadNative, type Native } from "./native.ts";
import { HAVE_GCC, nativeSharedObject } from "../../test/native-so.ts";
import { waitFor } from "../../test/wait.ts";

// NOTE: bunfig.toml's [test] timeout is not applied by `bun test`; each test is bounded here.
setDefaultTimeout(60_000);

const BROKERS = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";
/**
 * KIP-848's consumer group protocol needs Kafka 4. KAFKA_VERSION names the broker's version as
 * for scripts/services.sh (default 4.4.0); set it to 3.9.2 when KAFKA_BROKERS is a 3.9 broker.
 */
const KIP848 = !(process.env.KAFKA_VERSION ?? "4.4.0").startsWith("3.");
const base: KafkaConfig = { "bootstrap.servers": BROKERS };
const text = new TextDecoder();
const str = (b: Uint8Array | null) => (b === null ? null : text.decode(b));

let admin: Admin;
const created: string[] = [];
let seq = 0;

beforeAll(() => {
  admin = new Admin(base);
});

afterAll(async () => {
  // Safety net for tests that failed before deleting their topics.
  if (created.length) await admin.deleteTopics(created).catch(() => {});
  admin.close();
});

/** Unique topics for one test; `using` deletes them when the test ends. */
async function topics(specs: { partitions?: number; config?: Record<string, string> }[]) {
  const names = specs.map(() => `kitsune-int-${process.pid}-${Date.now().toString(36)}-${++seq}`);
  await admin.createTopics(specs.map((s, i) => ({ name: names[i]!, partitions: s.partitions ?? 1, config: s.config })));
  created.push(...names);
  return {
    names,
    async [Symbol.asyncDispose]() {
      await admin.deleteTopics(names);
      for (const n of names) created.splice(created.indexOf(n), 1);
    },
  };
}

const groupId = () => `kitsune-int-g-${process.pid}-${Date.now().toString(36)}-${++seq}`;

function consumer(extra: KafkaConfig = {}, options: ConstructorParameters<typeof Consumer>[1] = {}): Consumer {
  return new Consumer({ ...base, "group.id": groupId(), ...extra }, options);
}

/** Resolves once `cond()` holds; rejects with `what` after `ms`. */
const until = (cond: () => boolean, what: string, ms = 30_000): Promise<void> => waitFor(cond, what, { timeoutMs: ms, intervalMs: 20 });

/**
 * Reads batches into `into` (committing each) until the consumer closes; resolves when the
 * iterator ends. `onBatch` may stop early by returning true.
 */
async function drainInto(c: Consumer, into: Message[], onBatch?: (b: Message[]) => boolean | void): Promise<void> {
  for await (const batch of c.batches({ maxMessages: 500, maxWaitMs: 10 })) {
    into.push(...batch);
    await c.commit(nextOffsets(batch));
    if (onBatch?.(batch)) return;
  }
}

/** Reads `topic` as a new group member (read_committed) until the message "marker" arrived, within 30 s. */
async function readUntilMarker(topic: string): Promise<Message[]> {
  const c = consumer();
  c.subscribe([topic]);
  const got: Message[] = [];
  const run = drainInto(c, got, () => got.some((m) => str(m.value) === "marker"));
  const timer = setTimeout(() => void c.close(), 30_000);
  await run;
  clearTimeout(timer);
  await c.close();
  return got;
}

/** Consumes until `n` messages arrived (or throws after `ms`); the consumer stays open. */
async function take(c: Consumer, n: number, ms = 30_000): Promise<Message[]> {
  const got: Message[] = [];
  const it = c.batches({ maxMessages: 1000, maxWaitMs: 10 });
  const timer = setTimeout(() => void c.close(), ms);
  try {
    while (got.length < n) {
      const r = await it.next();
      if (r.done) throw new Error(`got ${got.length} of ${n} messages within ${ms} ms`);
      got.push(...r.value);
    }
  } finally {
    clearTimeout(timer);
    await it.return(undefined);
  }
  return got;
}

/**
 * Produces messages of every shape and reads them back through `native` (a build of native.c,
 * or false for plain FFI): value, key, headers, timestamp, partition and offset.
 */
async function roundTrip(native: Native | false) {
  await using t = await topics([{ partitions: 3 }]);
  const [topic] = t.names as [string];
  const producer = new Producer(base);
  const before = Date.now();
  // Bigger than a native fetch chunk: read through FFI between natively read ones, in order.
  const big = new Uint8Array(400_000).map((_, i) => i % 251);
  const reports = await Promise.all([
    producer.send({ topic, key: "k1", value: "v1", headers: { "content-type": "text/plain", empty: "", ünï: "çødé ✓" } }),
    producer.send({ topic, key: new Uint8Array([0, 1, 2, 255]), value: new Uint8Array([9, 8, 7]), partition: 2 }),
    producer.send({ topic, value: null, key: "tombstone" }),
    producer.send({ topic, value: "", key: null }),
    producer.send({ topic, key: "big", value: big, partition: 1, headers: { h: "1" } }),
    ...Array.from({ length: 20 }, (_, i) => producer.send({ topic, key: `seq-${i}`, value: `${i}`, partition: 1 })),
  ]);
  const after = Date.now();
  await producer.close();
  expect(reports[1]!.partition).toBe(2);
  for (const r of reports) expect(r.topic).toBe(topic);

  const c = consumer({}, { native });
  expect(c.fetchPath).toBe(native ? "native" : "ffi");
  c.subscribe([topic]);
  const got = await take(c, 25);
  await c.close();

  const one = got.filter((m) => m.partition === 1);
  expect(one.map((m) => m.offset)).toEqual(one.map((_, i) => one[0]!.offset + i));
  const m5 = one.find((m) => str(m.key) === "big")!;
  expect(Buffer.from(m5.value!).equals(Buffer.from(big))).toBe(true);
  expect(m5.headers).toEqual({ h: "1" });
  expect(one.filter((m) => str(m.key)?.startsWith("seq-")).map((m) => str(m.value))).toEqual(Array.from({ length: 20 }, (_, i) => `${i}`));

  const byKey = new Map(got.map((m) => [m.key === null ? "(null)" : Buffer.from(m.key).toString("hex"), m]));
  const m1 = byKey.get(Buffer.from("k1").toString("hex"))!;
  expect(str(m1.value)).toBe("v1");
  expect(m1.headers).toEqual({ "content-type": "text/plain", empty: "", ünï: "çødé ✓" });
  expect([m1.partition, m1.offset]).toEqual([reports[0]!.partition, reports[0]!.offset]);
  expect(m1.topic).toBe(topic);
  expect(m1.timestamp).toBeGreaterThanOrEqual(before);
  expect(m1.timestamp).toBeLessThanOrEqual(after);

  const m2 = byKey.get("000102ff")!;
  expect([...m2.value!]).toEqual([9, 8, 7]);
  expect(m2.partition).toBe(2);
  expect(m2.offset).toBe(reports[1]!.offset);
  expect(m2.headers).toEqual({});

  const m3 = byKey.get(Buffer.from("tombstone").toString("hex"))!;
  expect(m3.value).toBeNull();
  const m4 = byKey.get("(null)")!;
  expect(m4.value).not.toBeNull();
  expect(m4.value!.length).toBe(0);
  expect([m4.partition, m4.offset]).toEqual([reports[3]!.partition, reports[3]!.offset]);
}

describe("producer and consumer", () => {
  test.each([
    ["native fetch loop, compiled by TinyCC", () => loadNative()],
    ["plain FFI", () => false as const],
  ])("round trip (%s): value, key, headers, timestamp, partition and offset", (_name, native) => roundTrip(native()));

  test.skipIf(!HAVE_GCC)("round trip (native fetch loop from native.c compiled by gcc -O2, as in the image)", () =>
    roundTrip(loadNative(nativeSharedObject())),
  );

  test.each([
    ["native fetch loop", true],
    ["plain FFI", false],
  ] as const)("a subscribed topic that does not exist is reported to onError with librdkafka's text (%s)", async (_name, native) => {
    const errors: KafkaError[] = [];
    const c = consumer({}, { native, onError: (e) => void errors.push(e) });
    const missing = `kitsune-int-missing-${process.pid}-${++seq}`;
    c.subscribe([missing]);
    const reading = take(c, 1, 15_000).catch(() => []);
    await until(() => errors.length > 0, "the consumer error", 15_000);
    await c.close();
    expect(await reading).toEqual([]);
    expect(errors[0]!.codeName).toBe("UNKNOWN_TOPIC_OR_PART");
    expect(errors[0]!.message).toContain(missing);
  });

  test("sendAll: one report per message, in order, across topics; the first failure rejects it; [] is []", async () => {
    await using t = await topics([{ partitions: 3 }, { partitions: 1, config: { "max.message.bytes": "1000" } }]);
    const [a, small] = t.names as [string, string];
    const producer = new Producer(base);
    try {
      expect(await producer.sendAll([])).toEqual([]);
      const messages = Array.from({ length: 50 }, (_, i) => ({ topic: i % 2 ? small : a, key: `k${i}`, value: `v${i}`, partition: i % 2 ? 0 : i % 3 }));
      const reports = await producer.sendAll(messages);
      expect(reports.map((r) => [r.topic, r.partition])).toEqual(messages.map((m) => [m.topic, m.partition]));
      const offsets = (topic: string, partition: number) => reports.filter((r) => r.topic === topic && r.partition === partition).map((r) => r.offset);
      expect(offsets(small, 0)).toEqual(Array.from({ length: 25 }, (_, i) => offsets(small, 0)[0]! + i));

      // librdkafka refuses the middle one (over the producer's message.max.bytes): the call rejects
      // with its error, and the others are still delivered.
      const strict = new Producer({ ...base, "message.max.bytes": 10_000 });
      const mixed = [{ topic: a, partition: 0, value: "before" }, { topic: a, partition: 0, value: "x".repeat(20_000) }, { topic: a, partition: 0, value: "after" }];
      const err = await strict.sendAll(mixed).then(
        () => undefined,
        (e: KafkaError) => e,
      );
      expect(err).toBeInstanceOf(KafkaError);
      expect(err!.codeName).toBe("MSG_SIZE_TOO_LARGE");
      await strict.close();
      const c = consumer();
      c.subscribe([a]);
      const got = await take(c, 27);
      await c.close();
      expect(got.filter((m) => m.partition === 0).map((m) => str(m.value)).slice(-2)).toEqual(["before", "after"]);
    } finally {
      await producer.close();
    }
  });

  test("per-key order: each key's messages arrive in order, from one partition", async () => {
    await using t = await topics([{ partitions: 6 }]);
    const [topic] = t.names as [string];
    const keys = ["alpha", "bravo", "charlie"];
    const perKey = 300;
    const producer = new Producer(base);
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < perKey; i++) for (const key of keys) sends.push(producer.send({ topic, key, value: `${key}:${i}` }));
    await Promise.all(sends);
    await producer.close();

    const c = consumer();
    c.subscribe([topic]);
    const got = await take(c, keys.length * perKey);
    await c.close();
    for (const key of keys) {
      const mine = got.filter((m) => str(m.key) === key);
      expect(mine.map((m) => Number(str(m.value)!.split(":")[1]))).toEqual(Array.from({ length: perKey }, (_, i) => i));
      expect(new Set(mine.map((m) => m.partition)).size).toBe(1);
      const offsets = mine.map((m) => m.offset);
      expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    }
  });

  test.each([
    ["native fetch loop: rebalances through its callback", true, "classic"],
    ["plain FFI: rebalances as events", false, "classic"],
    // KIP-848: the broker assigns, incrementally; Kafka 4 only.
    ...(KIP848 ? ([["KIP-848 group.protocol=consumer, native fetch loop", true, "consumer"]] as const) : []),
  ] as const)("two members share the partitions; when one leaves the other takes all and nothing is lost (%s)", async (_name, native, protocol) => {
    await using t = await topics([{ partitions: 6 }]);
    const [topic] = t.names as [string];
    const group = groupId();
    const producer = new Producer(base);
    const produce = (from: number, n: number) =>
      Promise.all(Array.from({ length: n }, (_, i) => producer.send({ topic, key: `k${from + i}`, value: String(from + i) })));
    await produce(0, 300);

    const gotA: Message[] = [];
    const gotB: Message[] = [];
    const config: KafkaConfig = { ...base, "group.id": group, "group.protocol": protocol };
    const a = new Consumer(config, { native });
    expect(a.fetchPath).toBe(native ? "native" : "ffi");
    a.subscribe([topic]);
    const runA = drainInto(a, gotA);
    await until(() => a.assignment().length === 6, "the first member to get all 6 partitions");

    const b = new Consumer(config, { native });
    b.subscribe([topic]);
    const runB = drainInto(b, gotB);
    await until(() => a.assignment().length > 0 && b.assignment().length > 0 && a.assignment().length + b.assignment().length === 6, "the two members to share the partitions");
    const key = (p: TopicPartition) => `${p.topic}/${p.partition}`;
    const shared = new Set([...a.assignment(), ...b.assignment()].map(key));
    expect(shared.size).toBe(6);
    expect(a.assignment().map(key).some((k) => b.assignment().map(key).includes(k))).toBe(false);

    await produce(300, 300);
    await until(() => new Set([...gotA, ...gotB].map((m) => str(m.value))).size === 600, "600 messages over both members");

    await b.close();
    await runB;
    await until(() => a.assignment().length === 6, "the remaining member to take over all partitions");
    await produce(600, 300);
    await producer.close();
    await until(() => new Set([...gotA, ...gotB].map((m) => str(m.value))).size === 900, "all 900 messages");
    await a.close();
    await runA;

    const seen = new Set([...gotA, ...gotB].map((m) => Number(str(m.value))));
    expect(seen.size).toBe(900);
    // After the hand-over, only the remaining member reads.
    const late = [...gotA, ...gotB].filter((m) => Number(str(m.value)) >= 600);
    expect(late.every((m) => gotA.includes(m))).toBe(true);
  }, 90_000);

  test("commit, close, and a new member of the group resumes at the next offset", async () => {
    await using t = await topics([{ partitions: 1 }]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    await Promise.all(Array.from({ length: 10 }, (_, i) => producer.send({ topic, value: `m${i}` })));
    await producer.close();
    const group = groupId();

    const first = new Consumer({ ...base, "group.id": group });
    first.subscribe([topic]);
    const got = await take(first, 10);
    expect(got.map((m) => m.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Processed only the first four.
    await first.commit(nextOffsets(got.slice(0, 4)));
    await first.close();

    const second = new Consumer({ ...base, "group.id": group });
    second.subscribe([topic]);
    const rest = await take(second, 6);
    await second.close();
    expect(rest.map((m) => m.offset)).toEqual([4, 5, 6, 7, 8, 9]);
    expect(rest.map((m) => str(m.value))).toEqual(["m4", "m5", "m6", "m7", "m8", "m9"]);
  });

  test("awaiting each commit while the buffer is full does not stall (commit results are not queued behind messages)", async () => {
    await using t = await topics([{ partitions: 2 }]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    await Promise.all(Array.from({ length: 3000 }, (_, i) => producer.send({ topic, value: String(i) })));
    await producer.close();
    const c = consumer({}, { maxBuffered: 50 });
    c.subscribe([topic]);
    const seen = new Set<string>();
    const run = (async () => {
      for await (const batch of c.batches({ maxMessages: 20, maxWaitMs: 0 })) {
        for (const m of batch) seen.add(str(m.value)!);
        await c.commit(nextOffsets(batch));
        if (seen.size === 3000) return;
      }
    })();
    const timer = setTimeout(() => void c.close(), 30_000);
    await run;
    clearTimeout(timer);
    await c.close();
    expect(seen.size).toBe(3000);
  });

  test("a full buffer the caller stops reading: after throttleHoldMs the queue is served again, so a rebalance completes", async () => {
    await using t = await topics([{ partitions: 2 }]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    await Promise.all(Array.from({ length: 2000 }, (_, i) => producer.send({ topic, value: String(i), partition: i % 2 })));
    await producer.close();
    const group = groupId();
    const a = new Consumer({ ...base, "group.id": group }, { maxBuffered: 20, throttleHoldMs: 300 });
    a.subscribe([topic]);
    const it = a.batches({ maxMessages: 10, maxWaitMs: 0 });
    expect((await it.next()).done).toBe(false);
    // `a` reads no more; a second member joins, which needs `a` to serve its revoke event.
    const b = new Consumer({ ...base, "group.id": group });
    b.subscribe([topic]);
    const gotB: Message[] = [];
    const runB = drainInto(b, gotB);
    try {
      await until(() => b.assignment().length === 1 && a.assignment().length === 1, "the two members to share the partitions", 20_000);
      await until(() => gotB.length > 0, "the second member to read its partition", 20_000);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await runB;
    }
  });

  test("pause holds a partition back until resume; seek moves the position", async () => {
    await using t = await topics([{ partitions: 2 }]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    const produce = (partition: number, from: number, n: number) =>
      Promise.all(Array.from({ length: n }, (_, i) => producer.send({ topic, partition, value: `p${partition}-${from + i}` })));
    await produce(0, 0, 5);
    await produce(1, 0, 5);

    const c = consumer();
    c.subscribe([topic]);
    const got: Message[] = [];
    const run = drainInto(c, got);
    await until(() => got.length === 10, "the first 10 messages");

    const p0 = { topic, partition: 0 };
    c.pause([p0]);
    expect(c.pausedCount).toBe(1);
    await produce(0, 5, 5);
    await produce(1, 5, 5);
    await until(() => got.filter((m) => m.partition === 1).length === 10, "partition 1 to go on while 0 is paused");
    // One more round on partition 1, so fetches have certainly gone on after partition 0's new
    // messages were in its log: nothing of partition 0 arrived meanwhile.
    await produce(1, 10, 5);
    await until(() => got.filter((m) => m.partition === 1).length === 15, "partition 1's next round");
    expect(got.filter((m) => m.partition === 0).length).toBe(5);

    c.resume([p0]);
    await until(() => got.filter((m) => m.partition === 0).length === 10, "partition 0 after resume");
    expect(got.filter((m) => m.partition === 0).map((m) => m.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    c.seek([{ topic, partition: 1, offset: 3 }]);
    await until(() => got.filter((m) => m.partition === 1).length === 15 + 12, "partition 1 again from offset 3");
    expect(got.filter((m) => m.partition === 1).slice(15).map((m) => m.offset)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);

    await producer.close();
    await c.close();
    await run;
  });

  test("pause also holds back messages already fetched but not handed out", async () => {
    await using t = await topics([{ partitions: 2 }]);
    const [topic] = t.names as [string];
    const c = consumer({ "statistics.interval.ms": 100 });
    c.subscribe([topic]);
    await until(() => c.assignment().length === 2, "the assignment");
    const p0 = { topic, partition: 0 };
    const producer = new Producer(base);
    await Promise.all(Array.from({ length: 20 }, (_, i) => producer.send({ topic, partition: 0, value: String(i) })));
    // librdkafka fetches without being asked; its statistics say when all 20 are in (next_offset).
    await until(() => (c.stats?.topics?.[topic]?.partitions?.["0"]?.next_offset ?? 0) >= 20, "librdkafka to fetch partition 0's 20 messages");
    c.pause([p0]);

    // Messages sent to the other partition after the pause come out; had partition 0's fetched
    // messages not been held back, they would have come out first (they were queued earlier).
    const got: Message[] = [];
    const run = drainInto(c, got);
    await Promise.all(Array.from({ length: 5 }, (_, i) => producer.send({ topic, partition: 1, value: `p1-${i}` })));
    await producer.close();
    await until(() => got.filter((m) => m.partition === 1).length === 5, "partition 1's messages while partition 0 is paused");
    expect(got.filter((m) => m.partition === 0)).toEqual([]);
    c.resume([p0]);
    await until(() => got.filter((m) => m.partition === 0).length === 20, "partition 0's 20 messages after resume");
    expect(got.filter((m) => m.partition === 0).map((m) => Number(str(m.value)))).toEqual(Array.from({ length: 20 }, (_, i) => i));
    await c.close();
    await run;
  });
});

describe("transactions", () => {
  test("a committed sendAll over two topics shows both messages", async () => {
    await using t = await topics([{ partitions: 1 }, { partitions: 1 }]);
    const [one, two] = t.names as [string, string];
    const producer = new TransactionalProducer(base);
    await producer.init();
    const reports = await producer.sendAll([
      { topic: one, key: "id-1", value: "event" },
      { topic: two, key: "id-1", value: "log" },
    ]);
    await producer.close();
    expect(reports.map((r) => r.topic)).toEqual([one, two]);

    const c = consumer();
    c.subscribe([one, two]);
    const got = await take(c, 2);
    await c.close();
    expect(got.map((m) => [m.topic, str(m.value), m.offset]).sort()).toEqual(
      [
        [one, "event", reports[0]!.offset],
        [two, "log", reports[1]!.offset],
      ].sort(),
    );
  });

  test("an aborted transaction is never seen by a read_committed consumer", async () => {
    // The second topic takes messages of at most 1000 bytes: a bigger one fails its transaction.
    await using t = await topics([{ partitions: 1 }, { partitions: 1, config: { "max.message.bytes": "1000" } }]);
    const [topic, small] = t.names as [string, string];
    // NOTE: a local queue of one message makes "aborted-1" certainly reach the log before the
    // big message is even handed to librdkafka (it waits for room until aborted-1's delivery).
    const producer = new TransactionalProducer({ ...base, "queue.buffering.max.messages": 1 }, { queueFullTimeoutMs: 60_000 });
    await producer.init();
    await producer.sendAll([{ topic, value: "committed-1" }]);

    const failed = await producer
      .sendAll([
        { topic, value: "aborted-1" },
        { topic: small, value: "x".repeat(5000) },
      ])
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(failed).toBeInstanceOf(KafkaError);
    expect((failed as KafkaError).codeName).toBe("MSG_SIZE_TOO_LARGE");
    expect(producer.aborted).toBeGreaterThanOrEqual(1);

    // The producer goes on after an abort.
    await producer.sendAll([{ topic, value: "committed-2" }]);
    await producer.sendAll([{ topic, value: "marker" }]);
    await producer.close();

    // "aborted-1" was written to the log, then aborted: offsets 0–7 are committed-1, its commit
    // marker, aborted-1, its abort marker, committed-2, marker, marker, marker (without aborted-1: 7).
    // The coordinator writes markers after EndTxn has answered: wait for them.
    await until(() => admin.watermarks(topic, 0).high >= 8, "the transaction markers");
    expect(admin.watermarks(topic, 0).high).toBe(8);

    const got = await readUntilMarker(topic);
    expect(got.map((m) => str(m.value))).toEqual(["committed-1", "committed-2", "marker"]);
  });

  // A message librdkafka refuses at once (here: larger than the producer's message.max.bytes)
  // rejects its send before the commit: the transaction must abort, not commit the others.
  test("both-or-neither also when librdkafka refuses one message locally", async () => {
    await using t = await topics([{ partitions: 1 }]);
    const [topic] = t.names as [string];
    const producer = new TransactionalProducer(base);
    await producer.init();
    const failed = await producer.sendAll([{ topic, value: "first" }, { topic, value: "x".repeat(2_000_000) }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failed).toBeInstanceOf(KafkaError);
    await producer.sendAll([{ topic, value: "marker" }]);
    await producer.close();
    const got = await readUntilMarker(topic);
    expect(got.map((m) => str(m.value))).toEqual(["marker"]);
  });
});

describe("lifecycle", () => {
  test("producer close() is idempotent; sends after it reject", async () => {
    await using t = await topics([{}]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    await producer.send({ topic, value: "one" });
    const c1 = producer.close();
    const c2 = producer.close();
    await Promise.all([c1, c2]);
    await producer.close();
    const err = await producer.send({ topic, value: "late" }).catch((e) => e);
    expect(err).toBeInstanceOf(KafkaError);
    expect(err.codeName).toBe("_DESTROY");
  });

  test("close() with sends in flight settles every one of them; nothing crashes", async () => {
    await using t = await topics([{ partitions: 3 }]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    const results = Array.from({ length: 2000 }, (_, i) =>
      producer.send({ topic, value: `v${i}` }).then(
        () => "ok" as const,
        (e: unknown) => e,
      ),
    );
    await producer.close(0);
    const settled = await Promise.all(results);
    const failures = settled.filter((r) => r !== "ok");
    for (const f of failures) {
      expect(f).toBeInstanceOf(KafkaError);
      expect((f as KafkaError).codeName).toBe("_DESTROY");
    }
    expect(producer.inFlight).toBe(0);
  });

  test("consumer close() while iterating ends the iterator; close() is idempotent", async () => {
    await using t = await topics([{}]);
    const [topic] = t.names as [string];
    const revoked: TopicPartition[][] = [];
    const c = consumer({}, { onRevoke: (parts) => void revoked.push(parts) });
    c.subscribe([topic]);
    await until(() => c.assignment().length === 1, "the assignment");
    let ended = false;
    let batches = 0;
    const run = (async () => {
      for await (const _ of c.batches()) batches++;
      ended = true;
    })();
    // Close while the iterator is certainly inside its loop: after its first batch.
    const producer = new Producer(base);
    await producer.send({ topic, value: "one" });
    await producer.close();
    await until(() => batches === 1, "the iterator's first batch");
    await Promise.all([c.close(), c.close()]);
    await run;
    expect(ended).toBe(true);
    // Leaving the group revoked the partition through the caller's hook.
    expect(revoked.flat()).toEqual([{ topic, partition: 0 }]);
    expect(await c.commit([{ topic, partition: 0, offset: 1 }]).catch((e) => e.codeName)).toBe("_DESTROY");
    await c.close();
  });

  test("consumer close() completes with a full buffer", async () => {
    await using t = await topics([{}]);
    const [topic] = t.names as [string];
    const producer = new Producer(base);
    await Promise.all(Array.from({ length: 500 }, (_, i) => producer.send({ topic, value: String(i) })));
    await producer.close();
    const revoked: TopicPartition[][] = [];
    const c = consumer({}, { maxBuffered: 10, onRevoke: (parts) => void revoked.push(parts) });
    c.subscribe([topic]);
    const first = await take(c, 1);
    expect(first.length).toBeGreaterThan(0);
    // Fetched messages wait in the buffer and behind it; close must still leave the group.
    await c.close(20_000);
    expect(revoked.flat()).toEqual([{ topic, partition: 0 }]);
  });

  test("a throwing onAssign hook is reported, and the consumer still reads and closes", async () => {
    await using t = await topics([{}]);
    const [topic] = t.names as [string];
    const errors: KafkaError[] = [];
    const revoked: TopicPartition[][] = [];
    const c = consumer(
      {},
      {
        onAssign: () => {
          throw new Error("boom");
        },
        onRevoke: (parts) => void revoked.push(parts),
        onError: (e) => void errors.push(e),
      },
    );
    c.subscribe([topic]);
    const producer = new Producer(base);
    await producer.send({ topic, value: "v" });
    await producer.close();
    expect((await take(c, 1)).map((m) => str(m.value))).toEqual(["v"]);
    await c.close();
    expect(errors.some((e) => e.message.includes("onAssign failed: boom"))).toBe(true);
    expect(revoked.flat()).toEqual([{ topic, partition: 0 }]);
  });

  test("createTopics: an existing topic is not an error", async () => {
    await using t = await topics([{ partitions: 2 }]);
    const [topic] = t.names as [string];
    const again = await admin.createTopics([{ name: topic, partitions: 2 }]);
    expect(again).toEqual({ created: [], existing: [topic] });
    // NOTE: the broker's metadata can lag a moment behind the controller that created the topic.
    const listed = () => admin.metadata().topics.find((x) => x.name === topic);
    await until(() => listed() !== undefined, "the topic in the broker's metadata", 10_000);
    expect(listed()?.partitions.map((p) => p.id)).toEqual([0, 1]);
  });
});
