/**
 * @module cli/dlq
 * `kitsune dlq list|replay`: read dead letters with their errors, and re-drive them to their
 * original topic once the cause is fixed. Replaying is safe: the idempotency key of a command
 * that did apply makes the replay a `duplicate`.
 */
import postgres from "postgres";
import { kafkaConfig } from "../broker.ts";
import { DLQ_HEADERS } from "../pipeline/dead-letter.ts";
import { Admin } from "../kafka/admin.ts";
import { Consumer, nextOffsets } from "../kafka/consumer.ts";
import { Producer } from "../kafka/producer.ts";
import type { Message } from "../kafka/types.ts";
import { parseFlags, toolConfig } from "./tool-config.ts";
import { unwrap } from "../schema/wire.ts";

export const DLQ_HELP = `usage:
  kitsune dlq list   [--topic T] [--limit N]   show dead letters (default topic: <TOPIC_EVENTS>.dlq)
  kitsune dlq replay [--topic T] [--dry-run]   send them back to their original topic, then commit

replay first clears the 'failed' idempotency record of each dead-lettered command (POSTGRES_DSN),
so the db-worker runs it again; commands that did apply stay duplicates.`;

const decoder = new TextDecoder();

export async function dlqCommand(args: string[]): Promise<number> {
  const { words, flags } = parseFlags(args);
  const [sub] = words;
  if ((sub !== "list" && sub !== "replay") || flags.help) {
    console.log(DLQ_HELP);
    return flags.help ? 0 : 2;
  }
  const config = toolConfig();
  const topic = typeof flags.topic === "string" ? flags.topic : `${config.topics.events}.dlq`;
  const kafka = kafkaConfig(config);
  if (sub === "list") {
    const limit = typeof flags.limit === "string" ? Number(flags.limit) : Infinity;
    let shown = 0;
    await readAll(kafka, topic, `kitsune-dlq-list-${crypto.randomUUID()}`, async (batch) => {
      for (const m of batch) {
        if (shown++ >= limit) return false;
        const h = m.headers;
        console.log(
          `${topic}[${m.partition}]@${m.offset}  from ${h[DLQ_HEADERS.topic] ?? "?"}[${h[DLQ_HEADERS.partition] ?? "?"}]@${h[DLQ_HEADERS.offset] ?? "?"}` +
            `  sqlstate=${h[DLQ_HEADERS.sqlstate] ?? "-"}  attempts=${h[DLQ_HEADERS.attempts] ?? "-"}  last=${h[DLQ_HEADERS.lastFailure] ?? "-"}`,
        );
        console.log(`  error: ${h[DLQ_HEADERS.error] ?? "(none)"}`);
        console.log(`  value: ${m.value ? decoder.decode(unwrap(m.value)).slice(0, 300) : "(null)"}`);
      }
      return true;
    });
    if (shown === 0) console.log(`${topic} is empty`);
    return 0;
  }

  const dryRun = flags["dry-run"] === true;
  const producer = dryRun ? undefined : new Producer(kafka);
  const sql = dryRun ? undefined : postgres(config.postgresDsn, { max: 1, onnotice: () => {} });
  let replayed = 0;
  try {
    // A stable group: a replay that stops half-way continues where it stopped.
    await readAll(kafka, topic, "kitsune-dlq-replay", async (batch, commit) => {
      const out = batch.map((m) => ({
        topic: m.headers[DLQ_HEADERS.topic] ?? config.topics.events,
        key: m.key,
        value: m.value,
        headers: Object.fromEntries(Object.entries(m.headers).filter(([k]) => !k.startsWith("kitsune-") || k === "kitsune-id")),
      }));
      for (const [i, o] of out.entries()) {
        console.log(`${dryRun ? "would replay" : "replay"} ${topic}[${batch[i]!.partition}]@${batch[i]!.offset} -> ${o.topic}`);
      }
      if (!dryRun) {
        const keys = batch.map(idempotencyKey).filter((k): k is string => k !== undefined);
        if (keys.length) await sql!`DELETE FROM idempotency_log WHERE status = 'failed' AND key IN ${sql!(keys)}`;
        await producer!.sendAll(out);
        await commit();
      }
      replayed += batch.length;
      return true;
    });
  } finally {
    await producer?.close();
    await sql?.end({ timeout: 2 });
  }
  console.log(`${dryRun ? "would replay" : "replayed"} ${replayed} dead letter(s) from ${topic}`);
  return 0;
}

function idempotencyKey(m: Message): string | undefined {
  try {
    const key = JSON.parse(decoder.decode(unwrap(m.value ?? new Uint8Array())))?.metadata?.idempotency_key;
    return typeof key === "string" ? key : undefined;
  } catch {
    return undefined;
  }
}

/** Reads `topic` from the group's position up to the current end, batch by batch. */
async function readAll(
  kafka: Record<string, string | number | boolean>,
  topic: string,
  group: string,
  onBatch: (batch: Message[], commit: () => Promise<void>) => Promise<boolean>,
): Promise<void> {
  const admin = new Admin(kafka);
  const md = admin.metadata(10_000).topics.find((t) => t.name === topic);
  if (!md || md.error !== 0) {
    admin.close();
    throw new Error(`topic ${topic} does not exist`);
  }
  const end = new Map(md.partitions.map((p) => [p.id, admin.watermarks(topic, p.id).high]));
  admin.close();
  const consumer = new Consumer({ ...kafka, "group.id": group, "auto.offset.reset": "earliest" });
  const done = new Set<number>();
  const finished = () => [...end.entries()].every(([p, high]) => done.has(p) || high === 0);
  if (finished()) {
    await consumer.close();
    return;
  }
  try {
    consumer.subscribe([topic]);
    const batches = consumer.batches({ maxMessages: 500, maxWaitMs: 200 })[Symbol.asyncIterator]();
    // NOTE: a group already at the end gets no messages at all; quiet for a few seconds means done.
    const IDLE_MS = 5000;
    for (;;) {
      const next = await Promise.race([batches.next(), Bun.sleep(IDLE_MS).then(() => "idle" as const)]);
      if (next === "idle" || next.done) break;
      const batch = next.value;
      const mine = batch.filter((m) => m.offset < (end.get(m.partition) ?? 0));
      for (const m of batch) if (m.offset + 1 >= (end.get(m.partition) ?? 0)) done.add(m.partition);
      if (mine.length && !(await onBatch(mine, () => consumer.commit(nextOffsets(mine))))) break;
      if (finished()) break;
    }
  } finally {
    await consumer.close();
  }
}
