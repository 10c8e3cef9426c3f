/**
 * @module config
 * The whole configuration of every role, parsed once from the environment with one valibot schema.
 * A bad or missing value stops the process with a list of every problem (see `ConfigError`).
 */
import * as v from "valibot";
import { WIRE_FORMATS, type WireFormat } from "./schema/wire.ts";

export const ROLES = ["api", "log-worker", "db-worker", "all"] as const;
export type Role = (typeof ROLES)[number];

/** Variables whose values are never echoed in error messages. */
const SECRETS = new Set(["API_TOKENS", "LOKI_PASSWORD", "POSTGRES_DSN", "RDKAFKA_SASL_PASSWORD", "SCHEMA_REGISTRY_PASSWORD", "SCHEMA_REGISTRY_TOKEN"]);
/** Variables that may carry `user:password@` (shown with the password masked). */
const URLS_WITH_CREDENTIALS = new Set(["SCHEMA_REGISTRY_URL"]);

/** Compatibility levels of the Confluent schema registry API. */
export const COMPATIBILITY_LEVELS = [
  "BACKWARD",
  "BACKWARD_TRANSITIVE",
  "FORWARD",
  "FORWARD_TRANSITIVE",
  "FULL",
  "FULL_TRANSITIVE",
  "NONE",
] as const;
export type Compatibility = (typeof COMPATIBILITY_LEVELS)[number];

const compatibility = (fallback: Compatibility) =>
  v.optional(
    v.pipe(v.string(), v.trim(), v.toUpperCase(), v.picklist(COMPATIBILITY_LEVELS, `expected one of ${COMPATIBILITY_LEVELS.join(", ")}`)),
    fallback,
  );

const bool = (fallback: boolean) =>
  v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.toLowerCase(),
      v.picklist(["true", "false", "1", "0", "yes", "no"], "expected true or false"),
      v.transform((s) => s === "true" || s === "1" || s === "yes"),
    ),
    String(fallback),
  );

const int = (fallback: number, min: number, max: number) =>
  v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.regex(/^\d+$/, "expected a whole number"),
      v.transform(Number),
      v.minValue(min, `expected at least ${min}`),
      v.maxValue(max, `expected at most ${max}`),
    ),
    String(fallback),
  );

const url = (fallback: string) =>
  v.optional(v.pipe(v.string(), v.trim(), v.url("expected a URL such as http://host:port")), fallback);

const nonEmpty = (fallback: string, what: string) =>
  v.optional(v.pipe(v.string(), v.trim(), v.nonEmpty(`expected ${what}`)), fallback);

const optionalString = v.optional(
  v.pipe(
    v.string(),
    v.transform((s): string | undefined => (s.trim() === "" ? undefined : s.trim())),
  ),
);

const topic = (fallback: string) =>
  v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^[a-zA-Z0-9._-]{1,249}$/, "expected a Kafka topic name (letters, digits, . _ -)")),
    fallback,
  );

const brokers = v.optional(v.pipe(
  v.string(),
  v.trim(),
  v.nonEmpty("expected a comma-separated list of host:port"),
  v.transform((s) => s.split(",").map((b) => b.trim()).filter(Boolean)),
  v.check(
    (list) => list.length > 0 && list.every((b) => /^[^\s:,]+:\d{1,5}$/.test(b) || /^\[[0-9a-f:]+\]:\d{1,5}$/i.test(b)),
    "expected a comma-separated list of host:port",
  ),
), "localhost:9092");

export const EnvSchema = v.object({
  // NOTE: an empty default, so a missing ROLE fails the picklist with its message (valibot's own
  // message for a missing key names no choices).
  ROLE: v.optional(v.pipe(v.string(), v.trim(), v.picklist(ROLES, `expected one of ${ROLES.join(", ")}`)), ""),
  HTTP_PORT: int(8080, 0, 65535),
  KAFKA_BROKERS: brokers,
  KAFKA_GROUP_ID: optionalString,
  POSTGRES_DSN: v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^postgres(ql)?:\/\//, "expected a postgres:// connection URL")),
    "postgres://kitsune:kitsune@localhost:5432/kitsune",
  ),
  LOKI_URL: url("http://localhost:3100"),
  LOKI_TENANT: optionalString,
  LOKI_USERNAME: optionalString,
  LOKI_PASSWORD: optionalString,
  SQL_DIR: nonEmpty("./sql", "a directory path"),
  TOPIC_LOGS: topic("app-logs"),
  TOPIC_EVENTS: topic("db-events"),
  TOPIC_RESULTS: topic("db-results"),
  API_TOKENS: v.optional(
    v.pipe(
      v.string(),
      v.transform((s) => s.split(",").map((t) => t.trim()).filter(Boolean)),
    ),
    "",
  ),
  AUTH_DISABLED: bool(false),
  MAX_BODY_BYTES: int(65536, 1, 64 * 1024 * 1024),
  KAFKA_TRANSACTIONS: bool(true),
  KAFKA_TXN_LANES: int(3, 1, 16),
  // Unset or empty: no schema registry.
  SCHEMA_REGISTRY_URL: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.check((s) => s === "" || URL.canParse(s) && /^https?:$/.test(new URL(s).protocol), "expected an http(s) URL such as http://localhost:8081"),
    ),
    "",
  ),
  SCHEMA_REGISTRY_USERNAME: optionalString,
  SCHEMA_REGISTRY_PASSWORD: optionalString,
  SCHEMA_REGISTRY_TOKEN: optionalString,
  SCHEMA_SUBJECT_PREFIX: v.optional(
    v.pipe(v.string(), v.trim(), v.regex(/^[a-zA-Z0-9._-]{0,200}$/, "expected letters, digits, . _ - (e.g. kitsune.)")),
    "kitsune.",
  ),
  SCHEMA_COMPATIBILITY_COMMANDS: compatibility("FULL_TRANSITIVE"),
  SCHEMA_COMPATIBILITY_EVENTS: compatibility("BACKWARD"),
  SCHEMA_WIRE_FORMAT: v.optional(
    v.pipe(v.string(), v.trim(), v.toLowerCase(), v.picklist(WIRE_FORMATS, `expected one of ${WIRE_FORMATS.join(", ")}`)),
    "json",
  ),
  LOG_LEVEL: v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.toLowerCase(),
      v.picklist(["trace", "debug", "info", "warn", "error", "fatal", "silent"], "expected one of debug, info, warn, error"),
    ),
    "info",
  ),
});

export type Env = v.InferOutput<typeof EnvSchema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** `RDKAFKA_SECURITY_PROTOCOL=sasl_ssl` → `{ "security.protocol": "sasl_ssl" }`. */
export function rdkafkaOverrides(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("RDKAFKA_") || value === undefined) continue;
    const key = name.slice("RDKAFKA_".length).toLowerCase().replaceAll("_", ".");
    if (key) out[key] = value;
  }
  return out;
}

/**
 * The environment in the shape the roles read, with the checks across variables (which throw
 * `ConfigError`). `kafka.overrides` is filled by `loadConfig` from the `RDKAFKA_*` variables.
 */
function toConfig(e: Env) {
  if (e.ROLE !== "log-worker" && e.ROLE !== "db-worker" && e.API_TOKENS.length === 0 && !e.AUTH_DISABLED) {
    throw new ConfigError([
      "API_TOKENS=unset: the api needs at least one bearer token (or AUTH_DISABLED=true to run without auth)",
    ]);
  }
  return {
    role: e.ROLE,
    httpPort: e.HTTP_PORT,
    kafka: {
      brokers: e.KAFKA_BROKERS,
      /** librdkafka properties from `RDKAFKA_*` variables, applied before our safety keys. */
      overrides: {} as Record<string, string>,
      groupId: e.KAFKA_GROUP_ID,
      transactions: e.KAFKA_TRANSACTIONS,
      /** Transactions the api keeps open at once, each on its own producer handle (default 3). */
      txnLanes: e.KAFKA_TXN_LANES as number | undefined,
      /** The topics exist already and are not to be created at start-up (dev mode's mock cluster). */
      topicsCreated: undefined as boolean | undefined,
    },
    postgresDsn: e.POSTGRES_DSN,
    loki: { url: e.LOKI_URL, tenant: e.LOKI_TENANT, username: e.LOKI_USERNAME, password: e.LOKI_PASSWORD },
    sqlDir: e.SQL_DIR,
    topics: { logs: e.TOPIC_LOGS, events: e.TOPIC_EVENTS, results: e.TOPIC_RESULTS },
    auth: { tokens: e.API_TOKENS, disabled: e.AUTH_DISABLED },
    maxBodyBytes: e.MAX_BODY_BYTES,
    logLevel: e.LOG_LEVEL,
    /** Unset when `SCHEMA_REGISTRY_URL` is. */
    schemaRegistry: schemaRegistryConfig(e),
  };
}

/** The whole configuration: the environment's schema, then its shape for the roles. */
export const ConfigSchema = v.pipe(EnvSchema, v.transform(toConfig));

/** Properties that may be undefined become optional, in nested objects too (not in arrays). */
type Optional<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T as undefined extends T[K] ? K : never]?: Optional<Exclude<T[K], undefined>> } & {
        [K in keyof T as undefined extends T[K] ? never : K]: Optional<T[K]>;
      }
    : T;

export type Config = Optional<v.InferOutput<typeof ConfigSchema>>;
export type SchemaRegistryConfig = NonNullable<Config["schemaRegistry"]>;

/** Parses the environment; throws `ConfigError` listing every problem. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const result = v.safeParse(ConfigSchema, env, { abortEarly: false });
  if (!result.success) {
    const problems = result.issues.map((issue) => {
      const name = issue.path?.map((p) => String(p.key)).join(".") ?? "?";
      const raw = env[name];
      const shown =
        raw === undefined
          ? "unset"
          : SECRETS.has(name)
            ? "(secret, not shown)"
            : JSON.stringify(URLS_WITH_CREDENTIALS.has(name) ? raw.replace(/\/\/([^/@:]*):[^/@]*@/, "//$1:***@") : raw);
      return `${name}=${shown}: ${issue.message}`;
    });
    throw new ConfigError(problems);
  }
  const config = result.output;
  config.kafka.overrides = rdkafkaOverrides(env);
  return config;
}

/** The registry settings; `user:password@` in the URL is taken out of it into basic auth. */
function schemaRegistryConfig(e: Env) {
  if (e.SCHEMA_REGISTRY_URL === "") {
    if (e.SCHEMA_WIRE_FORMAT === "confluent") {
      throw new ConfigError(["SCHEMA_WIRE_FORMAT=\"confluent\": the Confluent wire format needs schema ids, so SCHEMA_REGISTRY_URL too"]);
    }
    return undefined;
  }
  const url = new URL(e.SCHEMA_REGISTRY_URL);
  let username = e.SCHEMA_REGISTRY_USERNAME;
  let password = e.SCHEMA_REGISTRY_PASSWORD;
  const problems: string[] = [];
  if (url.username || url.password) {
    if (username !== undefined) problems.push("SCHEMA_REGISTRY_USERNAME: the URL carries a user already; give it in one place");
    username = decodeURIComponent(url.username);
    password = decodeURIComponent(url.password);
    url.username = "";
    url.password = "";
  }
  if (password !== undefined && username === undefined) problems.push("SCHEMA_REGISTRY_PASSWORD: set without SCHEMA_REGISTRY_USERNAME");
  if (e.SCHEMA_REGISTRY_TOKEN !== undefined && username !== undefined) {
    problems.push("SCHEMA_REGISTRY_TOKEN: set together with basic auth (a user name); choose one");
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    /** Base of the Confluent-compatible API, without credentials or trailing slash. */
    url: url.href.replace(/\/+$/, ""),
    username,
    password,
    token: e.SCHEMA_REGISTRY_TOKEN,
    /** Command subjects are `<subjectPrefix><command>.v<version>`. */
    subjectPrefix: e.SCHEMA_SUBJECT_PREFIX,
    compatibility: { commands: e.SCHEMA_COMPATIBILITY_COMMANDS, events: e.SCHEMA_COMPATIBILITY_EVENTS },
    wireFormat: e.SCHEMA_WIRE_FORMAT,
  };
}
