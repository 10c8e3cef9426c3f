/**
 * Fault injection with librdkafka's built-in mock cluster (no broker needed): brokers going down
 * and coming back, and errors pushed onto Produce requests.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { waitFor } from "../../test/wait.ts";
import { ApiKey, KafkaError, MockCluster, Producer } from "./index.ts";

setDefaultTimeout(60_000);

/** Kafka protocol error codes the tests inject. */
const NOT_LEADER_FOR_PARTITION = 6;
const REQUEST_TIMED_OUT = 7;
const MESSAGE_TOO_LARGE = 10;
const INVALID_RECORD = 87;

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function setup(config: Record<string, string | number> = {}) {
  const cluster = new MockCluster(1);
  cluster.createTopic("t", 1);
  const producer = new Producer({
    "bootstrap.servers": cluster.bootstrapServers,
    "message.timeout.ms": 1500,
    // Reconnect soon after the broker is back (the default backoff grows to 10 s).
    "reconnect.backoff.max.ms": 500,
    ...config,
  });
  cleanup.push(() => cluster.close(), () => producer.close(1000));
  return { cluster, producer };
}

const rejection = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e as KafkaError,
  );

describe("broker down", () => {
  test("send rejects with a retriable error after message.timeout.ms, and works again once the broker is back", async () => {
    const { cluster, producer } = setup();
    expect((await producer.send({ topic: "t", value: "before" })).offset).toBe(0);

    cluster.brokerDown(1);
    const err = await rejection(producer.send({ topic: "t", value: "while down" }));
    expect(err).toBeInstanceOf(KafkaError);
    expect(err.retriable).toBe(true);
    expect(err.fatal).toBe(false);
    expect(["_MSG_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN"]).toContain(err.codeName);

    cluster.brokerUp(1);
    // The caller's retry loop: bounded in time, not in attempts.
    const deadline = performance.now() + 30_000;
    let delivered;
    while (!delivered) {
      try {
        delivered = await producer.send({ topic: "t", value: "after" });
      } catch (e) {
        expect((e as KafkaError).retriable).toBe(true);
        if (performance.now() > deadline) throw e;
      }
    }
    expect(delivered.topic).toBe("t");
  });

  test("close() while every send waits for the broker rejects them all with _DESTROY", async () => {
    const { cluster, producer } = setup({ "message.timeout.ms": 30_000 });
    await producer.send({ topic: "t", value: "warm-up" });
    cluster.brokerDown(1);
    const sends = Array.from({ length: 100 }, (_, i) => rejection(producer.send({ topic: "t", value: String(i) })));
    await producer.close(0);
    const errors = await Promise.all(sends);
    expect(errors.every((e) => e instanceof KafkaError && e.codeName === "_DESTROY")).toBe(true);
    expect(producer.inFlight).toBe(0);
  });
});

describe("injected Produce errors", () => {
  test("retriable errors (NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT) are retried by librdkafka: the send succeeds", async () => {
    const { cluster, producer } = setup({ "message.timeout.ms": 10_000, "statistics.interval.ms": 100 });
    await producer.send({ topic: "t", value: "warm-up" });
    cluster.pushRequestErrors(ApiKey.Produce, [NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT]);
    const report = await producer.send({ topic: "t", value: "v" });
    expect(report).toMatchObject({ topic: "t", partition: 0 });
    // The injected errors were hit: the warm-up, two refused attempts and the accepted one are
    // four Produce requests (without the errors there would be two).
    const produceRequests = () =>
      Object.values<{ req?: { Produce?: number } }>(producer.stats?.brokers ?? {}).reduce((n, b) => n + (b.req?.Produce ?? 0), 0);
    await waitFor(() => produceRequests() >= 4, "statistics counting the retried Produce requests");
    expect(produceRequests()).toBe(4);
  });

  test.each([
    [MESSAGE_TOO_LARGE, "MSG_SIZE_TOO_LARGE"],
    [INVALID_RECORD, "INVALID_RECORD"],
  ])("a non-retriable error (%i) rejects the send with that code", async (code, name) => {
    const { cluster, producer } = setup({ "message.timeout.ms": 10_000 });
    await producer.send({ topic: "t", value: "warm-up" });
    cluster.pushRequestErrors(ApiKey.Produce, [code]);
    const err = await rejection(producer.send({ topic: "t", value: "v" }));
    expect(err).toBeInstanceOf(KafkaError);
    expect(err.code).toBe(code);
    expect(err.codeName).toBe(name);
    expect(err.retriable).toBe(false);
    // The producer is still usable afterwards.
    expect((await producer.send({ topic: "t", value: "next" })).topic).toBe("t");
  });
});

describe("a full local queue", () => {
  test("sends wait for room instead of failing, and keep their order, send() and sendAll() alike", async () => {
    const { cluster, producer } = setup({ "message.timeout.ms": 30_000, "queue.buffering.max.messages": 10, "statistics.interval.ms": 100 });
    await producer.send({ topic: "t", value: "warm-up" });
    cluster.brokerDown(1);
    const full = producer.stats?.ts ?? 0;
    // 40 messages for a queue of 10: most wait in the binding until the broker is back.
    const single = Array.from({ length: 15 }, (_, i) => producer.send({ topic: "t", value: `s${i}` }));
    const batch = producer.sendAll(Array.from({ length: 25 }, (_, i) => ({ topic: "t", value: `b${i}` })));
    // librdkafka's queue is full (its statistics say so); the other 30 wait in the binding, and
    // none has failed: without the wait they would have been rejected with _QUEUE_FULL by now.
    await waitFor(() => producer.stats?.msg_cnt === 10 && producer.stats.ts > full, "librdkafka's queue to be full");
    expect(producer.inFlight).toBe(40);
    cluster.brokerUp(1);
    const reports = [...(await Promise.all(single)), ...(await batch)];
    const offsets = reports.map((r) => r.offset);
    expect(offsets).toEqual(offsets.map((_, i) => offsets[0]! + i));
  });

  test("a send still without room after queueFullTimeoutMs rejects with _QUEUE_FULL; those inside librdkafka are not touched", async () => {
    const cluster = new MockCluster(1);
    cluster.createTopic("t", 1);
    const producer = new Producer(
      { "bootstrap.servers": cluster.bootstrapServers, "message.timeout.ms": 30_000, "queue.buffering.max.messages": 5 },
      { queueFullTimeoutMs: 200 },
    );
    cleanup.push(() => cluster.close(), () => producer.close(0));
    await producer.send({ topic: "t", value: "warm-up" });
    cluster.brokerDown(1);
    const settled = producer.sendAll(Array.from({ length: 5 }, (_, i) => ({ topic: "t", value: `in${i}` })));
    const late = Array.from({ length: 3 }, (_, i) => rejection(producer.send({ topic: "t", value: `late${i}` })));
    const errors = await Promise.all(late);
    expect(errors.map((e) => e.codeName)).toEqual(["_QUEUE_FULL", "_QUEUE_FULL", "_QUEUE_FULL"]);
    expect(producer.inFlight).toBe(5);
    cluster.brokerUp(1);
    expect((await settled).map((r) => r.partition)).toEqual([0, 0, 0, 0, 0]);
  });
});

describe("bad input", () => {
  test("a value that is neither bytes nor text rejects its own send with _INVALID_ARG; the sends around it are delivered", async () => {
    const { producer } = setup();
    const [before, bad, after, badBatch] = await Promise.allSettled([
      producer.send({ topic: "t", value: "before" }),
      producer.send({ topic: "t", value: 123 as unknown as string }),
      producer.send({ topic: "t", value: "after" }),
      producer.sendAll([{ topic: "t", value: "v", key: {} as unknown as string }]),
    ]);
    expect(before.status).toBe("fulfilled");
    expect(after.status).toBe("fulfilled");
    for (const r of [bad, badBatch]) {
      expect(r.status).toBe("rejected");
      const err = (r as PromiseRejectedResult).reason as KafkaError;
      expect(err.codeName).toBe("_INVALID_ARG");
      expect(err.message).toContain("must be a Uint8Array, a string or null");
    }
    expect(producer.inFlight).toBe(0);
  });
});
