/**
 * @module kafka/types
 * Plain TypeScript shapes of the Kafka binding. Roles depend on these (and on the small
 * `MessageSink`/`MessageSource` ports below), never on pointers: tests can pass fakes.
 */

/** librdkafka configuration properties, e.g. `{ "bootstrap.servers": "localhost:9092" }`. */
export type KafkaConfig = Record<string, string | number | boolean>;

export type Bytes = Uint8Array | string;

export interface OutgoingMessage {
  topic: string;
  value: Bytes | null;
  key?: Bytes | null;
  /** Header values are UTF-8 text. */
  headers?: Record<string, string>;
  /** Explicit partition; by default librdkafka's partitioner picks one from the key. */
  partition?: number;
}

export interface DeliveryReport {
  topic: string;
  partition: number;
  offset: number;
}

export interface TopicPartition {
  topic: string;
  partition: number;
}

/** The one key of a partition in maps and sets: topic and partition, NUL between (no topic name holds one). */
export const tpKey = (p: TopicPartition): string => `${p.topic}\u0000${p.partition}`;

/** `offset` is the next offset to read: the last processed message's offset + 1. */
export interface TopicPartitionOffset extends TopicPartition {
  offset: number;
}

export interface Message {
  topic: string;
  partition: number;
  offset: number;
  key: Uint8Array | null;
  value: Uint8Array | null;
  headers: Record<string, string>;
  /** Milliseconds since the epoch (create time), or -1 when unknown. */
  timestamp: number;
}

/** What the api and the workers need to write: one call, both-or-neither where the producer is transactional. */
export interface MessageSink {
  /**
   * Sends every message and settles once the broker holds all of them. A transactional producer
   * puts them in one transaction: on rejection none of them is visible to `read_committed` readers.
   */
  sendAll(messages: OutgoingMessage[]): Promise<DeliveryReport[]>;
}
