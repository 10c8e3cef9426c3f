/**
 * @module config
 * The whole configuration of every role, parsed once from the environment with one valibot schema.
 * A bad or missing value stops the process with a list of every problem (see `ConfigError`).
 */
import * as v from "valibot";

export const ROLES = ["api", "log-worker", "db-worker", "all"] as const;
export type Role = (typeof ROLES)[number];

/** Variables whose values are never echoed in error messages. */
const SECRETS = new Set(["API_TOKENS", "LOKI_PASSWORD", "POSTGRES_DSN", "RDKAFKA_SASL_PASSWORD"]);

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

export interface Config {
  role: Role;
  httpPort: number;
  kafka: {
    brokers: string[];
    /** librdkafka properties from `RDKAFKA_*` variables, applied before our safety keys. */
    overrides: Record<string, string>;
    groupId?: string;
    transactions: boolean;
    /** The topics exist already and are not to be created at start-up (dev mode's mock cluster). */
    topicsCreated?: boolean;
  };
  postgresDsn: string;
  loki: { url: string; tenant?: string; username?: string; password?: string };
  sqlDir: string;
  topics: { logs: string; events: string; results: string };
  auth: { tokens: string[]; disabled: boolean };
  maxBodyBytes: number;
  logLevel: Env["LOG_LEVEL"];
}

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

/** Parses the environment; throws `ConfigError` listing every problem. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const result = v.safeParse(EnvSchema, env, { abortEarly: false });
  if (!result.success) {
    const problems = result.issues.map((issue) => {
      const name = issue.path?.map((p) => String(p.key)).join(".") ?? "?";
      const raw = env[name];
      const shown = raw === undefined ? "unset" : SECRETS.has(name) ? "(secret, not shown)" : JSON.stringify(raw);
      return `${name}=${shown}: ${issue.message}`;
    });
    throw new ConfigError(problems);
  }
  const e = result.output;
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
      overrides: rdkafkaOverrides(env),
      groupId: e.KAFKA_GROUP_ID,
      transactions: e.KAFKA_TRANSACTIONS,
    },
    postgresDsn: e.POSTGRES_DSN,
    loki: { url: e.LOKI_URL, tenant: e.LOKI_TENANT, username: e.LOKI_USERNAME, password: e.LOKI_PASSWORD },
    sqlDir: e.SQL_DIR,
    topics: { logs: e.TOPIC_LOGS, events: e.TOPIC_EVENTS, results: e.TOPIC_RESULTS },
    auth: { tokens: e.API_TOKENS, disabled: e.AUTH_DISABLED },
    maxBodyBytes: e.MAX_BODY_BYTES,
    logLevel: e.LOG_LEVEL,
  };
}
