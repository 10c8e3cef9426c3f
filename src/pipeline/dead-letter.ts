/**
 * @module pipeline/dead-letter
 * The dead letter of a message either worker gives up on: the original key and value bytes and
 * headers, with the error context in `kitsune-*` headers. `kitsune dlq list` and `replay` read
 * them back.
 */
import type { Message, OutgoingMessage } from "../kafka/types.ts";

/** Header names on dead letters. */
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

/** Longest `kitsune-error` header, in characters; a longer error ends in `…`. */
export const MAX_ERROR_HEADER = 2048;

export interface Failure {
  error: string;
  sqlstate?: string;
  attempts: number;
  firstFailure: Date;
  lastFailure: Date;
}

export function deadLetter(message: Message, dlqTopic: string, failure: Failure): OutgoingMessage {
  const { error } = failure;
  const headers: Record<string, string> = {
    ...message.headers,
    // NOTE: the value is the original bytes, so it keeps the original content type.
    "content-type": message.headers["content-type"] ?? "application/octet-stream",
    [DLQ_HEADERS.error]: error.length > MAX_ERROR_HEADER ? `${error.slice(0, MAX_ERROR_HEADER - 1)}…` : error,
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
