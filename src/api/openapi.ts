/**
 * @module api/openapi
 * `GET /openapi.json` (the page of `GET /docs` is in docs.ts). The document is generated from the valibot contracts and
 * the registry's commands (one request schema per command version, from its parameters), once,
 * when the app is built: the registry does not change while the process runs.
 */
import { toJsonSchema, type JsonSchema } from "@valibot/to-json-schema";
import type * as v from "valibot";
import pkg from "../../package.json" with { type: "json" };
import {
  AcceptedSchema,
  CommandResultSchema,
  CommandStatusSchema,
  ExecuteRequestSchema,
  IDEMPOTENCY_KEY_MAX,
  LOG_LEVELS,
  ProblemSchema,
  type CommandDef,
  type CommandLookup,
} from "../contracts.ts";
import { payloadJsonSchema } from "../schema/subjects.ts";
import { PROBLEMS, problemType, type ProblemCode } from "./problems.ts";
import { MAX_WAIT_MS } from "./results.ts";

type Json = Record<string, unknown>;

/**
 * JSON Schema of what a client sends. NOTE: errorMode "ignore" because the contracts normalise
 * input (trim, upper-case, number → string) and those steps have no JSON Schema; the document
 * describes the accepted input, which is what a client needs.
 */
function jsonSchema(schema: v.GenericSchema): Json {
  const out = toJsonSchema(schema, { target: "draft-2020-12", typeMode: "input", errorMode: "ignore" }) as Json;
  delete out.$schema;
  return out;
}

function envelopeSchema(): Json {
  const schema = jsonSchema(ExecuteRequestSchema);
  const props = schema.properties as Record<string, Json>;
  const log = props.log as { properties: Record<string, Json> };
  log.properties.level = {
    type: "string",
    default: "INFO",
    description: `One of ${LOG_LEVELS.join(", ")}, in any case.`,
    examples: ["INFO"],
  };
  props.version = { ...props.version, description: "Defaults to the newest registered version.", examples: ["1"] };
  // NOTE: the contract refuses arrays before its record() (see contracts.ts), which leaves no input type to convert.
  props.payload = { type: "object", additionalProperties: {}, description: "The command's parameters by name." };
  props.log = { ...log, description: "Defaults to an INFO line naming the command." };
  props.metadata = {
    ...props.metadata,
    description:
      "idempotency_key defaults to the Idempotency-Key header, else to the generated id; source defaults to \"unknown\".",
  };
  return schema;
}

/** The request schema of one command version: the envelope with its command, version and payload fixed. */
function commandRequestSchema(def: CommandDef, newest: boolean): Json {
  const envelope = envelopeSchema();
  const props = envelope.properties as Record<string, Json>;
  props.command = { const: def.command };
  props.version = {
    enum: [def.version, Number(def.version)],
    description: newest ? "Optional: this is the newest version." : "Required: not the newest version.",
  };
  // NOTE: the very schema published to the schema registry as the command version's subject.
  props.payload = {
    ...payloadJsonSchema(def),
    description: def.key ? `Partitioned by payload.${def.key}.` : "Partitioned by the idempotency key.",
  };
  const required = envelope.required as string[];
  if (!newest) required.push("version");
  return {
    title: `${def.command} v${def.version}`,
    ...(def.description ? { description: def.description } : {}),
    ...envelope,
  };
}

function problemSchema(): Json {
  const schema = jsonSchema(ProblemSchema);
  (schema.properties as Record<string, Json>).code = {
    type: "string",
    enum: Object.keys(PROBLEMS),
    description: "Machine-readable problem code; `type` is urn:kitsune:problem:<code>.",
  };
  return schema;
}

const problemRef = { $ref: "#/components/schemas/Problem" };

function problemAnswer(description: string, codes: ProblemCode[], extraHeaders: Json = {}, instance = "/execute"): Json {
  return {
    description: `${description} Codes: ${codes.map((c) => `\`${c}\``).join(", ")}.`,
    headers: extraHeaders,
    content: {
      "application/problem+json": {
        schema: problemRef,
        examples: Object.fromEntries(
          codes.map((code) => [
            code,
            { value: { type: problemType(code), title: PROBLEMS[code].title, status: PROBLEMS[code].status, code, detail: "…", instance, request_id: "0190…" } },
          ]),
        ),
      },
    },
  };
}

export const schemaName = (def: CommandDef) => `Execute_${def.command}_v${def.version}`;

export function buildOpenApi(commands: CommandLookup): Json {
  const defs = commands.list();
  const id = (d: CommandDef) => `${d.command}@${d.version}`;
  const newest = new Set(defs.map((d) => commands.get(d.command)).filter((d) => d !== undefined).map(id));
  const schemas: Record<string, Json> = {
    ExecuteRequest: envelopeSchema(),
    Accepted: jsonSchema(AcceptedSchema),
    CommandResult: jsonSchema(CommandResultSchema),
    CommandStatus: jsonSchema(CommandStatusSchema),
    Problem: problemSchema(),
  };
  for (const def of defs) schemas[schemaName(def)] = commandRequestSchema(def, newest.has(id(def)));
  const requestSchema = defs.length
    ? { oneOf: defs.map((def) => ({ $ref: `#/components/schemas/${schemaName(def)}` })) }
    : { $ref: "#/components/schemas/ExecuteRequest" };
  const example = defs.find((d) => d.command === "create_user") ?? defs[0];

  return {
    openapi: "3.1.0",
    info: {
      title: "Kitsune",
      version: pkg.version,
      description:
        "HTTP-to-Kafka command gateway. `POST /execute` validates a command against the SQL registry and answers 202 " +
        "once the broker has acknowledged both its db-events and app-logs events.\n\nRegistered commands:\n" +
        (defs.length
          ? defs.map((d) => `- \`${d.command}\` v${d.version}: ${d.description || "(no description)"} — payload: ${d.params.map((p) => `${p.name} (${p.type})`).join(", ") || "none"}`).join("\n")
          : "- none"),
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas,
    },
    paths: {
      "/execute": {
        post: {
          operationId: "execute",
          summary: "Submit a command",
          security: [{ bearer: [] }],
          parameters: [
            {
              name: "Idempotency-Key",
              in: "header",
              required: false,
              schema: { type: "string", minLength: 1, maxLength: IDEMPOTENCY_KEY_MAX },
              description: "Same as metadata.idempotency_key; when both are sent they must be equal.",
            },
            {
              name: "traceparent",
              in: "header",
              required: false,
              schema: { type: "string" },
              description: "W3C trace context, copied onto both Kafka messages when valid.",
            },
            {
              name: "wait",
              in: "query",
              required: false,
              schema: { type: "integer", minimum: 0, maximum: MAX_WAIT_MS },
              description:
                `Milliseconds (at most ${MAX_WAIT_MS}, counted from the request's arrival) to wait for the command's result ` +
                "from the db-worker: 200 with the CommandResult when it comes in time, else 202 as without it.",
            },
          ],
          requestBody: {
            required: true,
            content: {
              "application/json": {
                schema: requestSchema,
                ...(example
                  ? {
                      example: {
                        command: example.command,
                        version: example.version,
                        payload: Object.fromEntries(example.params.map((p) => [p.name, exampleValue(p.type, p.name)])),
                        log: { level: "INFO", message: `${example.command} triggered` },
                        metadata: { idempotency_key: "7f1c1e7e-2f53-4a55-9d1b-3b0b8f0c2a11", source: "user-service" },
                      },
                    }
                  : {}),
              },
            },
          },
          responses: {
            "200": {
              description: "With `?wait=`: the command's result, which came within the wait.",
              content: { "application/json": { schema: { $ref: "#/components/schemas/CommandResult" } } },
            },
            "202": {
              description: "Both events are durably on the broker.",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Accepted" } } },
            },
            "400": problemAnswer("Malformed or too deeply nested JSON.", ["malformed_json", "nesting_too_deep"]),
            "401": problemAnswer("Missing or invalid bearer token.", ["unauthorized"], {
              "WWW-Authenticate": { schema: { type: "string" } },
            }),
            "413": problemAnswer("Body larger than MAX_BODY_BYTES.", ["payload_too_large"]),
            "415": problemAnswer("Content type is not application/json.", ["unsupported_media_type"]),
            "422": problemAnswer("The command is unknown or the body does not match it.", [
              "invalid_request",
              "unknown_command",
              "unknown_version",
              "invalid_payload",
              "idempotency_key_conflict",
            ]),
            "503": problemAnswer(
              "The broker did not take the write; retry later with the same idempotency key.",
              ["broker_unavailable"],
              { "Retry-After": { schema: { type: "integer" } } },
            ),
          },
        },
      },
      "/commands/{id}": {
        get: {
          operationId: "getCommand",
          summary: "What became of an accepted command",
          description:
            "The db-worker's outcome from PostgreSQL: `applied` or `failed` with its row count or error once it has the " +
            "command, `pending` until then (an id that was never accepted looks the same).",
          security: [{ bearer: [] }],
          parameters: [
            { name: "id", in: "path", required: true, schema: { type: "string", format: "uuid" }, description: "The id of the 202 answer." },
          ],
          responses: {
            "200": {
              description: "The command's status.",
              content: { "application/json": { schema: { $ref: "#/components/schemas/CommandStatus" } } },
            },
            "401": problemAnswer("Missing or invalid bearer token.", ["unauthorized"], { "WWW-Authenticate": { schema: { type: "string" } } }, "/commands/{id}"),
            "404": problemAnswer("The id is not a UUID.", ["not_found"], {}, "/commands/{id}"),
            "503": problemAnswer("PostgreSQL did not answer; retry later.", ["database_unavailable"], { "Retry-After": { schema: { type: "integer" } } }, "/commands/{id}"),
          },
        },
      },
    },
  };
}

function exampleValue(type: CommandDef["params"][number]["type"], name: string): unknown {
  switch (type) {
    case "integer":
      return 42;
    case "numeric":
      return 9.99;
    case "boolean":
      return true;
    case "json":
      return { any: "json" };
    case "uuid":
      return "0190c0de-0000-7000-8000-000000000000";
    case "timestamp":
      return "2024-05-01T12:00:00Z";
    default:
      return name === "email" ? "sahil@example.com" : name === "name" ? "Sahil" : `example ${name}`;
  }
}
