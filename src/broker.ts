/**
 * @module broker
 * What every role needs from Kafka besides producing and consuming: the librdkafka settings built
 * from the configuration, the topics of DESIGN.md created at start-up, broker readiness, and the
 * consumer-lag metric.
 */
import { Gauge, type Registry } from "prom-client";
import type { Config } from "./config.ts";
import { Admin } from "./kafka/admin.ts";
import type { Consumer } from "./kafka/consumer.ts";
import type { KafkaConfig } from "./kafka/types.ts";
import type { Logger } from "./logger.ts";

/** `bootstrap.servers` plus the `RDKAFKA_*` passthrough; the binding applies its safety keys last. */
export function kafkaConfig(config: Config): KafkaConfig {
  return {
    "bootstrap.servers": config.kafka.brokers.join(","),
    "client.id": `kitsune-${config.role}`,
    "statistics.interval.ms": 2000,
    ...config.kafka.overrides,
  };
}

/** The topics of DESIGN.md with their partition counts. */
export function topicSpecs(config: Config): { name: string; partitions: number }[] {
  const { events, logs, results } = config.topics;
  return [
    { name: events, partitions: 6 },
    { name: logs, partitions: 3 },
    { name: results, partitions: 6 },
    { name: `${events}.dlq`, partitions: 1 },
    { name: `${logs}.dlq`, partitions: 1 },
  ];
}

/**
 * Creates the missing topics; existing ones are left as they are. Skipped when the broker's
 * owner made them (`config.kafka.topicsCreated`: dev mode's mock cluster, which has no CreateTopics).
 */
export async function ensureTopics(config: Config, logger: Logger): Promise<void> {
  if (config.kafka.topicsCreated) return;
  const admin = new Admin(kafkaConfig(config));
  try {
    const { created } = await admin.createTopics(topicSpecs(config), 15_000);
    if (created.length) logger.info({ topics: created }, "created topics");
  } finally {
    admin.close();
  }
}

/** Broker readiness from a client's latest statistics: some broker connection is up. */
export function brokerCheck(stats: Record<string, any> | undefined): string {
  const brokers = stats?.brokers as Record<string, { state: string; nodeid: number }> | undefined;
  if (!brokers) return "waiting for first statistics";
  const up = Object.values(brokers).some((b) => b.nodeid >= 0 && b.state === "UP");
  return up ? "ok" : "no broker connection is up";
}

let lagGauge: Gauge<"topic" | "partition" | "group"> | undefined;
/** Keyed by consumer: under ROLE=all both workers may share one group name. */
const lagSources = new Map<Consumer, string>();

/** Exposes `kitsune_consumer_lag{topic,partition,group}` for this consumer until `unregister`. */
export function registerLag(registry: Registry, group: string, consumer: Consumer): () => void {
  if (!lagGauge || !registry.getSingleMetric("kitsune_consumer_lag")) {
    lagGauge = new Gauge({
      name: "kitsune_consumer_lag",
      help: "Messages not yet consumed per partition (high watermark minus committed offset).",
      labelNames: ["topic", "partition", "group"],
      registers: [registry],
      collect() {
        this.reset();
        for (const [c, g] of lagSources) {
          for (const l of c.lag()) this.set({ topic: l.topic, partition: String(l.partition), group: g }, l.lag);
        }
      },
    });
  }
  lagSources.set(consumer, group);
  return () => lagSources.delete(consumer);
}
