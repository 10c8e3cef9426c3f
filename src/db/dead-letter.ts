/**
 * @module db/dead-letter
 * The dead-letter and result messages the db-worker publishes: the original key and value bytes
 * with the error context in headers, and one `CommandResult` per command on `db-results`.
 */
import type { CommandResult } from "../contracts.ts";
import type { Message, OutgoingMessage } from "../kafka/types.ts";
import { encodeValue, SCHEMA_ID_HEADER, type ValueSchema } from "../schema/wire.ts";

/** Header names on dead letters; `kitsune dlq list` and `replay` read them back. */
export const DLQ_HEADERS = {
  error: "kitsune-error",
  sqlstate: "kitsune-sqlstate",
  topic: "kitsune-original-topic",
  partition: "kitsune-original-partition",
  offset: "kitsune-original-offset",
  attempts: "kitsune-attempts",
  firstFailure: "kitsune-first-failure",
  lastFailure: "kitsune-last-failure",
} as const;

export interface Failure {
  error: string;
  sqlstate?: string;
  attempts: number;
  firstFailure: Date;
  lastFailure: Date;
}

export function deadLetter(message: Message, dlqTopic: string, failure: Failure): OutgoingMessage {
  const headers: Record<string, string> = {
    ...message.headers,
    [DLQ_HEADERS.error]: failure.error.slice(0, 4000),
    [DLQ_HEADERS.topic]: message.topic,
    [DLQ_HEADERS.partition]: String(message.partition),
    [DLQ_HEADERS.offset]: String(message.offset),
    [DLQ_HEADERS.attempts]: String(failure.attempts),
    [DLQ_HEADERS.firstFailure]: failure.firstFailure.toISOString(),
    [DLQ_HEADERS.lastFailure]: failure.lastFailure.toISOString(),
  };
  if (failure.sqlstate) headers[DLQ_HEADERS.sqlstate] = failure.sqlstate;
  return { topic: dlqTopic, key: message.key, value: message.value, headers };
}

/** A `db-results` message; with `schema` (a schema registry) labelled with its schema id. */
export function resultMessage(result: CommandResult, key: Uint8Array | null, topic: string, schema?: ValueSchema): OutgoingMessage {
  const headers: Record<string, string> = { "content-type": "application/json", "kitsune-id": result.id };
  if (schema) headers[SCHEMA_ID_HEADER] = schema.header;
  return { topic, key, value: encodeValue(JSON.stringify(result), schema), headers };
}
