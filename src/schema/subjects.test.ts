import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { buildOpenApi } from "../api/openapi.ts";
import { memoryLookup } from "../../test/fakes.ts";
import { parseCommandFile } from "../db/registry.ts";
import { commandPayloadSchema } from "../api/payload.ts";
import { commandSchema, commandSubjects, DRAFT_07, envelopeSchemas, envelopeSubjects, payloadJsonSchema, type JsonSchema } from "./subjects.ts";
import { describeChanges } from "./publish.ts";

const createUser = parseCommandFile(
  "sql/commands/create_user.v2.sql",
  "-- command: create_user\n-- version: 2\n-- key: email\n-- description: Register a user.\nINSERT INTO users (name, email, age) VALUES (:name, :email, :age::int);",
);

/** Every object schema in `schema` that lists properties, with its path. */
function objects(schema: JsonSchema, path = "$"): [string, JsonSchema][] {
  const out: [string, JsonSchema][] = [];
  if (schema.properties) {
    out.push([path, schema]);
    for (const [k, s] of Object.entries(schema.properties as Record<string, JsonSchema>)) out.push(...objects(s, `${path}.${k}`));
  }
  return out;
}

describe("command subjects", () => {
  test("named <prefix><command>.v<version>, sourced from the SQL file", () => {
    const [s] = commandSubjects([createUser], "kitsune.");
    expect(s).toMatchObject({ subject: "kitsune.create_user.v2", kind: "command", source: "sql/commands/create_user.v2.sql" });
    expect(commandSubjects([createUser], "t1.")[0]!.subject).toBe("t1.create_user.v2");
  });

  test("the schema is the payload OpenAPI shows, closed, every parameter required, titled", () => {
    const schema = commandSchema(createUser);
    expect(schema).toMatchObject({ $schema: DRAFT_07, title: "create_user v2", description: "Register a user.", additionalProperties: false });
    expect(schema.required).toEqual(["name", "email", "age"]);
    const doc = buildOpenApi(memoryLookup([createUser])) as any;
    const { description: _, ...shown } = doc.components.schemas.Execute_create_user_v2.properties.payload;
    expect(shown).toEqual(payloadJsonSchema(createUser));
    const { $schema: _s, title: _t, description: _d, ...published } = schema;
    expect(published).toEqual(shown);
  });

  test("it accepts what the api accepts on sample payloads (types from the casts)", () => {
    const schema = commandSchema(createUser) as { properties: Record<string, { anyOf: { type: string }[] }> };
    const types = (name: string) => JSON.stringify(schema.properties[name]);
    expect(types("age")).toContain('"integer"');
    expect(types("age")).toContain('"null"');
    expect(v.safeParse(commandPayloadSchema(createUser), { name: "a", email: "b", age: 3, extra: 1 }).success).toBe(false);
  });
});

describe("envelope subjects", () => {
  test("TopicNameStrategy with the configured topic names", () => {
    expect(envelopeSubjects({ events: "e1", logs: "l1", results: "r1" }).map((s) => s.subject)).toEqual(["e1-value", "l1-value", "r1-value"]);
    expect(envelopeSubjects({ events: "db-events", logs: "app-logs", results: "db-results" }).map((s) => s.subject)).toEqual([
      "db-events-value",
      "app-logs-value",
      "db-results-value",
    ]);
  });

  test("every object is closed except a command's payload, which is any object", () => {
    const { events, logs, results } = envelopeSchemas();
    for (const schema of [events, logs, results]) {
      expect(schema.$schema).toBe(DRAFT_07);
      for (const [path, obj] of objects(schema)) expect([path, obj.additionalProperties]).toEqual([path, false]);
    }
    expect((events.properties as any).payload).toMatchObject({ type: "object" });
    expect((events.properties as any).payload.additionalProperties).toBeUndefined();
    expect((logs.properties as any).level.enum).toEqual(["DEBUG", "INFO", "WARN", "ERROR", "FATAL"]);
    expect((results.properties as any).status.enum).toEqual(["applied", "duplicate", "failed"]);
    expect(results.required).not.toContain("error");
  });
});

describe("describeChanges", () => {
  const obj = (properties: Record<string, JsonSchema>, required: string[]) => ({ type: "object", properties, required, additionalProperties: false });
  test("added, removed, retyped, required or not", () => {
    const before = obj({ a: { type: "string" }, b: { type: "string" }, c: { type: "string" } }, ["a", "b"]);
    const after = obj({ a: { type: "integer" }, c: { type: "string" }, d: { type: "string" } }, ["a", "c", "d"]);
    expect(describeChanges(before, after)).toEqual([
      '"d" added (required)',
      '"a" changed from {"type":"string"} to {"type":"integer"}',
      '"b" removed',
      '"c" became required',
    ]);
    expect(describeChanges(before, before)).toEqual([]);
  });
});

describe("the envelopes describe what the producers write", () => {
  /** Keys only: every required key present, no key the schema does not list, nested objects too. */
  function fits(value: unknown, schema: JsonSchema, path = "$"): string[] {
    if (!schema.properties || typeof value !== "object" || value === null) return [];
    const props = schema.properties as Record<string, JsonSchema>;
    const problems: string[] = [];
    for (const k of (schema.required ?? []) as string[]) if (!(k in value)) problems.push(`${path}.${k} missing`);
    for (const [k, v] of Object.entries(value)) {
      if (!(k in props)) problems.push(`${path}.${k} not in the schema`);
      else problems.push(...fits(v, props[k]!, `${path}.${k}`));
    }
    return problems;
  }

  test("a command event, its log event and a failed result", async () => {
    const { buildEvents } = await import("../api/events.ts");
    const { command, log } = buildEvents({
      id: "0190",
      request: { command: "create_user", payload: { name: "a", email: "b", age: 1 }, metadata: { source: "s" } } as any,
      def: createUser,
      payload: { name: "a", email: "b", age: 1 },
      idempotencyKey: "k",
      now: new Date(0),
    });
    const { events, logs, results } = envelopeSchemas();
    expect(fits(command, events)).toEqual([]);
    expect(fits(log, logs)).toEqual([]);
    const result = { id: "0190", idempotency_key: "k", command: "c", version: "1", status: "failed", rows_affected: 0, error: { sqlstate: "23505", message: "dup" }, finished_at: "t" };
    expect(fits(result, results)).toEqual([]);
    expect(fits({ ...result, extra: 1 }, results)).toEqual(["$.extra not in the schema"]);
  });
});
