// The consume loop without a broker: a FakeSource (test/fake-source.ts), hand-built messages and
// handlers whose batches the test releases one by one.
import { afterEach, describe, expect, test } from "bun:test";
import { KafkaError } from "../kafka/errors.ts";
import type { DeliveryReport, Message, MessageSink, OutgoingMessage } from "../kafka/types.ts";
import { silentLogger } from "../logger.ts";
import { FakeSource, messages } from "../../test/fake-source.ts";
import { waitFor } from "../../test/wait.ts";
import { startLoop, type BatchHandler, type Handled, type Loop, type LoopOptions } from "./loop.ts";

const P0 = { topic: "t", partition: 0 };
const P1 = { topic: "t", partition: 1 };

class FakePublisher implements MessageSink {
  readonly sent: OutgoingMessage[][] = [];
  failures = 0;
  async sendAll(batch: OutgoingMessage[]): Promise<DeliveryReport[]> {
    if (this.failures > 0) {
      this.failures--;
      throw new Error("broker unavailable");
    }
    this.sent.push(batch);
    return batch.map((m) => ({ topic: m.topic, partition: 0, offset: 0 }));
  }
}

/** A handler whose every batch waits until the test calls `release` (or `fail`) for it. */
function gatedHandler(opts: { overlap?: boolean } = {}) {
  const started: { batch: Message[]; signal: AbortSignal; release(): void; fail(err: Error): void }[] = [];
  const handler: BatchHandler<Message[]> = {
    prepare: (batch) => batch,
    handle: (batch, signal, sent) => {
      if (opts.overlap) sent();
      const { promise, resolve, reject } = Promise.withResolvers<Handled>();
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      const publish = batch.map((m) => ({ topic: "out", value: `r${m.offset}` }));
      started.push({ batch, signal, release: () => resolve({ publish }), fail: reject });
      return promise;
    },
  };
  return { handler, started };
}

let running: Loop | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

function start(handler: BatchHandler<Message[]>, extra: Partial<LoopOptions<Message[]>> = {}) {
  let source!: FakeSource;
  const publisher = new FakePublisher();
  const failed: unknown[] = [];
  const loop = startLoop<Message[]>({
    name: "test",
    source: (hooks) => (source = new FakeSource(hooks)),
    handler,
    batch: { maxMessages: 10, maxWaitMs: 0 },
    publisher,
    logger: silentLogger,
    onFailed: (err) => failed.push(err),
    ...extra,
  });
  running = loop;
  return { loop, source, publisher, failed };
}

describe("consume loop", () => {
  test("publishes what the handler returns, then commits the batch's next offsets, in order", async () => {
    const { handler, started } = gatedHandler();
    const committed: number[] = [];
    const h: BatchHandler<Message[]> = {
      prepare: handler.prepare,
      handle: async (batch, signal, sent) => ({ ...(await handler.handle(batch, signal, sent)), committed: () => committed.push(batch.length) }),
    };
    const { source, publisher } = start(h);
    await source.assign([P0, P1]);
    source.feed([...messages(0, [5, 6]), ...messages(1, [9])]);
    await waitFor(() => started.length === 1, "the first batch");
    expect(publisher.sent).toEqual([]);
    expect(source.commits).toEqual([]);
    started[0]!.release();
    await waitFor(() => source.commits.length === 1, "the commit");
    expect(publisher.sent.map((b) => b.map((m) => m.value))).toEqual([["r5", "r6", "r9"]]);
    expect(source.commits[0]).toEqual([
      { topic: "t", partition: 0, offset: 7 },
      { topic: "t", partition: 1, offset: 10 },
    ]);
    expect(committed).toEqual([3]);
  });

  test("with `sent`, the next batch is prepared and started while the one before is published", async () => {
    const { handler, started } = gatedHandler({ overlap: true });
    const prepared: number[] = [];
    const { source } = start({ ...handler, prepare: (b) => (prepared.push(b[0]!.offset), b) });
    await source.assign([P0]);
    source.feed(messages(0, [0, 1]));
    source.feed(messages(0, [2, 3]));
    await waitFor(() => prepared.length === 2, "the second batch prepared while the first is in flight");
    expect(started).toHaveLength(1);
    started[0]!.release();
    await waitFor(() => started.length === 2, "the second batch started");
    started[1]!.release();
    await waitFor(() => source.commits.length === 2, "both commits");
    expect(source.commits.map((c) => c[0]!.offset)).toEqual([2, 4]);
  });

  test("without `sent`, one batch at a time", async () => {
    const { handler, started } = gatedHandler();
    const prepared: number[] = [];
    const { source } = start({ ...handler, prepare: (b) => (prepared.push(b[0]!.offset), b) });
    await source.assign([P0]);
    source.feed(messages(0, [0]));
    source.feed(messages(0, [1]));
    await waitFor(() => started.length === 1, "the first batch");
    await Bun.sleep(20);
    expect(prepared).toEqual([0]);
    started[0]!.release();
    await waitFor(() => started.length === 2, "the second batch");
    started[1]!.release();
  });

  test("a failed batch is sought back with what was fetched behind it, counted, and comes again", async () => {
    const { handler, started } = gatedHandler({ overlap: true });
    const { source, failed } = start(handler);
    await source.assign([P0, P1]);
    source.feed(messages(0, [10, 11]));
    source.feed(messages(1, [20]));
    await waitFor(() => started.length === 1, "the first batch");
    started[0]!.fail(new Error("bug"));
    await waitFor(() => failed.length === 1, "the failure counted");
    // At once for the failed batch, then again with the batch fetched behind it.
    await waitFor(() => source.seeks.some((s) => s.length === 2), "the seek with the held batch");
    expect(source.seeks.at(-1)).toEqual([
      { topic: "t", partition: 0, offset: 10 },
      { topic: "t", partition: 1, offset: 20 },
    ]);
    expect(source.commits).toEqual([]);
    source.feed(messages(0, [10, 11]));
    await waitFor(() => started.length === 2, "the batch again");
    expect(started[1]!.batch.map((m) => m.offset)).toEqual([10, 11]);
    started[1]!.release();
  });

  test("a commit refused while the group rebalances is retried; the batch is not read again", async () => {
    const { handler, started } = gatedHandler();
    const { source } = start(handler);
    await source.assign([P0]);
    source.commitFailures.push(new KafkaError(27, "rebalancing", { codeName: "REBALANCE_IN_PROGRESS", retriable: false }));
    source.commitFailures.push(new KafkaError(22, "old generation", { codeName: "ILLEGAL_GENERATION", retriable: false }));
    source.feed(messages(0, [3]));
    await waitFor(() => started.length === 1, "the batch");
    started[0]!.release();
    await waitFor(() => source.commits.length === 1, "the commit, third time lucky");
    expect(source.commits[0]).toEqual([{ topic: "t", partition: 0, offset: 4 }]);
    expect(source.seeks).toEqual([]);
  });

  test("a commit refused for good is not retried: the batch is sought back to come again", async () => {
    const { handler, started } = gatedHandler();
    const { source } = start(handler);
    await source.assign([P0]);
    source.commitFailures.push(new KafkaError(3, "unknown topic or partition", { codeName: "UNKNOWN_TOPIC_OR_PART", retriable: false }));
    source.feed(messages(0, [8, 9]));
    await waitFor(() => started.length === 1, "the batch");
    started[0]!.release();
    await waitFor(() => source.seeks.length === 1, "the seek back");
    expect(source.seeks[0]).toEqual([{ topic: "t", partition: 0, offset: 8 }]);
    expect(source.commits).toEqual([]);
  });

  test("a batch whose results cannot be published is not committed and is sought back; the next one fails with it", async () => {
    const { handler, started } = gatedHandler({ overlap: true });
    const { source, publisher } = start(handler);
    await source.assign([P0]);
    publisher.failures = 1;
    source.feed(messages(0, [0, 1]));
    await waitFor(() => started.length === 1, "the first batch");
    started[0]!.release();
    await waitFor(() => source.seeks.length >= 1, "the seek back");
    expect(source.seeks[0]).toEqual([{ topic: "t", partition: 0, offset: 0 }]);
    source.feed(messages(0, [2]));
    await waitFor(() => started.length === 2, "the next batch");
    started[1]!.release();
    // Its results are published all the same, but nothing is committed, and both come again.
    await waitFor(() => source.seeks.some((s) => s[0]!.offset === 0 && s.length === 1) && publisher.sent.length === 1, "the second seek");
    expect(publisher.sent[0]!.map((m) => m.value)).toEqual(["r2"]);
    expect(source.commits).toEqual([]);
  });

  test("pause() pauses every assigned partition and those assigned meanwhile; resume() all of them", async () => {
    const counts: number[] = [];
    const { handler } = gatedHandler();
    const { loop, source } = start(handler, { onPausedCount: (n) => counts.push(n) });
    await source.assign([P0]);
    expect(loop.pause()).toBe(true);
    expect(loop.pause()).toBe(false);
    expect(source.isPaused(P0)).toBe(true);
    await source.assign([P1]);
    expect(source.isPaused(P1)).toBe(true);
    expect(loop.resume()).toBe(true);
    expect(loop.resume()).toBe(false);
    expect(source.pausedCount).toBe(0);
    expect(counts).toEqual([1, 2, 0]);
  });

  test("on revocation the batch in flight finishes and is committed before the partitions go", async () => {
    const { handler, started } = gatedHandler();
    const { source } = start(handler);
    await source.assign([P0, P1]);
    source.feed(messages(0, [7]));
    await waitFor(() => started.length === 1, "the batch");
    let revoked = false;
    const revoking = source.revoke([P0]).then(() => (revoked = true));
    await Bun.sleep(20);
    expect(revoked).toBe(false);
    started[0]!.release();
    await revoking;
    expect(source.commits).toEqual([[{ topic: "t", partition: 0, offset: 8 }]]);
    expect(started[0]!.signal.aborted).toBe(false);
  });

  test("a revocation while paused gives the batch up at once: not committed, kept partitions sought back", async () => {
    const { handler, started } = gatedHandler();
    const { loop, source } = start(handler);
    await source.assign([P0, P1]);
    source.feed([...messages(0, [1]), ...messages(1, [2])]);
    await waitFor(() => started.length === 1, "the batch");
    loop.pause();
    await source.revoke([P0]);
    expect(started[0]!.signal.aborted).toBe(true);
    await waitFor(() => source.seeks.length >= 1, "the seek back");
    expect(source.seeks[0]).toEqual([{ topic: "t", partition: 1, offset: 2 }]);
    expect(source.commits).toEqual([]);
  });

  test("messages of partitions being revoked are left to their next owner", async () => {
    const { handler, started } = gatedHandler();
    const { source } = start(handler);
    await source.assign([P0, P1]);
    const revoking = source.revoke([P0]);
    source.feed([...messages(0, [1]), ...messages(1, [2])]);
    await waitFor(() => started.length === 1, "the batch");
    expect(started[0]!.batch.map((m) => m.partition)).toEqual([1]);
    started[0]!.release();
    await revoking;
  });

  test("a lost partition's offsets are not committed", async () => {
    const { handler, started } = gatedHandler();
    const { source } = start(handler);
    await source.assign([P0, P1]);
    source.feed([...messages(0, [1]), ...messages(1, [2])]);
    await waitFor(() => started.length === 1, "the batch");
    const losing = source.revoke([P0], true);
    started[0]!.release();
    await losing;
    await waitFor(() => source.commits.length === 1, "the commit");
    expect(source.commits[0]).toEqual([{ topic: "t", partition: 1, offset: 3 }]);
  });

  test("stop() lets the batch in flight finish and commit, then ends", async () => {
    const { handler, started } = gatedHandler();
    const { loop, source } = start(handler);
    await source.assign([P0]);
    source.feed(messages(0, [4]));
    await waitFor(() => started.length === 1, "the batch");
    const stopping = loop.stop();
    started[0]!.release();
    await stopping;
    expect(source.commits).toEqual([[{ topic: "t", partition: 0, offset: 5 }]]);
  });

  test("beforeCommit runs after publishing and can hold the commit", async () => {
    const { handler, started } = gatedHandler();
    const hold = Promise.withResolvers<void>();
    const { source, publisher } = start(handler, { beforeCommit: () => hold.promise });
    await source.assign([P0]);
    source.feed(messages(0, [0]));
    await waitFor(() => started.length === 1, "the batch");
    started[0]!.release();
    await waitFor(() => publisher.sent.length === 1, "the results published");
    await Bun.sleep(20);
    expect(source.commits).toEqual([]);
    hold.resolve();
    await waitFor(() => source.commits.length === 1, "the commit");
  });
});
