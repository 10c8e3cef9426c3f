/**
 * @module roles/log-worker
 * Ships `app-logs` to Grafana Loki. The consume loop (src/pipeline/loop.ts) polls, hands each
 * batch to `shipBatch` (src/log/ship.ts), and commits once every message of it is in Loki or
 * dead-lettered — the commit in the background while the next batch ships.
 *
 * While Loki (or the DLQ) is unavailable `shipBatch` retries the same batch with backoff; the
 * loop pauses the partitions meanwhile, so nothing more is fetched and memory stays bounded
 * (librdkafka's queue is capped too), and resumes them once the retried request is answered.
 * A batch that is given up (shutdown, its partitions revoked) is not committed: the partitions
 * this member keeps are rewound to it, the others' next owner reads it again.
 */
import { brokerCheck, ensureTopics, kafkaConfig, registerLag } from "../broker.ts";
import type { Config } from "../config.ts";
import { Consumer } from "../kafka/consumer.ts";
import { Producer } from "../kafka/producer.ts";
import type { Message } from "../kafka/types.ts";
import { createLokiSink, type LokiSink } from "../log/loki-sink.ts";
import { createLogMetrics } from "../log/metrics.ts";
import { LOG_BATCH, shipBatch, type RetryInfo } from "../log/ship.ts";
import { startLoop, type Loop } from "../pipeline/loop.ts";
import type { Deps, Service } from "../service.ts";

/** /readyz must answer quickly even when Loki does not. */
const READY_TIMEOUT_MS = 2000;

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

  const pause = ({ cause }: RetryInfo) => {
    if (!loop.pause()) return;
    const what = cause === "dlq" ? "the DLQ" : "loki";
    logger.warn({ partitions: consumer.pausedCount, cause }, `${what} unavailable; partitions paused until it answers`);
  };
  const resume = () => {
    if (loop.resume()) logger.info("shipping again; partitions resumed");
  };

  let consumer!: Consumer;
  const loop: Loop = startLoop<Message[]>({
    name: "log-worker",
    // NOTE: librdkafka's default prefetch (64 MiB). While Loki pushes back the partitions are
    // paused, which empties it; a smaller prefetch cut throughput (fetching restarts late after
    // the queue was full).
    source: (hooks) =>
      (consumer = new Consumer(
        { ...kafka, "group.id": group },
        {
          ...hooks,
          onError: (err) => logger.warn({ err: err.message, code: err.codeName }, "kafka consumer"),
          maxBuffered: LOG_BATCH.maxMessages * 5,
        },
      )),
    batch: LOG_BATCH,
    // Dead letters are written by shipBatch itself (retried like Loki); nothing is left to publish.
    publisher: dlq,
    logger,
    handler: {
      prepare: (messages) => messages,
      handle: async (batch, signal) => {
        try {
          await shipBatch(batch, { sink, dlq, dlqTopic, logger, metrics, signal, onRetry: pause, onRecovered: resume });
        } finally {
          resume();
        }
        return { publish: [] };
      },
    },
    onPausedCount: (count) => metrics.partitionsPaused.set(count),
  });
  consumer.subscribe([config.topics.logs]);
  const unregisterLag = registerLag(registry, group, consumer);
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
        await loop.stop(); // leaves the group: the batch in flight finishes (or is abandoned) first
        unregisterLag();
        await dlq.close();
      })()),
  };
}
