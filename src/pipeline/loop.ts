/**
 * @module pipeline/loop
 * The one consume loop of both workers. It polls a `MessageSource`, hands each batch to the
 * role's handler, publishes what the handler asks for, and commits the batch's offsets — the
 * publishing and committing in the background while the next batch is handled. A crash anywhere
 * in between reads the batch again (at least once; the handlers make a repeat harmless).
 *
 * What it owns, so the roles do not:
 * - the batch in flight, and the overlap: a handler that calls `sent` lets the next batch be
 *   fetched and prepared while it still works (the db-worker, once PostgreSQL has the statements);
 *   one that never calls it gets its batches one at a time;
 * - pause/resume while a dependency is down (`pause()`): every assigned partition, and those
 *   assigned meanwhile, until `resume()`;
 * - revocation: the batch in flight is finished (or given up after `REVOKE_WAIT_MS`, at once
 *   while paused) and its offsets committed before the partitions go; what the source still hands
 *   out of them is left to their next owner;
 * - seek-back: a batch that failed is read again, with the one before it (when that one was not
 *   committed) and those fetched behind it, on the partitions this member keeps;
 * - commit with retry while the group rebalances.
 *
 * @example
 * const loop = startLoop({
 *   source: (hooks) => new Consumer({ ...kafka, "group.id": group }, hooks),
 *   handler: { prepare: (messages) => messages, handle: async (messages, signal) => ({ publish: [] }) },
 *   batch: { maxMessages: 1000, maxWaitMs: 50 }, publisher: producer, logger, name: "my-worker",
 * });
 * await loop.stop();
 */
import { abortableSleep, backoffDelay } from "../backoff.ts";
import { KafkaError } from "../kafka/errors.ts";
import { nextOffsets, tpKey } from "../kafka/offsets.ts";
import type { BatchOptions, Message, MessageSink, MessageSource, OutgoingMessage, RebalanceHooks, TopicPartitionOffset } from "../kafka/types.ts";
import type { Logger } from "../logger.ts";
import { settleWithin } from "../timeout.ts";

/** How long a rebalance (or shutdown) waits for the batch in flight before giving it up. */
export const REVOKE_WAIT_MS = 5000;
/** Commit errors while the group rebalances; the commit succeeds once this member has rejoined. */
const REBALANCING = new Set(["ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID", "_STATE"]);
const COMMIT_ATTEMPTS = 10;
const COMMIT_BACKOFF = { initialMs: 50, maxMs: 1000 };
/** Pause before a batch that failed for another reason (publishing, committing, a bug) comes again. */
const REDELIVERY_BACKOFF = { initialMs: 200, maxMs: 5000 };

/** What a handled batch asks of the loop. */
export interface Handled {
  /** On the broker before the batch's offsets are committed (results, dead letters). */
  publish: OutgoingMessage[];
  /** Called once the offsets are committed (metrics). */
  committed?(): void;
}

export interface BatchHandler<P> {
  /** Runs as soon as a batch is fetched, possibly while the one before is in flight: no I/O. */
  prepare(messages: Message[]): P;
  /**
   * Works through a prepared batch. `sent`: the next batch may be fetched and prepared now.
   * `signal` aborts when the batch is given up (revocation, shutdown). Rejecting has the batch
   * read again.
   */
  handle(prepared: P, signal: AbortSignal, sent: () => void): Promise<Handled>;
}

export interface LoopOptions<P> {
  /** Opens the source with the loop's rebalance hooks (the role adds its own options). */
  source(hooks: RebalanceHooks): MessageSource;
  handler: BatchHandler<P>;
  batch: BatchOptions;
  /** Where `Handled.publish` goes. */
  publisher: MessageSink;
  logger: Logger;
  /** The role, for log lines. */
  name: string;
  /** After publishing, before committing (a test hook may hold the batch there). */
  beforeCommit?(batch: Message[]): Promise<void>;
  /** A batch failed as a whole for another reason than its abort; it is read again. */
  onFailed?(err: unknown): void;
  /** The number of paused partitions changed. */
  onPausedCount?(count: number): void;
}

export interface Loop {
  readonly source: MessageSource;
  /** Pauses every assigned partition, and those assigned later, until `resume`; false if already paused. */
  pause(): boolean;
  /** false if not paused. */
  resume(): boolean;
  readonly paused: boolean;
  /** Leaves the group (the batch in flight finishes or is given up), then ends. Idempotent. */
  stop(): Promise<void>;
}

/**
 * A batch started. `sent` resolves once the next batch may be fetched (or it is handled, or
 * failed), `applied` once the next one may start (it rejects if this one failed), `done` once it
 * is handed off.
 */
interface Started {
  batch: Message[];
  /** The batch being published and committed when this one started. */
  previous: Message[] | undefined;
  partitions: Set<string>;
  abort: AbortController;
  sent: Promise<void>;
  applied: Promise<void>;
  done: Promise<void>;
}

export function startLoop<P>(options: LoopOptions<P>): Loop {
  const { handler, publisher, logger, name } = options;
  const abort = new AbortController();
  let paused = false;
  let failures = 0;
  /** The batch started last, until it is handed off. */
  let inFlight: Started | undefined;
  /**
   * The last handled batch, its messages being published and its offsets committed. NOTE: this runs
   * while the next batch is handled; the next batch is handed off only once this one is committed.
   */
  let publishing: { batch: Message[]; done: Promise<void> } | undefined;
  /**
   * Partitions being handed to another member. NOTE: the source may still hand out their messages
   * (fetched while onRevoke runs); handled here, they would be committed after the partitions moved,
   * and the next owner would handle them again as duplicates. They are left to the next owner.
   */
  const revoking = new Set<string>();
  /** Partitions taken from this member without a hand-over (session lost): commits for them are refused. */
  const lost = new Set<string>();

  const source = options.source({
    onAssign: (parts) => {
      for (const p of parts) {
        revoking.delete(tpKey(p));
        lost.delete(tpKey(p));
      }
      // Partitions assigned while a dependency is down wait with the others.
      if (paused) {
        source.pause(parts);
        options.onPausedCount?.(source.pausedCount);
      }
    },
    // The batches in flight are committed before their partitions go to another member.
    onRevoke: async (parts, info) => {
      for (const p of parts) {
        revoking.add(tpKey(p));
        if (info.lost) lost.add(tpKey(p));
      }
      const current = inFlight;
      const touched = current !== undefined && parts.some((p) => current.partitions.has(tpKey(p)));
      // While paused there is nothing to wait for: a batch on these partitions is given up at once.
      const timer = touched ? setTimeout(() => current.abort.abort(new Error("partitions revoked")), paused ? 0 : REVOKE_WAIT_MS) : undefined;
      const settled = async () => {
        if (touched) await current.done.catch(() => {});
        await publishing?.done.catch(() => {});
      };
      await settleWithin(settled(), REVOKE_WAIT_MS * 2);
      clearTimeout(timer);
    },
  });

  /** Seeks each partition of `batch` this member keeps back to its first message there. */
  const seekBack = (batch: Message[]) => {
    const ours = new Set(source.assignment().map(tpKey));
    const first = new Map<string, TopicPartitionOffset>();
    for (const m of batch) {
      const k = tpKey(m);
      if (ours.has(k) && !revoking.has(k) && !first.has(k)) first.set(k, { topic: m.topic, partition: m.partition, offset: m.offset });
    }
    if (first.size === 0) return;
    try {
      source.seek([...first.values()]);
    } catch (err) {
      logger.error({ err }, `${name}: cannot seek back to a batch that failed; it is read again after a restart`);
    }
  };

  /**
   * Commits offsets, retrying while the group rebalances (the coordinator refuses commits of the old
   * generation meanwhile): a refused commit would otherwise send the batch round again, as
   * duplicates. Partitions no longer ours (or lost) are left out: their next owner starts where we
   * last committed.
   */
  const commit = async (offsets: TopicPartitionOffset[]) => {
    for (let attempt = 0; ; attempt++) {
      const ours = new Set(source.assignment().map(tpKey));
      const mine = offsets.filter((o) => ours.has(tpKey(o)) && !lost.has(tpKey(o)));
      try {
        return await source.commit(mine);
      } catch (err) {
        const again = err instanceof KafkaError && (err.retriable || REBALANCING.has(err.codeName));
        if (!again || attempt >= COMMIT_ATTEMPTS || abort.signal.aborted) throw err;
        logger.debug({ err: err.message, attempt }, "commit refused; retrying");
        await Bun.sleep(backoffDelay(attempt, COMMIT_BACKOFF));
      }
    }
  };

  /** Publishes what a batch asked for, then commits its offsets; in the background. */
  const handOff = (batch: Message[], handled: Handled) => {
    const done = (async () => {
      // NOTE: after the loop has started the next batch, so its handler does not wait for this.
      await new Promise((resolve) => setImmediate(resolve));
      // Results and dead letters must be on the broker before the offsets move past them.
      if (handled.publish.length) await publisher.sendAll(handled.publish);
      await options.beforeCommit?.(batch);
      await commit(nextOffsets(batch));
      handled.committed?.();
    })();
    publishing = { batch, done };
    done.catch((err) => {
      if (abort.signal.aborted) return;
      // At once, not only when the next batch comes: the stream may be idle.
      logger.error({ err }, `${name}: publishing or committing a batch failed; it will be redelivered`);
      seekBack(batch);
    });
  };

  /** Handles a batch, then hands it off. `applied`: the next batch may start. */
  const processBatch = async (prepared: P, batch: Message[], signal: AbortSignal, sent: () => void, applied: () => void) => {
    const handled = await handler.handle(prepared, signal, sent);
    try {
      await publishing?.done;
    } catch (err) {
      // Nothing after a batch that was not committed may be committed: both come again. This
      // batch's results are true all the same, and would otherwise never be published.
      if (handled.publish.length) await publisher.sendAll(handled.publish).catch(() => {});
      throw new Error("the batch before was not committed", { cause: err });
    }
    handOff(batch, handled);
    applied();
  };

  const startBatch = (prepared: P, batch: Message[]): Started => {
    const batchAbort = new AbortController();
    const onStop = () => batchAbort.abort(abort.signal.reason);
    abort.signal.addEventListener("abort", onStop, { once: true });
    const sent = Promise.withResolvers<void>();
    const applied = Promise.withResolvers<void>();
    const previous = publishing?.batch;
    const done = processBatch(prepared, batch, batchAbort.signal, sent.resolve, applied.resolve);
    const partitions = new Set<string>();
    let last: Message | undefined;
    for (const m of batch) {
      // A partition's messages come in runs: one key per run.
      if (last?.partition !== m.partition || last.topic !== m.topic) partitions.add(tpKey(m));
      last = m;
    }
    const started: Started = { batch, previous, partitions, abort: batchAbort, sent: sent.promise, applied: applied.promise, done };
    // A failure before `applied` fails it too; after, rejecting it does nothing.
    done.catch(applied.reject);
    // At once, not only when the next batch comes (the stream may be idle); `awaitApplied` seeks
    // again to cover what was fetched behind it.
    done.catch(() => {
      if (!abort.signal.aborted) seekBack([...(previous ?? []), ...batch]);
    });
    void done
      .catch(() => {})
      .finally(() => {
        sent.resolve();
        abort.signal.removeEventListener("abort", onStop);
        if (inFlight === started) inFlight = undefined;
      });
    inFlight = started;
    return started;
  };

  /**
   * Waits until batch `s` is handled. When it failed, it is sought back to come again, with the
   * messages fetched after it (`held`, not started), and the next try waits a little: false.
   */
  const awaitApplied = async (s: Started, held: Message[] = []): Promise<boolean> => {
    try {
      await s.applied;
      failures = 0;
      return true;
    } catch (err) {
      // Stopping: nothing more is committed, and the next start begins at the last commit.
      if (abort.signal.aborted) return false;
      // NOTE: without a commit the same messages come again only after a rebalance or restart;
      // seek back so this member retries them itself. A batch cut short by a revocation comes
      // again on the partitions we keep.
      seekBack([...(s.previous ?? []), ...s.batch, ...held]);
      if (s.abort.signal.aborted) {
        logger.warn({ err }, `${name}: batch cut short by a rebalance; what is still ours will be redelivered`);
        return false;
      }
      logger.error({ err }, `${name}: batch failed; it will be redelivered`);
      options.onFailed?.(err);
      // After a pause, so a lasting failure does not spin.
      await abortableSleep(backoffDelay(failures++, REDELIVERY_BACKOFF), abort.signal).catch(() => {});
      return false;
    }
  };

  const loop = (async () => {
    /** The batch started last; the next one is fetched and prepared while it is handled. */
    let current: Started | undefined;
    for await (const fetched of source.batches(options.batch)) {
      if (abort.signal.aborted) break;
      let batch = fetched;
      let prepared = handler.prepare(fetched);
      if (current) {
        const ok = await awaitApplied(current, fetched);
        current = undefined;
        // It failed: this batch was sought back with it, and comes again.
        if (!ok || abort.signal.aborted) continue;
      }
      if (revoking.size > 0) {
        const kept = fetched.filter((m) => !revoking.has(tpKey(m)));
        if (kept.length < fetched.length) {
          batch = kept;
          prepared = handler.prepare(kept);
        }
      }
      if (batch.length === 0) continue;
      current = startBatch(prepared, batch);
      await Promise.race([current.sent, current.applied.catch(() => {})]);
    }
    if (current) await awaitApplied(current);
    await inFlight?.done.catch(() => {});
    await publishing?.done.catch(() => {});
  })();
  loop.catch((err) => logger.fatal({ err }, `${name} loop stopped`));

  let stopping: Promise<void> | undefined;
  return {
    source,
    get paused() {
      return paused;
    },
    pause() {
      if (paused) return false;
      paused = true;
      source.pause();
      options.onPausedCount?.(source.pausedCount);
      return true;
    },
    resume() {
      if (!paused) return false;
      paused = false;
      source.resume();
      options.onPausedCount?.(0);
      return true;
    },
    stop: () =>
      (stopping ??= (async () => {
        // The batch in flight may finish (the onRevoke wait is bounded); a wait for a dependency is cut short.
        if (paused) abort.abort(new Error("stopping"));
        await source.close();
        abort.abort(new Error("stopping"));
        await loop.catch(() => {});
      })()),
  };
}
