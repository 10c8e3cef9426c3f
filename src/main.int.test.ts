/**
 * The executable as users run it: `ROLE=all` as a child process against the local Kafka and
 * PostgreSQL, the original example end to end, and SIGTERM under load.
 *
 * The registry is a copy of `sql/` plus `chaos_append` (test/append-command.ts): an INSERT no
 * constraint stops from running twice, so an effect applied twice shows as two rows. (With
 * `create_user` the UNIQUE email would turn a second apply into a failure instead.)
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Subprocess } from "bun";
import { APPEND_COMMAND, appendRegistry } from "../test/append-command.ts";
import { startFakeLoki, type FakeLoki } from "../test/fake-loki.ts";
import { TEST_DSN, withSchema, type TestSchema } from "../test/pg.ts";
import { ORIGINAL_EXAMPLE } from "../test/fakes.ts";
import { collect, json } from "../test/db-worker-harness.ts";
import type { CommandResult } from "./contracts.ts";
import { Admin } from "./kafka/admin.ts";
import { waitForValue } from "../test/wait.ts";
// A port the OS just handed out (a random one could be another test file's).
import { freePort } from "../bench/lib/procs.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

const TOKEN = "main-test-token";

let db: TestSchema;
let loki: FakeLoki;
const run = crypto.randomUUID().slice(0, 8);
const topics = { events: `main-${run}-events`, logs: `main-${run}-logs`, results: `main-${run}-results` };
const registry = appendRegistry();

function env(port: number): Record<string, string> {
  const dsn = new URL(TEST_DSN);
  dsn.searchParams.set("search_path", db.schema);
  return {
    ...(process.env as Record<string, string>),
    ROLE: "all",
    HTTP_PORT: String(port),
    API_TOKENS: TOKEN,
    KAFKA_BROKERS: process.env.KAFKA_BROKERS ?? "127.0.0.1:9092",
    KAFKA_GROUP_ID: `main-test-${run}`,
    TOPIC_EVENTS: topics.events,
    TOPIC_LOGS: topics.logs,
    TOPIC_RESULTS: topics.results,
    SQL_DIR: registry.dir,
    POSTGRES_DSN: dsn.toString(),
    LOKI_URL: loki.url,
    LOG_LEVEL: "warn",
  };
}

async function startKitsune(port: number): Promise<Subprocess> {
  const proc = Bun.spawn(["bun", "src/main.ts"], { env: env(port), stdout: "ignore", stderr: "pipe" });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`kitsune exited: ${await new Response(proc.stderr).text()}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (r.status === 200) return proc;
    } catch {}
    if (Date.now() > deadline) throw new Error("kitsune did not become ready within 30 s");
    await Bun.sleep(200);
  }
}

function execute(port: number, body: unknown): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/execute`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  });
}

const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> => waitForValue(what, fn, { timeoutMs: ms });


/** Messages on a topic (sum of high watermarks; 0 when it does not exist). */
function depth(topic: string): number {
  const admin = new Admin({ "bootstrap.servers": process.env.KAFKA_BROKERS ?? "127.0.0.1:9092" });
  try {
    const partitions = admin.metadata().topics.find((t) => t.name === topic)?.partitions ?? [];
    return partitions.reduce((sum, p) => sum + admin.watermarks(topic, p.id).high, 0);
  } finally {
    admin.close();
  }
}

beforeAll(async () => {
  db = await withSchema();
  // The append-only command's table first: the db-worker prepares every command at start-up.
  await db.sql.unsafe(APPEND_COMMAND.table);
  loki = startFakeLoki();
});

afterAll(async () => {
  loki?.stop();
  await db?.drop();
  registry.remove();
  const admin = new Admin({ "bootstrap.servers": process.env.KAFKA_BROKERS ?? "127.0.0.1:9092" });
  try {
    const all = [...Object.values(topics), `${topics.events}.dlq`, `${topics.logs}.dlq`];
    await admin.deleteTopics(all).catch(() => {});
  } finally {
    admin.close();
  }
});

describe("ROLE=all", () => {
  test("serves the original example end to end: 202, a committed row, a log line in Loki", async () => {
    const port = freePort();
    const proc = await startKitsune(port);
    try {
      const key = `original-${run}`;
      const res = await execute(port, { ...ORIGINAL_EXAMPLE, metadata: { ...ORIGINAL_EXAMPLE.metadata, idempotency_key: key } });
      expect(res.status).toBe(202);
      const body = (await res.json()) as { id: string; idempotency_key: string; status: string; events: Record<string, unknown> };
      expect(body.status).toBe("accepted");
      expect(body.idempotency_key).toBe(key);
      expect(Object.keys(body.events).sort()).toEqual([topics.events, topics.logs].sort());

      const row = await waitFor("the user row", async () => {
        const [r] = await db.sql`SELECT u.name, u.email, l.status, l.event_id FROM users u, idempotency_log l
                                 WHERE u.email = 'sahil@example.com' AND l.key = ${key}`;
        return r;
      });
      expect(row).toMatchObject({ name: "Sahil", email: "sahil@example.com", status: "applied", event_id: body.id });

      const line = await waitFor("the log line in Loki", async () =>
        loki.entries.find((e) => e.line.includes(body.id)),
      );
      expect(line.labels).toMatchObject({ service: "kitsune", level: "info", source: "user-service", command: "create_user" });
      expect(JSON.parse(line.line)).toMatchObject({ message: "User registration triggered", id: body.id, idempotency_key: key });

      // A client retrying with the same key gets an id of its own, which GET /commands/:id answers.
      const retry = await execute(port, { ...ORIGINAL_EXAMPLE, metadata: { ...ORIGINAL_EXAMPLE.metadata, idempotency_key: key } });
      expect(retry.status).toBe(202);
      const second = (await retry.json()) as { id: string };
      expect(second.id).not.toBe(body.id);
      const status = (id: string) =>
        fetch(`http://127.0.0.1:${port}/commands/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json() as Promise<Record<string, unknown>>);
      const dup = await waitFor("the retry's status", async () => {
        const s = await status(second.id);
        return s.status === "pending" ? undefined : s;
      });
      expect(dup).toEqual({ id: second.id, status: "duplicate", idempotency_key: key, original_id: body.id, processed_at: expect.any(String) });
      expect(await status(body.id)).toMatchObject({ id: body.id, status: "applied", rows_affected: 1 });
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
    }
  }, 90_000);

  test("SIGTERM under load exits 0 within 10 s; after a restart every accepted command is applied exactly once in effect", async () => {
    const port = freePort();
    let proc = await startKitsune(port);
    /** Accepted requests: id → the command's email (its effect's key) and idempotency key. */
    const accepted = new Map<string, { email: string; key: string }>();
    let stop = false;
    let sent = 0;
    let retries = 0;
    const statuses: string[] = [];
    const send = async (email: string, key: string, c: number) => {
      sent++;
      const r = await execute(port, { command: "chaos_append", version: "1", payload: { name: `L${c}`, email }, metadata: { idempotency_key: key } });
      if (r.status === 202) accepted.set(((await r.json()) as { id: string }).id, { email, key });
      else statuses.push(`${r.status} ${await r.text()}`);
      return r.status;
    };
    const client = async (c: number) => {
      for (let i = 0; !stop; i++) {
        const email = `load-${run}-${c}-${i}@example.com`;
        const key = `load-${run}-${c}-${i}`;
        try {
          await send(email, key, c);
          // Every third command is sent again with the same idempotency key, as a client retries
          // after a timeout: the db-worker must apply it once and turn the repeat away.
          if (i % 3 === 0 && !stop) {
            retries++;
            await send(email, key, c);
          }
        } catch {
          await Bun.sleep(20); // the server is gone or going: connection refused
        }
      }
    };
    const clients = Array.from({ length: 8 }, (_, c) => client(c));
    await waitFor("some accepted commands", async () => (accepted.size >= 200 ? true : undefined)).catch((e) => {
      throw new Error(`${e.message}: ${accepted.size} accepted of ${sent}; others: ${statuses.slice(0, 3).join(" | ")}`);
    });

    const signalled = performance.now();
    proc.kill("SIGTERM");
    const code = await proc.exited;
    const took = performance.now() - signalled;
    stop = true;
    await Promise.all(clients);
    // NOTE: exit code 0 is the 10 s proof: past its SHUTDOWN_BUDGET_MS (src/main.ts) the process
    // exits 1. The test's own clock would add signal delivery and scheduling on a busy machine.
    expect(code).toBe(0);
    console.log(`SIGTERM under load: exited ${code} after ${Math.round(took)} ms (test's clock); ${accepted.size} accepted of ${sent} sent, ${retries} retries`);
    expect(accepted.size).toBeGreaterThan(0);
    expect(sent).toBeGreaterThanOrEqual(accepted.size);

    proc = await startKitsune(port);
    const ids = [...accepted.keys()];
    const keys = [...new Set([...accepted.values()].map((a) => a.key))];
    const emails = [...new Set([...accepted.values()].map((a) => a.email))];
    const seen = collect([topics.results]);
    let results: CommandResult[] = [];
    try {
      // The db-worker publishes a result for every event it processed: wait for the accepted ones.
      await seen.until(() => {
        results = seen.on(topics.results).map(json) as CommandResult[];
        const done = new Set(results.map((r) => r.id));
        return ids.every((id) => done.has(id));
      }, "a result for every accepted command", { timeoutMs: 60_000 });
    } finally {
      await seen.stop();
      // A graceful stop publishes what is in flight (results, dead letters) before the checks below.
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    }
    const mine = results.filter((r) => r.idempotency_key.startsWith(`load-${run}-`));
    expect(mine.filter((r) => r.status !== "applied" && r.status !== "duplicate")).toEqual([]);
    // One `applied` per idempotency key, whichever of its requests got there first.
    const appliedPerKey = Map.groupBy(mine.filter((r) => r.status === "applied"), (r) => r.idempotency_key);
    expect(keys.filter((k) => appliedPerKey.get(k)?.length !== 1)).toEqual([]);
    expect([...appliedPerKey.values()].filter((rs) => rs.length > 1)).toEqual([]);
    // PostgreSQL agrees: each key applied, each accepted id the one that applied it or a repeat turned away.
    const [logged] = await db.sql<{ keys: number; ids: number }[]>`SELECT
      (SELECT count(*)::int FROM idempotency_log WHERE key IN ${db.sql(keys)} AND status = 'applied') AS keys,
      (SELECT count(*)::int FROM (SELECT event_id FROM idempotency_log WHERE event_id IN ${db.sql(ids)}
                                  UNION SELECT event_id FROM idempotency_duplicates WHERE event_id IN ${db.sql(ids)}) x) AS ids`;
    expect(logged).toEqual({ keys: keys.length, ids: ids.length });
    // Exactly once in effect: one row per accepted command (retries included), none for anything twice.
    const effects = await db.sql<{ email: string; n: number }[]>`SELECT email, count(*)::int AS n FROM chaos_effects
                                                                 WHERE email LIKE ${`load-${run}-%`} GROUP BY email`;
    const rows = new Map(effects.map((e) => [e.email, e.n]));
    expect(emails.filter((e) => rows.get(e) !== 1)).toEqual([]);
    expect(effects.filter((e) => e.n > 1)).toEqual([]);
    // Nothing failed, nothing dead-lettered.
    const [failed] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM idempotency_log WHERE status <> 'applied'`;
    expect(failed!.n).toBe(0);
    expect({ events: depth(`${topics.events}.dlq`), logs: depth(`${topics.logs}.dlq`) }).toEqual({ events: 0, logs: 0 });
  }, 180_000);
});
