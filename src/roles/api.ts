/**
 * @module roles/api
 * The api role: the HTTP app of `src/api/` over a Kafka producer (`MessageSink`), the SQL registry
 * (`CommandLookup`), a consumer of `db-results` for `POST /execute?wait=` and, when PostgreSQL
 * answers, the db-worker's `idempotency_log` for `GET /commands/:id`. `main` mounts `service.app`
 * beside /healthz, /readyz and /metrics.
 *
 * PostgreSQL is optional here: it is not checked at start-up beyond a logged probe, and while it
 * does not answer only `GET /commands/:id` answers 503.
 */
import { hostname } from "node:os";
import postgres, { type Sql } from "postgres";
import { createApiApp } from "../api/app.ts";
import { pgCommandStatuses } from "../api/status.ts";
import { feedResults, ResultWaiters } from "../api/results.ts";
import type { Config } from "../config.ts";
import type { CommandLookup } from "../contracts.ts";
import type { MessageSink } from "../kafka/types.ts";
import type { Deps, Readiness, Service } from "../service.ts";
import { brokerCheck, ensureTopics, kafkaConfig } from "../broker.ts";
import { loadRegistry } from "../db/registry.ts";
import { withTimeout } from "../timeout.ts";
import type { EventSchemas } from "../api/events.ts";
import { Consumer } from "../kafka/consumer.ts";
import { apiEventSchemas } from "../schema/publish.ts";
import { Producer } from "../kafka/producer.ts";
import { TransactionalProducer } from "../kafka/txn-producer.ts";
import type { ProduceBreaker } from "../api/breaker.ts";

export interface ApiDeps extends Deps {
  /** Injected by tests and benchmarks instead of the Kafka producer; `?wait=` then needs `results` too. */
  sink?: MessageSink;
  commands?: CommandLookup;
  /** Readiness of the injected sink, e.g. broker metadata. */
  sinkReady?: () => Promise<boolean>;
  /** Injected instead of the db-results consumer (with an injected sink). */
  results?: ResultWaiters;
  /** A PostgreSQL pool to read `idempotency_log` with, instead of one from `config.postgresDsn`. */
  sql?: Sql;
  /** `POST /execute`'s wait for the broker's acknowledgement (default 5 s). */
  produceTimeoutMs?: number;
  /** Injected by tests that need the breaker's clock in hand. */
  breaker?: ProduceBreaker;
}

/** How long a status lookup or readiness probe waits for PostgreSQL. */
const PG_TIMEOUT_S = 2;

export async function start(config: Config, deps: ApiDeps): Promise<Service> {
  const { logger } = deps;
  if (config.auth.disabled) logger.warn("AUTH_DISABLED=true: the api accepts requests without a bearer token");

  const commands = deps.commands ?? (await loadRegistry(config.sqlDir));
  // Before Kafka: an edit the schema registry refuses stops start-up at once.
  let schemas: EventSchemas | undefined;
  if (config.schemaRegistry) {
    const { published, ...ids } = await apiEventSchemas(config.schemaRegistry, commands.list(), config.topics);
    schemas = ids;
    logger.info(
      { registry: config.schemaRegistry.url, subjects: published.ids.size, new_versions: published.changed, wire_format: config.schemaRegistry.wireFormat },
      "schemas published",
    );
  }
  let producer: Producer | TransactionalProducer | undefined;
  let resultConsumer: Consumer | undefined;
  let feeding: Promise<void> | undefined;
  let results = deps.results;
  let sink = deps.sink;
  if (!sink) {
    await ensureTopics(config, logger);
    const kafka = kafkaConfig(config);
    if (config.kafka.transactions) {
      const txn = new TransactionalProducer(kafka, config.kafka.txnLanes ? { lanes: config.kafka.txnLanes } : {});
      try {
        await txn.init();
      } catch (err) {
        await txn.close(1000);
        throw new Error(`cannot start Kafka transactions (set KAFKA_TRANSACTIONS=false for brokers without them): ${(err as Error).message}`);
      }
      producer = txn;
    } else {
      producer = new Producer(kafka);
    }
    sink = producer;

    if (!results) {
      // A group of its own per process, never committed: every api process sees every result
      // from the moment it starts; older results are nobody's to wait for. NOTE: it reads all of
      // db-results even when nobody waits (results for no waiter are skipped unparsed, by header).
      results = new ResultWaiters(10_000, logger);
      try {
        resultConsumer = new Consumer(
          {
            ...kafka,
            "group.id": `kitsune-api-results-${hostname()}-${process.pid}-${Bun.randomUUIDv7().slice(-12)}`,
            "auto.offset.reset": "latest",
            // A waiting request sees its result at most this much later than the broker has it.
            "fetch.wait.max.ms": 25,
          },
          { onError: (err) => logger.debug({ err }, "db-results consumer") },
        );
        resultConsumer.subscribe([config.topics.results]);
      } catch (err) {
        await Promise.allSettled([producer.close(1000), resultConsumer?.close(1000)]);
        throw err;
      }
      feeding = feedResults(resultConsumer, results, logger);
    }
  }

  const ownSql = deps.sql ? undefined : postgres(config.postgresDsn, { max: 4, connect_timeout: PG_TIMEOUT_S, idle_timeout: 60, onnotice: () => {} });
  const sql = deps.sql ?? ownSql!;
  const postgresCheck = async (timeoutMs = PG_TIMEOUT_S * 1000): Promise<string> => {
    try {
      await withTimeout(sql`SELECT 1`, timeoutMs);
      return "ok";
    } catch (err) {
      return `unavailable: ${(err as Error)?.message ?? err}`;
    }
  };
  void postgresCheck().then((state) => {
    if (state !== "ok") logger.warn({ postgres: state }, "PostgreSQL does not answer: GET /commands/:id answers 503 until it does");
  });

  logger.info(
    { commands: commands.list().map((c) => `${c.command}.v${c.version}`), transactions: config.kafka.transactions },
    "api ready to accept commands",
  );

  const app = createApiApp({
    config,
    registry: commands,
    sink,
    metrics: deps.registry,
    logger,
    results,
    schemas,
    statuses: pgCommandStatuses(sql),
    produceTimeoutMs: deps.produceTimeoutMs,
    breaker: deps.breaker,
  });

  let stopping: Promise<void> | undefined;
  return {
    name: "api",
    app,
    ready: async (): Promise<Readiness> => {
      const kafka = producer
        ? producer instanceof TransactionalProducer && producer.fatalError
          ? `fatal: ${producer.fatalError.message}`
          : brokerCheck(producer.stats)
        : deps.sinkReady
          ? (await deps.sinkReady())
            ? "ok"
            : "unavailable"
          : "ok";
      const registry = `ok (${commands.list().length} commands)`;
      const checks: Record<string, string> = { kafka, registry };
      if (resultConsumer) checks.results = resultConsumer.assignment().length > 0 ? "ok" : "joining group";
      // NOTE: PostgreSQL and the results consumer are reported, not required: without them only
      // GET /commands/:id (503) and ?wait (202 without waiting) lose their answers.
      checks.postgres = await postgresCheck(500);
      return { ok: kafka === "ok", checks };
    },
    stop: () =>
      (stopping ??= (async () => {
        // In-flight requests finish before this runs (main stops the HTTP server first).
        await Promise.allSettled([
          producer?.close(5000),
          resultConsumer?.close(5000).then(() => feeding),
          ownSql?.end({ timeout: 1 }),
        ]);
      })()),
  };
}
