/**
 * @module db/metrics
 * The db-worker's Prometheus metrics.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export type DbMetrics = ReturnType<typeof createDbMetrics>;

export function createDbMetrics(registry: Registry) {
  const registers = [registry];
  return {
    commands: new Counter({
      name: "kitsune_db_commands_total",
      help: "Commands processed by the db-worker, by command and status (applied, duplicate, failed).",
      labelNames: ["command", "status"],
      registers,
    }),
    deadLetters: new Counter({
      name: "kitsune_db_dead_letters_total",
      help: "Messages sent to the db-events dead-letter topic.",
      registers,
    }),
    breaker: new Gauge({ name: "kitsune_db_breaker_open", help: "1 while PostgreSQL is unreachable and partitions are paused.", registers }),
    probes: new Counter({ name: "kitsune_db_breaker_probes_total", help: "Queries sent to PostgreSQL while the breaker is open, to see whether it answers again.", registers }),
    batchSize: new Histogram({
      name: "kitsune_db_batch_size",
      help: "Messages per db-worker batch.",
      buckets: [1, 5, 10, 50, 100, 250, 500, 1000, 2000],
      registers,
    }),
    batchSeconds: new Histogram({
      name: "kitsune_db_batch_duration_seconds",
      help: "Time from receiving a batch to committing its offsets.",
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    retries: new Counter({ name: "kitsune_db_batch_retries_total", help: "Batches retried after a transient PostgreSQL error.", registers }),
    failed: new Counter({
      name: "kitsune_db_batches_failed_total",
      help: "Batches that failed as a whole for another reason than an unavailable PostgreSQL (a bug, a schema change, publishing or committing); each is read again.",
      registers,
    }),
  };
}
