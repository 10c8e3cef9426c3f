/**
 * @module roles/log-worker
 * Ships `app-logs` to Grafana Loki. The loop only polls, hands each batch to `shipBatch`
 * (src/log/ship.ts), and commits once every message of it is in Loki or dead-lettered.
 *
 * While Loki (or the DLQ) is unavailable `shipBatch` retries the same batch with backoff; the
 * worker pauses its partitions meanwhile, so nothing more is fetched and memory stays bounded
 * (librdkafka's queue is capped too), and resumes them once the retried request is answered.
 * A batch that is given up (shutdown, its partitions revoked) is not committed: the partitions
 * this member keeps are rewound to it, the others' next owner reads it again.
 */
import { brokerCheck, ensureTopics, kafkaConfig, registerLag } from "../broker.ts";
import type { Config } from "../config.ts";
import { Consumer } from "../kafka/consumer.ts";
import { Producer } from "../kafka/producer.ts";
import type { Message, TopicPartition, TopicPartitionOffset } from "../kafka/types.ts";
import { createLokiSink, type LokiSink } from "../log/loki-sink.ts";
import { createLogMetrics } from "../log/metrics.ts";
import { LOG_BATCH, shipBatch, type RetryInfo } from "../log/ship.ts";
import type { Deps } from "../main.ts";
import type { Service } from "../service.ts";

/** How long a rebalance or shutdown waits for the batch in flight before abandoning it. */
const REVOKE_WAIT_MS = 5000;
/** /readyz must answer quickly even when Loki does not. */
const READY_TIMEOUT_MS = 2000;

const key = (p: TopicPartition) => `${p.topic}\u0000${p.partition}`;

/** Where a batch starts and ends on one partition. */
interface Span extends TopicPartition {
  first: number;
  /** The offset to commit: the last one + 1. */
  next: number;
}

/** The batch's span on each of its partitions, by `key`. */
function spansOf(batch: readonly Message[]): Map<string, Span> {
  const spans = new Map<string, Span>();
  let span: Span | undefined;
  for (const m of batch) {
    // A partition's messages come in runs: look the span up only when the partition changes.
    if (!span || span.partition !== m.partition || span.topic !== m.topic) {
      const k = key(m);
      span = spans.get(k);
      if (!span) spans.set(k, (span = { topic: m.topic, partition: m.partition, first: m.offset, next: m.offset + 1 }));
    }
    if (m.offset < span.first) span.first = m.offset;
    if (m.offset >= span.next) span.next = m.offset + 1;
  }
  return spans;
}

interface InFlight {
  /** Settles (never rejects) once the batch is shipped and its commit sent, or given up. */
  done: Promise<void>;
  abort: AbortController;
  /** The batch's partitions (by `key`) and offsets. */
  spans: Map<string, Span>;
  /** Of those, the ones revoked while it was in flight (not to be rewound). */
  revoked: Set<string>;
}

export interface LogWorkerDeps extends Deps {
  /** Where the lines go instead of Loki at `config.loki.url` (dev mode: stdout). */
  logSink?: LokiSink;
}

export async function start(config: Config, { logger, registry, logSink }: LogWorkerDeps): Promise<Service> {
  const kafka = kafkaConfig(config);
  const group = config.kafka.groupId ?? "kitsune-log-worker";
  const dlqTopic = `${config.topics.logs}.dlq`;
  await ensureTopics(config, logger);
  const sink = logSink ?? createLokiSink(config.loki);
  const metrics = createLogMetrics(registry);
  const dlq = new Producer(kafka);
  let inFlight: InFlight | undefined;
  /** The latest commit; commits are cumulative, so waiting for it waits for all of them. */
  let committed: Promise<void> = Promise.resolve();
  let paused = false;
  let stopping = false;

  /**
   * Before partitions go to another member (or the group is left): the batch in flight finishes
   * and its offsets are committed, or it is abandoned after `REVOKE_WAIT_MS` (the next owner
   * reads it again).
   */
  const settle = async (parts: TopicPartition[]) => {
    const deadline = performance.now() + REVOKE_WAIT_MS;
    const current = inFlight;
    const revoked = new Set(parts.map(key));
    if (current && [...revoked].some((k) => current.spans.has(k))) {
      for (const k of revoked) current.revoked.add(k);
      // While Loki is unavailable there is nothing to wait for: give the batch up at once.
      const timer = setTimeout(() => current.abort.abort(new Error("partitions revoked")), paused ? 0 : REVOKE_WAIT_MS);
      await current.done;
      clearTimeout(timer);
    }
    await within(committed, Math.max(0, deadline - performance.now()));
  };

  const consumer = new Consumer(
    // NOTE: librdkafka's default prefetch (64 MiB). While Loki pushes back the partitions are
    // paused, which empties it; a 16 MiB prefetch cut throughput by 5 (fetching restarts late
    // after the queue was full).
    { ...kafka, "group.id": group },
    {
      // Partitions assigned while the worker waits for Loki wait with the others.
      onAssign: (parts) => {
        if (!paused) return;
        consumer.pause(parts);
        metrics.partitionsPaused.set(consumer.pausedCount);
      },
      onRevoke: settle,
      onError: (err) => logger.warn({ err: err.message, code: err.codeName }, "kafka consumer"),
      maxBuffered: LOG_BATCH.maxMessages * 5,
    },
  );
  consumer.subscribe([config.topics.logs]);
  const unregisterLag = registerLag(registry, group, consumer);

  const pause = ({ cause }: RetryInfo) => {
    if (paused) return;
    paused = true;
    consumer.pause();
    metrics.partitionsPaused.set(consumer.pausedCount);
    const what = cause === "dlq" ? "the DLQ" : "loki";
    logger.warn({ partitions: consumer.pausedCount, cause }, `${what} unavailable; partitions paused until it answers`);
  };
  const resume = () => {
    if (!paused) return;
    paused = false;
    consumer.resume();
    metrics.partitionsPaused.set(0);
    logger.info("shipping again; partitions resumed");
  };

  /** Reads the batch again from its first offsets, on the partitions this member still owns. */
  const rewind = (current: InFlight) => {
    const owned = new Set(consumer.assignment().map(key));
    const offsets: TopicPartitionOffset[] = [];
    for (const [k, { topic, partition, first }] of current.spans) {
      if (owned.has(k) && !current.revoked.has(k)) offsets.push({ topic, partition, offset: first });
    }
    if (offsets.length === 0) return;
    try {
      consumer.seek(offsets);
    } catch (err) {
      logger.error({ err }, "cannot rewind to an abandoned batch; it is read again after a restart");
    }
  };

  const commit = (spans: Map<string, Span>) => {
    const offsets = [...spans.values()].map(({ topic, partition, next }) => ({ topic, partition, offset: next }));
    committed = consumer.commit(offsets).catch((err) => {
      // The next batch's commit covers this one; only a crash before it reads these lines again
      // (and Loki keeps identical entries once).
      logger.warn({ err }, "offset commit failed; the next commit covers this batch");
    });
  };

  const handle = async (batch: Message[], current: InFlight) => {
    try {
      await shipBatch(batch, { sink, dlq, dlqTopic, logger, metrics, signal: current.abort.signal, onRetry: pause, onRecovered: resume });
      // NOTE: not awaited. The next batch ships while the coordinator answers, and librdkafka
      // sends commits in order. (Awaiting it here can also stall for good: the consumer stops
      // serving its queue, commit results included, while its buffer is full.)
      commit(current.spans);
    } catch (err) {
      if (!current.abort.signal.aborted) logger.error({ err }, "log batch failed; reading it again");
      if (!stopping) rewind(current);
    } finally {
      resume();
    }
  };

  const loop = (async () => {
    for await (const batch of consumer.batches(LOG_BATCH)) {
      const current: InFlight = { done: Promise.resolve(), abort: new AbortController(), spans: spansOf(batch), revoked: new Set() };
      inFlight = current;
      current.done = handle(batch, current);
      await current.done;
      inFlight = undefined;
    }
  })();
  loop.catch((err) => logger.fatal({ err }, "log-worker loop stopped"));
  logger.info({ topic: config.topics.logs, group, loki: logSink ? "(not used)" : config.loki.url }, "log-worker consuming");

  let stopped: Promise<void> | undefined;
  return {
    name: "log-worker",
    async ready() {
      const kafkaState = brokerCheck(consumer.stats);
      const loki = await sink
        .ready({ signal: AbortSignal.timeout(READY_TIMEOUT_MS) })
        .catch(() => ({ ok: false, detail: `no answer from Loki within ${READY_TIMEOUT_MS} ms` }));
      return { ok: kafkaState === "ok" && loki.ok, checks: { kafka: kafkaState, loki: loki.ok ? "ok" : loki.detail } };
    },
    stop: () =>
      (stopped ??= (async () => {
        stopping = true;
        await consumer.close(); // runs onRevoke: the batch in flight finishes (or is abandoned) first
        await loop.catch(() => {});
        unregisterLag();
        await dlq.close();
      })()),
  };
}

/** Waits for `promise`, but no longer than `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
