/**
 * @module db/results
 * The `db-results` message: one `CommandResult` per command the db-worker processed.
 */
import type { CommandResult } from "../contracts.ts";
import type { OutgoingMessage } from "../kafka/types.ts";
import { encodeValue, SCHEMA_ID_HEADER, type ValueSchema } from "../schema/wire.ts";

/** A `db-results` message; with `schema` (a schema registry) labelled with its schema id. */
export function resultMessage(result: CommandResult, key: Uint8Array | null, topic: string, schema?: ValueSchema): OutgoingMessage {
  const headers: Record<string, string> = { "content-type": "application/json", "kitsune-id": result.id };
  if (schema) headers[SCHEMA_ID_HEADER] = schema.header;
  return { topic, key, value: encodeValue(JSON.stringify(result), schema), headers };
}
