/**
 * @module roles/db-worker
 * Turns `db-events` into committed rows. Per batch: decode, apply in one PostgreSQL transaction
 * (src/db/apply.ts: idempotency key, effect and result row commit together), publish each
 * `CommandResult` and dead letter, then commit the offsets — the publishing and committing while
 * the next batch is applied. A crash anywhere in between replays the batch, and the idempotency
 * keys make the replay a no-op for what was already committed.
 *
 * When PostgreSQL is unreachable the circuit breaker opens: the assigned partitions are paused,
 * PostgreSQL is probed with backoff, and the same batch is retried once it answers — nothing is
 * dead-lettered for an outage. It opens at once for a lost connection, and on the second failure
 * in a row for any other transient error (a login refused, too many connections, …): one deadlock
 * or serialization failure is retried without it.
 */
import postgres, { type Sql } from "postgres";
import { brokerCheck, ensureTopics, kafkaConfig, registerLag } from "../broker.ts";
import type { Config } from "../config.ts";
import type { CommandLookup } from "../contracts.ts";
import { applyBatch } from "../db/apply.ts";
import { applyDecoded, countOutcomes, decodeBatch, type BatchDeps, type BatchOutcome, type DecodedBatch } from "../db/batch.ts";
import { createDbMetrics } from "../db/metrics.ts";
import { abortableSleep, backoffDelay } from "../backoff.ts";
import { withTimeout } from "../timeout.ts";
import { isConnectionError, RetriableBatchError } from "../db/errors.ts";
import { migrate } from "../db/migrations.ts";
import { loadRegistry, verifyRegistry } from "../db/registry.ts";
import { Consumer, nextOffsets } from "../kafka/consumer.ts";
import { Producer } from "../kafka/producer.ts";
import { KafkaError } from "../kafka/errors.ts";
import type { Message, OutgoingMessage, TopicPartition, TopicPartitionOffset } from "../kafka/types.ts";
import type { Deps, Service } from "../service.ts";
import { resultSchema } from "../schema/publish.ts";
import { unwrap, type ValueSchema } from "../schema/wire.ts";

export const DB_BATCH = { maxMessages: 2000, maxWaitMs: 20 } as const;
const REVOKE_WAIT_MS = 5000;
const BACKOFF = { initialMs: 100, maxMs: 10_000 };
/** Commit errors while the group rebalances; the commit succeeds once this member has rejoined. */
const REBALANCING = new Set(["ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID", "_STATE"]);
const COMMIT_ATTEMPTS = 10;
const COMMIT_BACKOFF = { initialMs: 50, maxMs: 1000 };
/** Pause before a batch that failed for another reason (publishing, committing, a bug) comes again. */
const REDELIVERY_BACKOFF = { initialMs: 200, maxMs: 5000 };
/**
 * Test hook, not configuration: with this variable set to `1` the first batch whose results are
 * published never has its offsets committed — the worker logs `HELD_LOG` (with the batch's size)
 * and waits there for good. A test that kills the worker then knows the batch is applied in
 * PostgreSQL and will be delivered again (bench/chaos.ts, scenario 1). NOTE: read from the
 * environment here, not by src/config.ts, so that it stays out of the documented configuration.
 */
export const HOLD_BEFORE_COMMIT_ENV = "KITSUNE_TEST_HOLD_BEFORE_COMMIT";
export const HELD_LOG = "test hook: batch applied and its results published; holding it before its offset commit";

/**
 * Options of the worker's PostgreSQL pool. NOTE: `max_pipeline` well above postgres.js's default
 * of 100: a batch sends all its statements at once (src/db/event-pipeline.ts), and past the limit
 * postgres.js writes one query per socket write as answers come back, which halved the throughput.
 * postgres.js 3.4.9 reads the option (parseOptions) but its types and README leave it out.
 */
export const POOL_OPTIONS = { max: 4, connect_timeout: 5, idle_timeout: 60, max_pipeline: 4 * DB_BATCH.maxMessages } as const;

/** A PostgreSQL pool that can be replaced after a lost connection (see `RetriableBatchError`). */
function createPool(dsn: string): Sql {
  return postgres(dsn, { ...POOL_OPTIONS, onnotice: () => {} });
}

export async function start(config: Config, { logger, registry }: Deps): Promise<Service> {
  let sql = createPool(config.postgresDsn);
  let commands: CommandLookup;
  // A PostgreSQL that is restarting or drops connections is waited for (up to 30 s); a bad
  // migration or command file fails start-up at once.
  for (const started = Date.now(); ; ) {
    try {
      const { applied, current } = await migrate(sql, config.sqlDir);
      if (applied.length) logger.info({ applied: applied.map((m) => `${m.version}_${m.name}`), current }, "migrations applied");
      commands = await loadRegistry(config.sqlDir);
      await verifyRegistry(commands, sql);
      break;
    } catch (err) {
      void sql.end({ timeout: 0 }).catch(() => {});
      if (!isConnectionError(err) || Date.now() - started > 30_000) throw err;
      logger.warn({ err: (err as Error).message }, "PostgreSQL not answering at start-up; retrying");
      await Bun.sleep(1000);
      sql = createPool(config.postgresDsn);
    }
  }
  let resultValueSchema: ValueSchema | undefined;
  try {
    if (config.schemaRegistry) resultValueSchema = await resultSchema(config.schemaRegistry, config.topics);
    await ensureTopics(config, logger);
  } catch (err) {
    await sql.end({ timeout: 1 });
    throw err;
  }

  const kafka = kafkaConfig(config);
  const producer = new Producer(kafka);
  const group = config.kafka.groupId ?? "kitsune-db-worker";
  const metrics = createDbMetrics(registry);
  const abort = new AbortController();
  let holdBeforeCommit = process.env[HOLD_BEFORE_COMMIT_ENV] === "1";
  let breakerOpen = false;
  /** The batch started last, until it is handed off (see `startBatch`). */
  let inFlight: { done: Promise<void>; abort: AbortController } | undefined;
  /**
   * The last applied batch, its results being published and its offsets committed. NOTE: this runs
   * while the next batch is applied (it is mostly waiting for the broker, and took a fifth of each
   * batch's time); the next batch is published only once this one is committed.
   */
  let publishing: { batch: Message[]; done: Promise<void> } | undefined;
  /**
   * Partitions being handed to another member. NOTE: the binding may still hand out their messages
   * (fetched while onRevoke runs); applied here, they would be committed after the partitions moved,
   * and the next owner would apply them again as duplicates. They are left to the next owner.
   */
  const revoking = new Set<string>();
  /** Partitions taken from this member without a hand-over (session lost): commits for them are refused. */
  const lost = new Set<string>();

  const consumer = new Consumer(
    // The binding's cooperative-sticky assignment (or KIP-848's incremental one). A commit made
    // between the two phases of a cooperative rebalance no longer costs the whole assignment since
    // librdkafka 2.10 (#4059; the binding refuses older ones).
    { ...kafka, "group.id": group },
    {
      onAssign: (parts) => {
        for (const p of parts) {
          revoking.delete(partitionKey(p));
          lost.delete(partitionKey(p));
        }
      },
      // Offsets of the batches in flight are committed before their partitions go to another member.
      onRevoke: async (parts, info) => {
        for (const p of parts) {
          revoking.add(partitionKey(p));
          if (info.lost) lost.add(partitionKey(p));
        }
        const current = inFlight;
        const timer = setTimeout(() => current?.abort.abort(new Error("partitions revoked")), REVOKE_WAIT_MS);
        const settled = async () => {
          await current?.done.catch(() => {});
          await publishing?.done.catch(() => {});
        };
        await Promise.race([settled(), Bun.sleep(REVOKE_WAIT_MS * 2)]);
        clearTimeout(timer);
      },
      onError: (err) => logger.warn({ err: err.message, code: err.codeName }, "kafka consumer"),
    },
  );
  consumer.subscribe([config.topics.events]);
  const unregisterLag = registerLag(registry, group, consumer);

  const batchDeps: BatchDeps = {
    apply: (events, sent) => applyBatch(sql, commands, events, sent),
    topics: { results: config.topics.results, dlq: `${config.topics.events}.dlq` },
    resultSchema: resultValueSchema,
  };

  const openBreaker = (err: RetriableBatchError) => {
    if (breakerOpen) return;
    breakerOpen = true;
    metrics.breaker.set(1);
    consumer.pause();
    logger.warn({ err: err.message, sqlstate: err.sqlstate }, "PostgreSQL unavailable; circuit breaker open, partitions paused");
  };
  const closeBreaker = () => {
    if (!breakerOpen) return;
    breakerOpen = false;
    metrics.breaker.set(0);
    consumer.resume();
    logger.info("PostgreSQL answers again; circuit breaker closed, partitions resumed");
  };
  const replacePool = () => {
    const old = sql;
    sql = createPool(config.postgresDsn);
    void old.end({ timeout: 0 }).catch(() => {});
  };

  /** Applies one batch, retrying transient failures; the breaker pauses consumption meanwhile. */
  const applyWithRetry = async (decoded: DecodedBatch, signal: AbortSignal, sent: () => void): Promise<BatchOutcome> => {
    for (let attempt = 0; ; attempt++) {
      try {
        const outcome = await applyDecoded(decoded, batchDeps, sent);
        closeBreaker();
        return outcome;
      } catch (err) {
        if (!(err instanceof RetriableBatchError)) throw err;
        metrics.retries.inc();
        if (err.connectionLost) replacePool();
        if (err.connectionLost || attempt > 0) openBreaker(err);
        else logger.warn({ err: err.message, sqlstate: err.sqlstate }, "batch not applied; retrying");
        await abortableSleep(backoffDelay(attempt, BACKOFF), signal);
        if (breakerOpen) await probe(signal);
      }
    }
  };

  /** Waits until PostgreSQL answers a trivial query, with backoff. */
  const probe = async (signal: AbortSignal) => {
    for (let attempt = 0; ; attempt++) {
      metrics.probes.inc();
      try {
        await sql`SELECT 1`;
        return;
      } catch {
        replacePool();
        await abortableSleep(backoffDelay(attempt, { initialMs: 200, maxMs: BACKOFF.maxMs }), signal);
      }
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
      const ours = new Set(consumer.assignment().map(partitionKey));
      const mine = offsets.filter((o) => ours.has(partitionKey(o)) && !lost.has(partitionKey(o)));
      try {
        return await consumer.commit(mine);
      } catch (err) {
        const again = err instanceof KafkaError && (err.retriable || REBALANCING.has(err.codeName));
        if (!again || attempt >= COMMIT_ATTEMPTS || abort.signal.aborted) throw err;
        logger.debug({ err: err.message, attempt }, "commit refused; retrying");
        await Bun.sleep(backoffDelay(attempt, COMMIT_BACKOFF));
      }
    }
  };

  /** Publishes a batch's results and dead letters, then commits its offsets; in the background. */
  const handOff = (batch: Message[], { outcomes, publish, deadLettered }: BatchOutcome, started: number) => {
    const done = (async () => {
      // NOTE: after the loop has started the next batch, so PostgreSQL does not wait for this.
      await new Promise((resolve) => setImmediate(resolve));
      // Results and dead letters must be on the broker before the offsets move past them.
      await producer.sendAll(publish);
      if (holdBeforeCommit) {
        holdBeforeCommit = false;
        logger.warn({ messages: batch.length, offsets: nextOffsets(batch) }, HELD_LOG);
        await new Promise(() => {});
      }
      await commit(nextOffsets(batch));
      countOutcomes(outcomes, metrics.commands);
      if (deadLettered) metrics.deadLetters.inc(deadLettered);
      metrics.batchSize.observe(batch.length);
      metrics.batchSeconds.observe((performance.now() - started) / 1000);
    })();
    publishing = { batch, done };
    done.catch((err) => {
      if (abort.signal.aborted) return;
      // At once, not only when the next batch comes: the stream may be idle.
      logger.error({ err }, "publishing results or committing offsets failed; the batch will be redelivered");
      seekBack(consumer, batch);
    });
  };

  /**
   * Applies a batch, then hands it off. `sent`: PostgreSQL has its statements, the next batch may be
   * decoded; `applied`: the next batch may start.
   */
  const processBatch = async (decoded: DecodedBatch, signal: AbortSignal, sent: () => void, applied: () => void) => {
    const started = performance.now();
    const outcome = await applyWithRetry(decoded, signal, sent);
    try {
      await publishing?.done;
    } catch (err) {
      // Nothing after a batch that was not committed may be committed: both come again, what
      // reached PostgreSQL as duplicates. This batch's results are true all the same, and its
      // commands' `applied` results would otherwise never be published.
      await producer.sendAll(outcome.publish).catch(() => {});
      throw new Error("the batch before was not committed", { cause: err });
    }
    handOff(decoded.messages, outcome, started);
    applied();
  };

  /**
   * A batch started. `sent` resolves once PostgreSQL has its statements (or it is applied, or failed),
   * `applied` once the next batch may start (it rejects if this one failed), `done` once it is handed off.
   */
  interface Started {
    batch: Message[];
    previous: Message[] | undefined;
    abort: AbortController;
    sent: Promise<void>;
    applied: Promise<void>;
    done: Promise<void>;
  }

  const startBatch = (decoded: DecodedBatch): Started => {
    const batchAbort = new AbortController();
    const onStop = () => batchAbort.abort(abort.signal.reason);
    abort.signal.addEventListener("abort", onStop, { once: true });
    const sent = Promise.withResolvers<void>();
    const applied = Promise.withResolvers<void>();
    const previous = publishing?.batch;
    const done = processBatch(decoded, batchAbort.signal, sent.resolve, applied.resolve);
    const started: Started = { batch: decoded.messages, previous, abort: batchAbort, sent: sent.promise, applied: applied.promise, done };
    // A failure before `applied` fails it too; after, rejecting it does nothing.
    done.catch(applied.reject);
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
   * Waits until batch `s` is applied. When it failed, it is sought back to come again, with the
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
      // seek back so this member retries them itself. What was committed to PostgreSQL comes back
      // as duplicates. A batch cut short by a revocation comes again on the partitions we keep.
      seekBack(consumer, [...(s.previous ?? []), ...s.batch, ...held]);
      if (s.abort.signal.aborted) {
        logger.warn({ err }, "batch cut short by a rebalance; what is still ours will be redelivered");
        return false;
      }
      logger.error({ err }, "batch failed; it will be redelivered");
      metrics.failed.inc();
      // After a pause, so a lasting failure does not spin.
      await abortableSleep(backoffDelay(failures++, REDELIVERY_BACKOFF), abort.signal).catch(() => {});
      return false;
    }
  };

  let failures = 0;
  const loop = (async () => {
    /** The batch started last; the next one is decoded while PostgreSQL applies it. */
    let current: Started | undefined;
    for await (const fetched of consumer.batches(DB_BATCH)) {
      if (abort.signal.aborted) break;
      let decoded = decodeBatch(fetched, batchDeps.topics.dlq);
      if (current) {
        const ok = await awaitApplied(current, fetched);
        current = undefined;
        // It failed: this batch was sought back with it, and comes again.
        if (!ok || abort.signal.aborted) continue;
      }
      if (revoking.size > 0) {
        const kept = fetched.filter((m) => !revoking.has(partitionKey(m)));
        if (kept.length < fetched.length) decoded = decodeBatch(kept, batchDeps.topics.dlq);
      }
      if (decoded.messages.length === 0) continue;
      current = startBatch(decoded);
      // The next batch is fetched and decoded while PostgreSQL runs this one.
      await Promise.race([current.sent, current.applied.catch(() => {})]);
    }
    if (current) await awaitApplied(current);
    await inFlight?.done.catch(() => {});
    await publishing?.done.catch(() => {});
  })();
  loop.catch((err) => logger.fatal({ err }, "db-worker loop stopped"));
  logger.info({ topic: config.topics.events, group, commands: commands.list().length }, "db-worker consuming");

  let stopping: Promise<void> | undefined;
  return {
    name: "db-worker",
    async ready() {
      const kafkaState = brokerCheck(consumer.stats);
      let pg = "ok";
      try {
        await withTimeout(sql`SELECT 1`, 1000, "timed out");
      } catch (err) {
        pg = (err as Error).message;
      }
      const breaker = breakerOpen ? "open" : "closed";
      return { ok: kafkaState === "ok" && pg === "ok" && !breakerOpen, checks: { kafka: kafkaState, postgres: pg, breaker } };
    },
    stop: () =>
      (stopping ??= (async () => {
        // Let the batch in flight finish (its onRevoke wait is bounded); a breaker wait is cut short.
        if (breakerOpen) abort.abort(new Error("stopping"));
        await consumer.close();
        abort.abort(new Error("stopping"));
        await loop.catch(() => {});
        unregisterLag();
        await producer.close(5000);
        await sql.end({ timeout: 2 });
      })()),
  };
}

const partitionKey = (p: TopicPartition) => `${p.topic}:${p.partition}`;

/** Seeks each partition of `batch` still assigned to this member back to its first message there. */
function seekBack(consumer: Consumer, batch: Message[]): void {
  const ours = new Set(consumer.assignment().map(partitionKey));
  const first = new Map<string, TopicPartitionOffset>();
  for (const m of batch) {
    const k = partitionKey(m);
    if (ours.has(k) && !first.has(k)) first.set(k, { topic: m.topic, partition: m.partition, offset: m.offset });
  }
  if (first.size === 0) return;
  try {
    consumer.seek([...first.values()]);
  } catch {}
}
