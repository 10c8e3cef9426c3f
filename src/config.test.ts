import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, rdkafkaOverrides } from "./config.ts";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  test("the defaults of DESIGN.md", () => {
    const c = loadConfig({ ROLE: "db-worker" });
    expect(c).toMatchObject({
      role: "db-worker",
      httpPort: 8080,
      kafka: { brokers: ["localhost:9092"], transactions: true, overrides: {} },
      postgresDsn: "postgres://kitsune:kitsune@localhost:5432/kitsune",
      loki: { url: "http://localhost:3100" },
      sqlDir: "./sql",
      topics: { logs: "app-logs", events: "db-events", results: "db-results" },
      auth: { tokens: [], disabled: false },
      maxBodyBytes: 65536,
      logLevel: "info",
    });
  });

  test("a missing or unknown ROLE is named", () => {
    expect(problems({})).toEqual(["ROLE=unset: expected one of api, log-worker, db-worker, all"]);
    expect(problems({ ROLE: "bogus" })[0]).toStartWith('ROLE="bogus": expected one of api, log-worker, db-worker, all');
  });

  test("every bad value is listed at once, each with its variable", () => {
    const list = problems({ ROLE: "api", AUTH_DISABLED: "true", HTTP_PORT: "x", KAFKA_BROKERS: "", MAX_BODY_BYTES: "0", LOG_LEVEL: "loud" });
    expect(list.map((p) => p.split("=")[0])).toEqual(["HTTP_PORT", "KAFKA_BROKERS", "MAX_BODY_BYTES", "LOG_LEVEL"]);
    expect(list[1]).toBe('KAFKA_BROKERS="": expected a comma-separated list of host:port');
  });

  test("secrets are never echoed", () => {
    const list = problems({ ROLE: "db-worker", POSTGRES_DSN: "mysql://root:hunter2@db" });
    expect(list).toEqual(["POSTGRES_DSN=(secret, not shown): expected a postgres:// connection URL"]);
    expect(list.join()).not.toContain("hunter2");
  });

  test("the api refuses to start without tokens unless AUTH_DISABLED=true", () => {
    expect(problems({ ROLE: "api" })[0]).toStartWith("API_TOKENS=unset");
    expect(problems({ ROLE: "all" })[0]).toStartWith("API_TOKENS=unset");
    expect(loadConfig({ ROLE: "api", AUTH_DISABLED: "true" }).auth.disabled).toBe(true);
    expect(loadConfig({ ROLE: "api", API_TOKENS: " a, b ,," }).auth.tokens).toEqual(["a", "b"]);
  });

  test("RDKAFKA_* variables become librdkafka properties", () => {
    expect(rdkafkaOverrides({ RDKAFKA_SECURITY_PROTOCOL: "sasl_ssl", RDKAFKA_SASL_USERNAME: "u", OTHER: "x" })).toEqual({
      "security.protocol": "sasl_ssl",
      "sasl.username": "u",
    });
    expect(loadConfig({ ROLE: "db-worker", KAFKA_BROKERS: "a:1, b:2", RDKAFKA_LINGER_MS: "7" }).kafka).toMatchObject({
      brokers: ["a:1", "b:2"],
      overrides: { "linger.ms": "7" },
    });
  });
});

describe("the executable", () => {
  const run = async (env: Record<string, string>) => {
    const proc = Bun.spawn(["bun", "src/main.ts"], { env: { PATH: process.env.PATH ?? "", ...env }, stdout: "pipe", stderr: "pipe" });
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    return { stderr, code };
  };

  test("ROLE=bogus exits 2 naming ROLE", async () => {
    const { stderr, code } = await run({ ROLE: "bogus" });
    expect(code).toBe(2);
    expect(stderr).toContain('ROLE="bogus"');
  });

  test("an empty KAFKA_BROKERS exits 2 naming it", async () => {
    const { stderr, code } = await run({ ROLE: "api", KAFKA_BROKERS: "", AUTH_DISABLED: "true" });
    expect(code).toBe(2);
    expect(stderr).toContain('KAFKA_BROKERS="": expected a comma-separated list of host:port');
  });
});

describe("schema registry settings", () => {
  const base = { ROLE: "db-worker" };
  test("off when SCHEMA_REGISTRY_URL is unset or empty", () => {
    expect(loadConfig(base).schemaRegistry).toBeUndefined();
    expect(loadConfig({ ...base, SCHEMA_REGISTRY_URL: " " }).schemaRegistry).toBeUndefined();
  });

  test("defaults: prefix kitsune., FULL_TRANSITIVE commands, BACKWARD events, plain JSON", () => {
    expect(loadConfig({ ...base, SCHEMA_REGISTRY_URL: "http://r:8081/" }).schemaRegistry).toEqual({
      url: "http://r:8081",
      username: undefined,
      password: undefined,
      token: undefined,
      subjectPrefix: "kitsune.",
      compatibility: { commands: "FULL_TRANSITIVE", events: "BACKWARD" },
      wireFormat: "json",
    });
  });

  test("user:password in the URL becomes basic auth, and is masked in errors", () => {
    const c = loadConfig({ ...base, SCHEMA_REGISTRY_URL: "https://me:p%40ss@r.example/apis/ccompat/v7" }).schemaRegistry!;
    expect(c).toMatchObject({ url: "https://r.example/apis/ccompat/v7", username: "me", password: "p@ss" });
    const list = problems({ ...base, SCHEMA_REGISTRY_URL: "ftp://me:secret@r" });
    expect(list).toEqual(['SCHEMA_REGISTRY_URL="ftp://me:***@r": expected an http(s) URL such as http://localhost:8081']);
  });

  test("levels and wire format are checked, in any case", () => {
    const c = loadConfig({ ...base, SCHEMA_REGISTRY_URL: "http://r", SCHEMA_COMPATIBILITY_COMMANDS: "backward", SCHEMA_WIRE_FORMAT: "Confluent" });
    expect(c.schemaRegistry).toMatchObject({ compatibility: { commands: "BACKWARD" }, wireFormat: "confluent" });
    const list = problems({ ...base, SCHEMA_REGISTRY_URL: "http://r", SCHEMA_COMPATIBILITY_EVENTS: "LOOSE", SCHEMA_WIRE_FORMAT: "avro" });
    expect(list.map((p) => p.split("=")[0])).toEqual(["SCHEMA_COMPATIBILITY_EVENTS", "SCHEMA_WIRE_FORMAT"]);
  });

  test("contradictions are refused, secrets not shown", () => {
    expect(problems({ ...base, SCHEMA_WIRE_FORMAT: "confluent" })[0]).toContain("needs schema ids, so SCHEMA_REGISTRY_URL too");
    expect(problems({ ...base, SCHEMA_REGISTRY_URL: "http://r", SCHEMA_REGISTRY_PASSWORD: "x" })[0]).toContain("without SCHEMA_REGISTRY_USERNAME");
    expect(problems({ ...base, SCHEMA_REGISTRY_URL: "http://u:p@r", SCHEMA_REGISTRY_USERNAME: "v" })[0]).toContain("in one place");
    expect(problems({ ...base, SCHEMA_REGISTRY_URL: "http://r", SCHEMA_REGISTRY_USERNAME: "u", SCHEMA_REGISTRY_TOKEN: "t" })[0]).toContain("choose one");
    expect(loadConfig({ ...base, SCHEMA_REGISTRY_URL: "http://r", SCHEMA_REGISTRY_TOKEN: "t" }).schemaRegistry?.token).toBe("t");
  });
});
