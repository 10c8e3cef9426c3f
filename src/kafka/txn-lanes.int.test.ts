/**
 * The transactional producer's lanes against the real broker: at light load a call that arrives
 * while a transaction commits starts at once on another lane; once calls queue up in numbers, only
 * one transaction runs at a time. Either way every call is committed whole.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { Admin, Consumer, TransactionalProducer, type KafkaConfig } from "./index.ts";

setDefaultTimeout(60_000);

const base: KafkaConfig = { "bootstrap.servers": process.env.KAFKA_BROKERS ?? "127.0.0.1:9092" };
let admin: Admin;
const topic = `kitsune-int-lanes-${process.pid}-${Date.now().toString(36)}`;

beforeAll(async () => {
  admin = new Admin(base);
  await admin.createTopics([{ name: topic, partitions: 3 }]);
});

afterAll(async () => {
  await admin.deleteTopics([topic]).catch(() => {});
  admin.close();
});

const unit = (i: number) => [
  { topic, key: `k${i}`, value: `a${i}` },
  { topic, key: `k${i}`, value: `b${i}` },
];

/** Resolves once `cond()` holds, checking after every turn of the event loop; throws after 30 s. */
async function until(cond: () => boolean): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${cond}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** Every value committed to the topic, read with read_committed until `count` arrived. */
async function committedValues(count: number): Promise<string[]> {
  const consumer = new Consumer({ ...base, "group.id": `${topic}-g`, "auto.offset.reset": "earliest", "isolation.level": "read_committed" });
  consumer.subscribe([topic]);
  const seen: string[] = [];
  const deadline = performance.now() + 45_000;
  try {
    for await (const batch of consumer.batches({ maxMessages: 500, maxWaitMs: 10 })) {
      for (const m of batch) seen.push(new TextDecoder().decode(m.value!));
      if (seen.length >= count || performance.now() > deadline) break;
    }
  } finally {
    await consumer.close();
  }
  return seen;
}

test("light load: a call arriving during a commit starts on another lane; heavy load: one transaction at a time; every call committed whole", async () => {
  const producer = new TransactionalProducer(base, { lanes: 3, overlapBelow: 16 });
  try {
    await producer.init();
    // Light load: nothing queued when the last transaction ended, so calls overlap.
    const first = producer.sendAll(unit(0));
    expect(producer.running).toBe(1);
    const second = producer.sendAll(unit(1));
    expect(producer.running).toBe(2);
    await Promise.all([first, second]);
    // A call settles just before its lane is marked free.
    await until(() => producer.running === 0);

    // Heavy load: 3 lanes busy and 40 calls waiting. The lanes end one by one; with that many
    // waiting, the 40 start as one group only once none is running, and a call arriving while
    // that group commits waits for it instead of starting beside it.
    const before = producer.committed;
    const calls = Array.from({ length: 43 }, (_, i) => producer.sendAll(unit(2 + i)));
    expect(producer.running).toBe(3);
    await until(() => producer.committed >= before + 3);
    // All three have ended and the 40 started together (they may even be done on a slow machine):
    // the late call waits for them instead of starting beside them, as it would at light load.
    const late = producer.sendAll(unit(45));
    expect(producer.running).toBeLessThanOrEqual(1);
    await Promise.all([...calls, late]);
    expect(producer.committed).toBe(before + 5);

    const values = await committedValues(2 * 46);
    for (let i = 0; i < 46; i++) {
      expect(values.filter((v) => v === `a${i}`).length).toBe(1);
      expect(values.filter((v) => v === `b${i}`).length).toBe(1);
    }
  } finally {
    await producer.close();
  }
});
