/**
 * @module log/metrics
 * The log-worker's Prometheus metrics, all prefixed `kitsune_log_`.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface LogMetrics {
  /** Lines Loki accepted (counted once, when the push holding them answers 2xx). */
  linesShipped: Counter;
  /** UTF-8 bytes of those lines, before compression. */
  bytesShipped: Counter;
  /** Batches settled by `shipBatch` (every message delivered or dead-lettered). */
  batches: Counter;
  /** One observation per push request; `result` is ok, retriable or rejected. */
  pushDuration: Histogram<"result">;
  /** Pushes retried; `cause` is the HTTP status, `network` or `timeout`. */
  retries: Counter<"cause">;
  /** Messages sent to the DLQ; `reason` is `decode` (not a LogEvent) or `rejected` (by Loki). */
  deadLetters: Counter<"reason">;
  /** Partitions the worker paused while it retries (Loki or the DLQ unavailable); 0 otherwise. */
  partitionsPaused: Gauge;
}

export function createLogMetrics(registry: Registry): LogMetrics {
  const registers = [registry];
  return {
    linesShipped: new Counter({ name: "kitsune_log_lines_total", help: "Log lines shipped to (accepted by) Loki.", registers }),
    bytesShipped: new Counter({
      name: "kitsune_log_bytes_shipped_total",
      help: "Uncompressed bytes of the log lines accepted by Loki.",
      registers,
    }),
    batches: new Counter({
      name: "kitsune_log_batches_total",
      help: "Batches of app-logs messages settled (delivered or dead-lettered).",
      registers,
    }),
    pushDuration: new Histogram({
      name: "kitsune_log_push_duration_seconds",
      help: "Duration of Loki push requests.",
      labelNames: ["result"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    retries: new Counter({
      name: "kitsune_log_push_retries_total",
      help: "Loki pushes retried, by cause (HTTP status, network, timeout).",
      labelNames: ["cause"],
      registers,
    }),
    deadLetters: new Counter({
      name: "kitsune_log_dead_letters_total",
      help: "app-logs messages sent to the DLQ, by reason (decode, rejected).",
      labelNames: ["reason"],
      registers,
    }),
    partitionsPaused: new Gauge({
      name: "kitsune_log_partitions_paused",
      help: "Partitions paused while Loki (or the DLQ) is unavailable and pushes are retried.",
      registers,
    }),
  };
}
