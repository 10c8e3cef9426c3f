/**
 * @module api/events
 * Pure decisions of `POST /execute`: from a validated request to the two Kafka messages
 * (`CommandEvent` on db-events, `LogEvent` on app-logs) and from delivery reports to the 202 body.
 */
import type { Accepted, CommandDef, CommandEvent, ExecuteRequest, LogEvent } from "../contracts.ts";
import type { DeliveryReport, OutgoingMessage } from "../kafka/types.ts";
import { encodeValue, SCHEMA_ID_HEADER, type ValueSchema } from "../schema/wire.ts";

/** `metadata.source` when the client names none. */
export const DEFAULT_SOURCE = "unknown";

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The header when it is a valid W3C `traceparent` (trace-context level 1), else undefined.
 * Version 00 allows nothing after the flags; later versions may append fields.
 */
export function validTraceparent(header: string | null | undefined): string | undefined {
  if (!header || header.length > 512) return undefined;
  const value = header.trim();
  const m = TRACEPARENT.exec(value);
  if (!m) return undefined;
  const [, version, traceId, parentId, , rest] = m;
  if (version === "ff" || /^0+$/.test(traceId!) || /^0+$/.test(parentId!)) return undefined;
  if (version === "00" && rest !== undefined) return undefined;
  return value;
}

export interface ExecuteInput {
  id: string;
  request: ExecuteRequest;
  def: CommandDef;
  /** The payload after validation against `def`'s parameters. */
  payload: Record<string, unknown>;
  idempotencyKey: string;
  now: Date;
  traceparent?: string;
}

export function buildEvents({ id, request, def, payload, idempotencyKey, now }: ExecuteInput): {
  command: CommandEvent;
  log: LogEvent;
} {
  const timestamp = now.toISOString();
  const source = request.metadata?.source ?? DEFAULT_SOURCE;
  return {
    command: {
      id,
      command: def.command,
      version: def.version,
      payload,
      metadata: { idempotency_key: idempotencyKey, timestamp, source },
    },
    log: {
      id,
      level: request.log?.level ?? "INFO",
      message: request.log?.message ?? `execute ${def.command} v${def.version}`,
      command: def.command,
      source,
      timestamp,
      idempotency_key: idempotencyKey,
    },
  };
}

/** The registry's key field when the payload has a usable value there, else the idempotency key. */
export function partitionKey(def: CommandDef, payload: Record<string, unknown>, idempotencyKey: string): string {
  if (def.key !== undefined && Object.hasOwn(payload, def.key)) {
    const value = payload[def.key];
    if (typeof value === "string" && value !== "") return value;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    if (value !== null && value !== undefined && typeof value === "object") return JSON.stringify(value);
  }
  return idempotencyKey;
}

export interface Topics {
  events: string;
  logs: string;
}

/** The schema ids of the api's events, resolved once at start-up (`SCHEMA_REGISTRY_URL`). */
export interface EventSchemas {
  events: ValueSchema;
  logs: ValueSchema;
  /** The id of each command version's payload schema, as header text. */
  payloads: Map<CommandDef, string>;
}

export const PAYLOAD_SCHEMA_ID_HEADER = "kitsune-payload-schema-id";

/** `[db-events message, app-logs message]`, in that order. */
export function buildMessages(input: ExecuteInput, topics: Topics, schemas?: EventSchemas): OutgoingMessage[] {
  const { command, log } = buildEvents(input);
  const headers: Record<string, string> = { "content-type": "application/json", "kitsune-id": input.id };
  if (input.traceparent) headers.traceparent = input.traceparent;
  if (schemas) return labelledMessages(input, topics, schemas, command, log, headers);
  return [
    {
      topic: topics.events,
      key: partitionKey(input.def, input.payload, input.idempotencyKey),
      value: JSON.stringify(command),
      headers,
    },
    // NOTE: app-logs is unkeyed on purpose (DESIGN.md, Topics): log order across commands does not matter.
    // NOTE: both messages share one headers object; sinks only read it.
    { topic: topics.logs, key: null, value: JSON.stringify(log), headers },
  ];
}

/** As `buildMessages`, each value with its schema id (header, and the Confluent prefix when configured). */
function labelledMessages(
  input: ExecuteInput,
  topics: Topics,
  schemas: EventSchemas,
  command: CommandEvent,
  log: LogEvent,
  headers: Record<string, string>,
): OutgoingMessage[] {
  const commandHeaders: Record<string, string> = { ...headers, [SCHEMA_ID_HEADER]: schemas.events.header };
  const payloadId = schemas.payloads.get(input.def);
  if (payloadId !== undefined) commandHeaders[PAYLOAD_SCHEMA_ID_HEADER] = payloadId;
  return [
    {
      topic: topics.events,
      key: partitionKey(input.def, input.payload, input.idempotencyKey),
      value: encodeValue(JSON.stringify(command), schemas.events),
      headers: commandHeaders,
    },
    {
      topic: topics.logs,
      key: null,
      value: encodeValue(JSON.stringify(log), schemas.logs),
      headers: { ...headers, [SCHEMA_ID_HEADER]: schemas.logs.header },
    },
  ];
}

/**
 * The 202 body. Reports are matched to messages by position, which `MessageSink.sendAll` keeps;
 * a report for another topic than expected means the sink broke that promise.
 */
export function acceptedBody(id: string, idempotencyKey: string, messages: OutgoingMessage[], reports: DeliveryReport[]): Accepted {
  if (reports.length !== messages.length) {
    throw new Error(`sink returned ${reports.length} delivery reports for ${messages.length} messages`);
  }
  const events: Accepted["events"] = {};
  messages.forEach((message, i) => {
    const report = reports[i]!;
    if (report.topic !== message.topic) {
      throw new Error(`delivery report ${i} is for topic ${report.topic}, expected ${message.topic}`);
    }
    events[message.topic] = { partition: report.partition, offset: report.offset };
  });
  return { id, idempotency_key: idempotencyKey, status: "accepted", events };
}
