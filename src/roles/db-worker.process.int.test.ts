// Needs the broker (KAFKA_BROKERS, default 127.0.0.1:9092) and PostgreSQL (POSTGRES_DSN). The
// db-worker runs as `bun src/main.ts` (ROLE=db-worker), as in production, in a world of its own.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { collect, createUser, createWorld, json, produceEvents, spawnWorker, waitFor, worldConfig } from "../../test/db-worker-harness.ts";
import { ensureTopics } from "../broker.ts";
import { CommandResultSchema } from "../contracts.ts";
import { silentLogger } from "../logger.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

describe("db-worker process", () => {
  test("kill -9 mid-batch, then a restart: every command applied exactly once", async () => {
    await using world = await createWorld({ migrate: true });
    await ensureTopics(worldConfig(world), silentLogger); // the role's own topic set-up, before producing
    const total = 20_000;
    await produceEvents(world.topics.events, Array.from({ length: total }, (_, i) => createUser(i, `kill-${world.id}`)));

    const first = spawnWorker(world);
    let atKill = 0;
    try {
      // Killed as soon as its first transactions have committed: it is then in the middle of the stream.
      await waitFor(async () => (atKill = await world.count("idempotency_log")) > 0, "the first commands applied", { intervalMs: 5 });
      first.kill("SIGKILL");
      expect(await first.exited).not.toBe(0);
    } finally {
      first.kill("SIGKILL");
    }
    expect(atKill).toBeLessThan(total);

    const second = spawnWorker(world);
    const seen = collect([world.topics.results, world.topics.dlq]);
    try {
      await waitFor(async () => (await world.count("idempotency_log")) === total, "every command applied after the restart", { timeoutMs: 60_000 });
      const [counts] = await world.db.sql`SELECT
        (SELECT count(*)::int FROM users) AS users,
        (SELECT count(DISTINCT email)::int FROM users) AS emails,
        (SELECT count(*)::int FROM idempotency_log) AS keys,
        (SELECT count(*)::int FROM idempotency_log WHERE status = 'applied' AND rows_affected = 1) AS applied`;
      expect(counts).toEqual({ users: total, emails: total, keys: total, applied: total });

      // Every command has a result; none was applied twice (the replayed ones report `duplicate`).
      await seen.until(() => new Set(seen.on(world.topics.results).map((m) => json(m).idempotency_key)).size === total, "a result per command", { timeoutMs: 30_000 });
      const found = seen.on(world.topics.results).map((m) => v.parse(CommandResultSchema, json(m)));
      expect(new Set(found.map((r) => r.status))).toEqual(new Set(found.some((r) => r.status === "duplicate") ? ["applied", "duplicate"] : ["applied"]));
      const applied = found.filter((r) => r.status === "applied").map((r) => r.idempotency_key);
      expect(new Set(applied).size).toBe(applied.length);
      expect(seen.on(world.topics.dlq)).toEqual([]);
    } finally {
      await seen.stop();
      second.kill("SIGTERM");
      expect(await second.exited).toBe(0);
    }
  }, 120_000);

  test.each([
    ["a statement PostgreSQL cannot prepare", "INSERT INTO no_such_table (name) VALUES (:name);", /no_such_table/],
    ["two statements", "DELETE FROM users WHERE email = :email; DELETE FROM users;", /more than one statement/],
  ])("a bad SQL file (%s) refuses start-up, naming the file", async (_, statement, reason) => {
    await using world = await createWorld();
    const sqlDir = mkdtempSync(join(tmpdir(), "kitsune-sql-"));
    try {
      cpSync(worldConfig(world).sqlDir, sqlDir, { recursive: true });
      writeFileSync(join(sqlDir, "commands", "broken_thing.v1.sql"), `-- command: broken_thing\n-- version: 1\n-- description: Broken on purpose.\n${statement}\n`);
      const child = spawnWorker(world, { SQL_DIR: sqlDir });
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text(), new Response(child.stdout).text()]);
      clearTimeout(timer);
      expect(code).not.toBe(0);
      expect(stderr).toContain(join(sqlDir, "commands", "broken_thing.v1.sql"));
      expect(stderr).toMatch(reason);
    } finally {
      rmSync(sqlDir, { recursive: true, force: true });
    }
  }, 40_000);
});
