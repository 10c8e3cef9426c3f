// Needs the broker (KAFKA_BROKERS, default 127.0.0.1:9092) and PostgreSQL (POSTGRES_DSN). The
// db-worker runs as `bun src/main.ts` (ROLE=db-worker), as in production, in a world of its own.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v from "valibot";
import { APPEND_COMMAND, appendRegistry } from "../../test/append-command.ts";
import { collect, commandEvent, createWorld, json, produceEvents, spawnWorker, waitFor, worldConfig } from "../../test/db-worker-harness.ts";
import { ensureTopics } from "../broker.ts";
import { CommandResultSchema } from "../contracts.ts";
import { silentLogger } from "../logger.ts";
import { HELD_LOG, HOLD_BEFORE_COMMIT_ENV } from "./db-worker.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

/** Reads `stream` line by line until one matches; rejects when it ends first or after `timeoutMs`. */
async function lineOf(stream: ReadableStream<Uint8Array>, match: (line: string) => boolean, timeoutMs: number): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  const timer = setTimeout(() => void reader.cancel(`no matching line within ${timeoutMs} ms`), timeoutMs);
  let rest = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`no matching line before the output ended (or ${timeoutMs} ms passed); last: ${rest.slice(-500)}`);
      const lines = (rest + decoder.decode(value, { stream: true })).split("\n");
      rest = lines.pop()!;
      const hit = lines.find(match);
      if (hit !== undefined) return hit;
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

describe("db-worker process", () => {
  test("kill -9 mid-batch, then a restart: every command applied exactly once", async () => {
    await using world = await createWorld({ migrate: true });
    // chaos_append: a second apply would be a second row, not a unique violation.
    const registry = appendRegistry();
    await world.db.sql.unsafe(APPEND_COMMAND.table);
    const sqlDir = { SQL_DIR: registry.dir };
    await ensureTopics(worldConfig(world), silentLogger); // the role's own topic set-up, before producing
    const total = 20_000;
    const tag = `kill-${world.id}`;
    const events = Array.from({ length: total }, (_, i) => commandEvent("chaos_append", { name: `User ${i}`, email: `user-${i}@${tag}.test` }, { key: `${tag}-${i}` }));
    await produceEvents(world.topics.events, events);

    // The first worker holds its first batch after PostgreSQL committed it and its results were
    // published, before the offset commit (a test hook of the db-worker); killed there, for certain mid-batch.
    const first = spawnWorker(world, { ...sqlDir, [HOLD_BEFORE_COMMIT_ENV]: "1", LOG_LEVEL: "warn" });
    let held = 0;
    try {
      const line = await lineOf(first.stdout, (l) => l.includes(HELD_LOG), 60_000);
      held = (JSON.parse(line) as { messages: number }).messages;
      first.kill("SIGKILL");
      expect(await first.exited).not.toBe(0);
    } finally {
      first.kill("SIGKILL");
    }
    expect(held).toBeGreaterThan(0);
    expect(await world.count("idempotency_log")).toBeLessThan(total);

    const second = spawnWorker(world, sqlDir);
    const seen = collect([world.topics.results, world.topics.dlq]);
    try {
      await waitFor(async () => (await world.count("idempotency_log")) === total, "every command applied after the restart", { timeoutMs: 60_000 });
      const [counts] = await world.db.sql`SELECT
        (SELECT count(*)::int FROM chaos_effects) AS effects,
        (SELECT count(DISTINCT email)::int FROM chaos_effects) AS emails,
        (SELECT count(*)::int FROM idempotency_log) AS keys,
        (SELECT count(*)::int FROM idempotency_log WHERE status = 'applied' AND rows_affected = 1) AS applied`;
      expect(counts).toEqual({ effects: total, emails: total, keys: total, applied: total });

      // Every command has a result; none was applied twice; the held batch came again and was
      // turned away (`duplicate`).
      await seen.until(() => new Set(seen.on(world.topics.results).map((m) => json(m).idempotency_key)).size === total, "a result per command", { timeoutMs: 30_000 });
      const found = seen.on(world.topics.results).map((m) => v.parse(CommandResultSchema, json(m)));
      const applied = found.filter((r) => r.status === "applied").map((r) => r.idempotency_key);
      expect(new Set(applied).size).toBe(total);
      expect(applied.length).toBe(total);
      expect(found.filter((r) => r.status === "duplicate").length).toBeGreaterThanOrEqual(held);
      expect(found.filter((r) => r.status !== "applied" && r.status !== "duplicate")).toEqual([]);
      expect(seen.on(world.topics.dlq)).toEqual([]);
    } finally {
      await seen.stop();
      second.kill("SIGTERM");
      expect(await second.exited).toBe(0);
      registry.remove();
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
