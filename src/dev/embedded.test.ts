import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { loadConfig } from "../config.ts";
import { devOptions, embeddedParts } from "./embedded.ts";

describe("embeddedParts", () => {
  test("each part is embedded only where its setting is unset or blank", () => {
    expect(embeddedParts({})).toEqual({ kafka: true, postgres: true, loki: true, devToken: true });
    expect(
      embeddedParts({ KAFKA_BROKERS: "k:9092", POSTGRES_DSN: "postgres://x", LOKI_URL: "http://l:3100", API_TOKENS: "t" }),
    ).toEqual({ kafka: false, postgres: false, loki: false, devToken: false });
    expect(embeddedParts({ KAFKA_BROKERS: "  ", POSTGRES_DSN: "" })).toMatchObject({ kafka: true, postgres: true });
  });

  test("AUTH_DISABLED=true means no dev token", () => {
    expect(embeddedParts({ AUTH_DISABLED: "true" }).devToken).toBe(false);
    expect(embeddedParts({ AUTH_DISABLED: "false" }).devToken).toBe(true);
  });
});

describe("devOptions", () => {
  test("./.kitsune on disk by default; --memory, KITSUNE_DEV_DIR and KITSUNE_DEV_PG_PORT change it", () => {
    expect(devOptions([], {})).toEqual({ memory: false, dir: resolve(".kitsune"), pgPort: 0 });
    expect(devOptions(["--memory"], { KITSUNE_DEV_DIR: "/tmp/k", KITSUNE_DEV_PG_PORT: "5433" })).toEqual({ memory: true, dir: "/tmp/k", pgPort: 5433 });
  });

  test("a port that is not one is refused", () => {
    expect(() => devOptions([], { KITSUNE_DEV_PG_PORT: "http" })).toThrow("KITSUNE_DEV_PG_PORT");
    expect(() => devOptions([], { KITSUNE_DEV_PG_PORT: "70000" })).toThrow("expected a port number");
  });
});

describe("outside kitsune dev", () => {
  test("the configuration of a production role with its settings unset names the documented defaults, nothing embedded", () => {
    for (const role of ["api", "db-worker", "log-worker", "all"]) {
      const config = loadConfig({ ROLE: role, API_TOKENS: "t" });
      expect(config.kafka.brokers).toEqual(["localhost:9092"]);
      expect(config.postgresDsn).toBe("postgres://kitsune:kitsune@localhost:5432/kitsune");
      expect(config.loki.url).toBe("http://localhost:3100");
      expect(config.kafka.topicsCreated).toBeUndefined();
    }
  });
});
