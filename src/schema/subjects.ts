/**
 * @module schema/subjects
 * What Kitsune publishes to a schema registry, without I/O: one JSON Schema per command version
 * (its payload: the very schema the api validates with and OpenAPI shows) under
 * `<prefix><command>.v<version>`, and one per topic's event envelope under `<topic>-value`
 * (Confluent's TopicNameStrategy).
 *
 * NOTE: every object is closed (`additionalProperties: false`) except a command event's payload,
 * whose shape is the command's own subject. Closed schemas are what lets an optional property be
 * added under BACKWARD: a registry must assume an open schema's old data may already hold any new
 * property (Confluent's rule), and Apicurio refuses even an optional one then.
 *
 * @example
 * ```ts
 * commandSubjects(registry.list(), "kitsune.");  // [{ subject: "kitsune.create_user.v1", schema, file }, …]
 * envelopeSubjects(config.topics);              // [{ subject: "db-events-value", topic: "db-events", schema }, …]
 * ```
 */
import { toJsonSchema } from "@valibot/to-json-schema";
import type * as v from "valibot";
import { CommandEventSchema, CommandResultSchema, LOG_LEVELS, LogEventSchema, RESULT_STATUSES, type CommandDef } from "../contracts.ts";
import { commandPayloadSchema } from "../api/payload.ts";

export type JsonSchema = Record<string, unknown>;

export const DRAFT_07 = "http://json-schema.org/draft-07/schema#";

/** One schema to publish and where its definition came from, for error messages. */
export interface Subject {
  subject: string;
  kind: "command" | "event";
  schema: JsonSchema;
  /** The SQL file of a command version; the topic of an envelope. */
  source: string;
}

/**
 * A valibot contract as JSON Schema (draft-07, what every Confluent-compatible registry reads).
 * NOTE: errorMode "ignore": the contracts normalise input (trim, upper-case, number → string) and
 * those steps have no JSON Schema; what remains describes the accepted input.
 */
export function jsonSchema(schema: v.GenericSchema): JsonSchema {
  return toJsonSchema(schema, { target: "draft-07", typeMode: "input", errorMode: "ignore" }) as JsonSchema;
}

/** The payload schema of one command version, closed: every parameter required, no other field. */
export function payloadJsonSchema(def: CommandDef): JsonSchema {
  const { $schema: _, ...schema } = jsonSchema(commandPayloadSchema(def));
  return schema;
}

export const commandSubject = (def: CommandDef, prefix: string) => `${prefix}${def.command}.v${def.version}`;

/** The registry's schema of one command version: its payload with a title and the file's description. */
export function commandSchema(def: CommandDef): JsonSchema {
  return {
    $schema: DRAFT_07,
    title: `${def.command} v${def.version}`,
    ...(def.description ? { description: def.description } : {}),
    ...payloadJsonSchema(def),
  };
}

export function commandSubjects(defs: CommandDef[], prefix: string): Subject[] {
  return defs.map((def) => ({ subject: commandSubject(def, prefix), kind: "command", schema: commandSchema(def), source: def.file }));
}

/** Adds `additionalProperties: false` to every object schema that lists its properties and says nothing else. */
function closed(schema: JsonSchema): JsonSchema {
  const out: JsonSchema = { ...schema };
  if (out.properties && typeof out.properties === "object") {
    out.properties = Object.fromEntries(Object.entries(out.properties as Record<string, JsonSchema>).map(([k, s]) => [k, closed(s)]));
    if (!("additionalProperties" in out)) out.additionalProperties = false;
  }
  return out;
}

function envelope(schema: v.GenericSchema, title: string, patch: (props: Record<string, JsonSchema>) => void): JsonSchema {
  const out = closed(jsonSchema(schema));
  patch(out.properties as Record<string, JsonSchema>);
  return { $schema: DRAFT_07, title, ...out };
}

/** The value schemas of the three topics, as their producers write them. */
export function envelopeSchemas() {
  return {
    events: envelope(CommandEventSchema, "Kitsune command event", (p) => {
      p.payload = { type: "object", description: "The command's parameters; their schema is the command version's own subject." };
    }),
    logs: envelope(LogEventSchema, "Kitsune log event", (p) => {
      p.level = { type: "string", enum: [...LOG_LEVELS] };
    }),
    results: envelope(CommandResultSchema, "Kitsune command result", (p) => {
      p.status = { type: "string", enum: [...RESULT_STATUSES] };
    }),
  };
}

/** TopicNameStrategy: the value schema of topic `t` is subject `t-value`. */
export const valueSubject = (topic: string) => `${topic}-value`;

export function envelopeSubjects(topics: { events: string; logs: string; results: string }): Subject[] {
  const schemas = envelopeSchemas();
  return (["events", "logs", "results"] as const).map((k) => ({
    subject: valueSubject(topics[k]),
    kind: "event",
    schema: schemas[k],
    source: `topic ${topics[k]}`,
  }));
}
