/**
 * @module contracts
 * One valibot schema per wire contract of DESIGN.md; the TypeScript types come from the schemas.
 * The api, both workers and the OpenAPI document all use these.
 */
import * as v from "valibot";

export const LOG_LEVELS = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"] as const;

/** Case-insensitive on input, upper-case on output. */
export const LogLevelSchema = v.pipe(
  v.string(),
  v.toUpperCase(),
  v.picklist(LOG_LEVELS, `expected one of ${LOG_LEVELS.join(", ")} (any case)`),
);

const name = (what: string, max = 128) =>
  v.pipe(v.string(`expected ${what} as a string`), v.trim(), v.nonEmpty(`expected a non-empty ${what}`), v.maxLength(max));

/** Versions are strings on the wire; a bare number (`"version": 1`) is accepted too. */
export const VersionSchema = v.pipe(
  v.union([v.string(), v.pipe(v.number(), v.integer())], "expected the version as a string such as \"1\""),
  v.transform(String),
  v.regex(/^[1-9][0-9]{0,8}$/, "expected a positive whole version number such as \"1\""),
);

/**
 * A JSON object with any members. NOTE: valibot's `record()` alone also takes an array (and
 * outputs it as `{"0": …}`), which no command's payload can be; so arrays are refused first.
 */
const jsonObject = (message = "expected a JSON object") =>
  v.pipe(
    v.unknown(),
    v.check((value) => !Array.isArray(value), message),
    v.record(v.string(), v.unknown(), message),
  );

/** Longest idempotency key, in the body (`metadata.idempotency_key`) or the `Idempotency-Key` header. */
export const IDEMPOTENCY_KEY_MAX = 256;

/** `POST /execute` body. */
export const ExecuteRequestSchema = v.strictObject({
  command: v.pipe(name("command"), v.regex(/^[a-z][a-z0-9_]*$/, "expected a command name such as create_user")),
  version: v.optional(VersionSchema),
  payload: jsonObject("expected the payload as a JSON object"),
  log: v.optional(
    v.strictObject({
      level: v.optional(LogLevelSchema, "INFO"),
      message: v.pipe(v.string(), v.maxLength(8192)),
    }),
  ),
  metadata: v.optional(
    v.object({
      idempotency_key: v.optional(name("idempotency key", IDEMPOTENCY_KEY_MAX)),
      source: v.optional(name("source")),
    }),
  ),
});
export type ExecuteRequest = v.InferOutput<typeof ExecuteRequestSchema>;

/** `db-events` value. */
export const CommandEventSchema = v.object({
  id: v.string(),
  command: v.string(),
  version: v.string(),
  payload: jsonObject(),
  metadata: v.object({
    idempotency_key: v.pipe(v.string(), v.nonEmpty()),
    /** ISO 8601, when the api accepted the command. */
    timestamp: v.string(),
    source: v.string(),
  }),
});
export type CommandEvent = v.InferOutput<typeof CommandEventSchema>;

/** `app-logs` value. */
export const LogEventSchema = v.object({
  id: v.string(),
  level: LogLevelSchema,
  message: v.string(),
  command: v.string(),
  source: v.string(),
  /** ISO 8601. */
  timestamp: v.string(),
  idempotency_key: v.string(),
});
export type LogEvent = v.InferOutput<typeof LogEventSchema>;

export const RESULT_STATUSES = ["applied", "duplicate", "failed"] as const;

/** `db-results` value. */
export const CommandResultSchema = v.object({
  id: v.string(),
  idempotency_key: v.string(),
  command: v.string(),
  version: v.string(),
  status: v.picklist(RESULT_STATUSES),
  rows_affected: v.number(),
  error: v.optional(v.object({ sqlstate: v.string(), message: v.string() })),
  /** ISO 8601. */
  finished_at: v.string(),
});
export type CommandResult = v.InferOutput<typeof CommandResultSchema>;

/**
 * `GET /commands/:id` body: the db-worker's outcome from `idempotency_log` once it has the
 * command, `pending` until then (or when the id was never accepted: the two look alike).
 */
export const CommandStatusSchema = v.variant("status", [
  v.object({ id: v.string(), status: v.literal("pending") }),
  /** Its idempotency key was processed before, by `original_id`: this command had no effect. */
  v.object({
    id: v.string(),
    status: v.literal("duplicate"),
    idempotency_key: v.string(),
    /** The command that was applied (or failed) under the key; null once its row was pruned. */
    original_id: v.nullable(v.string()),
    /** ISO 8601: when the duplicate was found. */
    processed_at: v.string(),
  }),
  v.object({
    id: v.string(),
    status: v.picklist(["applied", "failed"]),
    idempotency_key: v.string(),
    command: v.nullable(v.string()),
    version: v.nullable(v.string()),
    rows_affected: v.nullable(v.number()),
    error: v.nullable(v.object({ sqlstate: v.optional(v.string()), message: v.string() })),
    /** ISO 8601. */
    processed_at: v.string(),
  }),
]);
export type CommandStatus = v.InferOutput<typeof CommandStatusSchema>;

/** `202 Accepted` body of `POST /execute`. */
export const AcceptedSchema = v.object({
  id: v.string(),
  idempotency_key: v.string(),
  status: v.literal("accepted"),
  events: v.record(v.string(), v.object({ partition: v.number(), offset: v.number() })),
});
export type Accepted = v.InferOutput<typeof AcceptedSchema>;

/** RFC 9457 problem details, the body of every error answer. */
export const ProblemSchema = v.object({
  type: v.string(),
  title: v.string(),
  status: v.number(),
  detail: v.string(),
  instance: v.string(),
  request_id: v.string(),
  errors: v.optional(v.array(v.object({ path: v.string(), message: v.string() }))),
});
export type Problem = v.InferOutput<typeof ProblemSchema>;

/**
 * A parameter's type, taken from its cast in the SQL file (`:age::int` → "integer"); a parameter
 * without a cast takes any JSON scalar (`"scalar"`), one cast to json/jsonb takes any JSON value.
 */
export type ParamType = "scalar" | "text" | "integer" | "numeric" | "boolean" | "json" | "uuid" | "timestamp";

/** One command version from the SQL registry (`sql/commands/<command>.v<version>.sql`). */
export interface CommandDef {
  command: string;
  version: string;
  description: string;
  /** The payload field whose value is the Kafka partition key, from `-- key:`. */
  key?: string;
  /** Named parameters in order of their `$n` position (`params[0]` is `$1`). */
  params: { name: string; type: ParamType }[];
  /** The statement with `:name` replaced by `$n`. */
  sql: string;
  file: string;
}

/** What the api needs of the registry. */
export interface CommandLookup {
  /** `version` undefined → the newest registered version. */
  get(command: string, version?: string): CommandDef | undefined;
  list(): CommandDef[];
}
