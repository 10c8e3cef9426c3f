/**
 * Fault injection with librdkafka's built-in mock cluster (no broker needed): brokers going down
 * and coming back, and errors pushed onto Produce requests.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
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
    const { cluster, producer } = setup({ "message.timeout.ms": 10_000 });
    await producer.send({ topic: "t", value: "warm-up" });
    cluster.pushRequestErrors(ApiKey.Produce, [NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT]);
    const report = await producer.send({ topic: "t", value: "v" });
    expect(report).toMatchObject({ topic: "t", partition: 0 });
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
