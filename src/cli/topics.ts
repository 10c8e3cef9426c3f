/**
 * @module cli/topics
 * `kitsune topics create|describe`: the topics of DESIGN.md, their partitions and offsets.
 */
import { kafkaConfig, topicSpecs } from "../broker.ts";
import { Admin } from "../kafka/admin.ts";
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
      for (const t of created) console.log(`created  ${t}`);
      for (const t of existing) console.log(`exists   ${t}`);
      return 0;
    }
    const md = admin.metadata(10_000);
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
        const w = admin.watermarks(t.name, p.id, 5000);
        console.log(`  ${String(p.id).padEnd(9)}  ${String(p.leader).padEnd(6)}  ${String(w.low).padEnd(9)}  ${w.high}`);
      }
    }
    return 0;
  } finally {
    admin.close();
  }
}
