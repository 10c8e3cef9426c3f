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

export interface BatchOptions {
  maxMessages?: number;
  /** How long to wait for more messages once the first one of a batch is there. */
  maxWaitMs?: number;
}

export interface RebalanceInfo {
  /** The partitions were lost (session timed out): committing for them will fail. */
  lost: boolean;
}

/** What a group member is told when its assignment changes. */
export interface RebalanceHooks {
  /** Called after partitions are assigned (and before their messages are handed out). */
  onAssign?(parts: TopicPartition[]): void | Promise<void>;
  /** Called before partitions are revoked: finish or drop their work and commit here. */
  onRevoke?(parts: TopicPartition[], info: RebalanceInfo): void | Promise<void>;
}

/**
 * What the consume loop (src/pipeline/loop.ts) reads through: a group member handing out batches
 * and committing what it is told. The `Consumer` implements it; the loop's tests pass a fake.
 */
export interface MessageSource {
  /** Batches in partition order until `close()`. */
  batches(options?: BatchOptions): AsyncIterable<Message[]>;
  /** Partitions currently assigned to this member. */
  assignment(): TopicPartition[];
  /** Commits next-offsets; settles when the group coordinator answered. */
  commit(offsets: TopicPartitionOffset[]): Promise<void>;
  /** Moves the fetch position of assigned partitions; what was fetched of them and not handed out is dropped. */
  seek(offsets: TopicPartitionOffset[]): void;
  /** Hands out nothing more from these partitions (all assigned ones by default) until `resume`. */
  pause(parts?: TopicPartition[]): void;
  resume(parts?: TopicPartition[]): void;
  readonly pausedCount: number;
  /** Leaves the group (`onRevoke` runs first for the whole assignment); iterators end. */
  close(): Promise<void>;
}
