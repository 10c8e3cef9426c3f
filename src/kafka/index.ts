/**
 * @module kafka
 * Kitsune's librdkafka binding for Bun. Plain objects and promises; no pointer leaves this folder.
 */
export { Admin, type ClusterMetadata, type TopicSpec } from "./admin.ts";
export { Consumer, nextOffsets, type BatchOptions, type ConsumerOptions } from "./consumer.ts";
export { KafkaError } from "./errors.ts";
export { librdkafkaVersion } from "./ffi.ts";
export { MockCluster, ApiKey } from "./mock.ts";
export { Producer, type ProducerOptions } from "./producer.ts";
export { TransactionalProducer, type TransactionalOptions } from "./txn-producer.ts";
export type * from "./types.ts";
