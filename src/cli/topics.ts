/**
 * @module cli/topics
 * `kitsune topics create|describe`: the topics of DESIGN.md, their partitions and offsets.
 */
import { kafkaConfig, topicSpecs } from "../broker.ts";
import { Admin } from "../kafka/admin.ts";
import type { KafkaError } from "../kafka/errors.ts";
import { toolConfig } from "./tool-config.ts";

export const TOPICS_HELP = `usage:
  kitsune topics create      create the missing topics (db-events 6, app-logs 3, db-results 6, *.dlq 1)
  kitsune topics describe    partitions, leaders and offsets of each topic`;

export async function topicsCommand(args: string[]): Promise<number> {
  const [sub] = args;
  if (sub !== "create" && sub !== "describe") {
    console.log(TOPICS_HELP);
    return sub === "--help" || sub === "-h" ? 0 : 2;
  }
  const config = toolConfig();
  const admin = new Admin(kafkaConfig(config));
  try {
    if (sub === "create") {
      const { created, existing } = await admin.createTopics(topicSpecs(config));
      // "created" means usable: wait until the broker has a leader for every new partition.
      await leadersElected(admin, created);
      for (const t of created) console.log(`created  ${t}`);
      for (const t of existing) console.log(`exists   ${t}`);
      return 0;
    }
    const md = admin.metadata(10_000);
    let failed = false;
    console.log(`brokers: ${md.brokers.map((b) => `${b.id}@${b.host}:${b.port}`).join(", ")}`);
    for (const spec of topicSpecs(config)) {
      const t = md.topics.find((x) => x.name === spec.name);
      if (!t || t.error !== 0) {
        console.log(`\n${spec.name}: missing (run: kitsune topics create)`);
        continue;
      }
      console.log(`\n${t.name}: ${t.partitions.length} partition(s)`);
      console.log("  partition  leader  low        high");
      for (const p of t.partitions) {
        const w = await watermarks(admin, t.name, p.id);
        if ("error" in w) {
          console.log(`  ${String(p.id).padEnd(9)}  ${String(p.leader).padEnd(6)}  offsets unavailable: ${w.error}`);
          failed = true;
          continue;
        }
        console.log(`  ${String(p.id).padEnd(9)}  ${String(p.leader).padEnd(6)}  ${String(w.low).padEnd(9)}  ${w.high}`);
      }
    }
    return failed ? 1 : 0;
  } finally {
    admin.close();
  }
}

/**
 * A partition's offsets. NOTE: right after `topics create` the broker may not have elected a
 * leader yet: those answers are retried (with fresh metadata) for up to `waitMs` before the
 * partition is reported unavailable. (A topic this client has not seen yet, Admin refreshes itself.)
 */
async function watermarks(admin: Admin, topic: string, partition: number, waitMs = 15_000): Promise<{ low: number; high: number } | { error: string }> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    try {
      return admin.watermarks(topic, partition, 5000);
    } catch (err) {
      const e = err as KafkaError;
      const settling = e.retriable || SETTLING.has(e.codeName);
      if (!settling || performance.now() > deadline) return { error: e.message };
      await Bun.sleep(200);
      admin.metadata(5000);
    }
  }
}

/** What a just-created topic answers until its leaders are elected and known to this client. */
const SETTLING = new Set(["UNKNOWN_TOPIC_OR_PART", "LEADER_NOT_AVAILABLE", "NOT_LEADER_OR_FOLLOWER", "_LEADER_NOT_AVAILABLE"]);

/** Waits (up to `waitMs`) until metadata lists every partition of `topics` with a leader. */
async function leadersElected(admin: Admin, topics: string[], waitMs = 15_000): Promise<void> {
  const deadline = performance.now() + waitMs;
  while (topics.length > 0 && performance.now() < deadline) {
    const md = admin.metadata(5000);
    const ready = topics.every((name) => {
      const t = md.topics.find((x) => x.name === name);
      return t !== undefined && t.error === 0 && t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0);
    });
    if (ready) return;
    await Bun.sleep(100);
  }
}
