/**
 * @module roles/db-worker
 * Turns `db-events` into committed rows. The consume loop (src/pipeline/loop.ts) polls, and per
 * batch this role decodes (src/db/batch.ts), applies in one PostgreSQL transaction
 * (src/db/apply.ts: idempotency key, effect and result row commit together), and hands the loop
 * each `CommandResult` and dead letter to publish before it commits the offsets — the publishing
 * and committing while the next batch is applied. A crash anywhere in between replays the batch,
 * and the idempotency keys make the replay a no-op for what was already committed.
 *
 * When PostgreSQL is unreachable the circuit breaker opens: the loop pauses the assigned
 * partitions, PostgreSQL is probed with backoff, and the same batch is retried once it answers —
 * nothing is dead-lettered for an outage. It opens at once for a lost connection, and on the
 * second failure in a row for any other transient error (a login refused, too many connections,
 * …): one deadlock or serialization failure is retried without it.
 */
import postgres, { type Sql } from "postgres";
import { abortableSleep, backoffDelay } from "../backoff.ts";
import { brokerCheck, ensureTopics, kafkaConfig, registerLag } from "../broker.ts";
import type { Config } from "../config.ts";
import type { CommandLookup } from "../contracts.ts";
import { applyBatch } from "../db/apply.ts";
import { applyDecoded, countOutcomes, decodeBatch, type BatchDeps, type BatchOutcome, type DecodedBatch } from "../db/batch.ts";
import { isConnectionError, RetriableBatchError } from "../db/errors.ts";
import { createDbMetrics } from "../db/metrics.ts";
import { migrate } from "../db/migrations.ts";
import { loadRegistry, verifyRegistry } from "../db/registry.ts";
import { Consumer } from "../kafka/consumer.ts";
import { nextOffsets } from "../kafka/offsets.ts";
import { Producer } from "../kafka/producer.ts";
import { startLoop, type Loop } from "../pipeline/loop.ts";
import { resultSchema } from "../schema/publish.ts";
import type { ValueSchema } from "../schema/wire.ts";
import type { Deps, Service } from "../service.ts";
import { withTimeout } from "../timeout.ts";

export const DB_BATCH = { maxMessages: 2000, maxWaitMs: 20 } as const;
const BACKOFF = { initialMs: 100, maxMs: 10_000 };
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
 * postgres.js writes one query per socket write as answers come back (`bench db-worker` fell sharply).
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
  let holdBeforeCommit = process.env[HOLD_BEFORE_COMMIT_ENV] === "1";
  let breakerOpen = false;
  const batchDeps: BatchDeps = {
    apply: (events, sent) => applyBatch(sql, commands, events, sent),
    topics: { results: config.topics.results, dlq: `${config.topics.events}.dlq` },
    resultSchema: resultValueSchema,
  };

  const openBreaker = (err: RetriableBatchError) => {
    if (breakerOpen) return;
    breakerOpen = true;
    metrics.breaker.set(1);
    loop.pause();
    logger.warn({ err: err.message, sqlstate: err.sqlstate }, "PostgreSQL unavailable; circuit breaker open, partitions paused");
  };
  const closeBreaker = () => {
    if (!breakerOpen) return;
    breakerOpen = false;
    metrics.breaker.set(0);
    loop.resume();
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

  let consumer!: Consumer;
  const loop: Loop = startLoop<DecodedBatch>({
    name: "db-worker",
    // The binding's cooperative-sticky assignment (or KIP-848's incremental one): see CLASSIC_GROUP_DEFAULTS.
    source: (hooks) =>
      (consumer = new Consumer({ ...kafka, "group.id": group }, { ...hooks, onError: (err) => logger.warn({ err: err.message, code: err.codeName }, "kafka consumer") })),
    batch: DB_BATCH,
    publisher: producer,
    logger,
    // NOTE: decoding runs while PostgreSQL applies the batch before.
    handler: {
      prepare: (messages) => decodeBatch(messages, batchDeps.topics.dlq),
      handle: async (decoded, signal, sent) => {
        const started = performance.now();
        const { outcomes, publish, deadLettered } = await applyWithRetry(decoded, signal, sent);
        const batch = decoded.messages;
        return {
          publish,
          committed: () => {
            countOutcomes(outcomes, metrics.commands);
            if (deadLettered) metrics.deadLetters.inc(deadLettered);
            metrics.batchSize.observe(batch.length);
            metrics.batchSeconds.observe((performance.now() - started) / 1000);
          },
        };
      },
    },
    beforeCommit: async (batch) => {
      if (!holdBeforeCommit) return;
      holdBeforeCommit = false;
      logger.warn({ messages: batch.length, offsets: nextOffsets(batch) }, HELD_LOG);
      await new Promise(() => {});
    },
    onFailed: () => metrics.failed.inc(),
  });
  consumer.subscribe([config.topics.events]);
  const unregisterLag = registerLag(registry, group, consumer);
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
        // The batch in flight may finish (its onRevoke wait is bounded); a breaker wait is cut short.
        await loop.stop();
        unregisterLag();
        await producer.close(5000);
        await sql.end({ timeout: 2 });
      })()),
  };
}
