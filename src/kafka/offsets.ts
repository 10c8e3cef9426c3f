/**
 * @module kafka/offsets
 * Partitions as map keys, and the offsets to commit after a batch. Pure: the consume loop and its
 * tests use them without the binding.
 */
import type { Message, TopicPartition, TopicPartitionOffset } from "./types.ts";

/** The one key of a partition in maps and sets: topic and partition, NUL between (no topic name holds one). */
export const tpKey = (p: TopicPartition): string => `${p.topic}\u0000${p.partition}`;

/** The offsets to commit after processing `messages`: per partition, the highest offset + 1. */
export function nextOffsets(messages: Message[]): TopicPartitionOffset[] {
  const max = new Map<string, TopicPartitionOffset>();
  for (const m of messages) {
    const k = tpKey(m);
    const cur = max.get(k);
    if (!cur || m.offset + 1 > cur.offset) max.set(k, { topic: m.topic, partition: m.partition, offset: m.offset + 1 });
  }
  return [...max.values()];
}
