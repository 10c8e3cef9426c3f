/**
 * The executable as users run it: `ROLE=all` as a child process against the local Kafka and
 * PostgreSQL, the original example end to end, and SIGTERM under load.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Subprocess } from "bun";
import { startFakeLoki, type FakeLoki } from "../test/fake-loki.ts";
import { TEST_DSN, withSchema, type TestSchema } from "../test/pg.ts";
import { ORIGINAL_EXAMPLE } from "./api/fakes.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

const TOKEN = "main-test-token";

let db: TestSchema;
let loki: FakeLoki;
const run = crypto.randomUUID().slice(0, 8);

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
    TOPIC_EVENTS: `main-${run}-events`,
    TOPIC_LOGS: `main-${run}-logs`,
    TOPIC_RESULTS: `main-${run}-results`,
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

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(200);
  }
}

const freePort = () => 20000 + Math.floor(Math.random() * 20000);

beforeAll(async () => {
  db = await withSchema();
  loki = startFakeLoki();
});

afterAll(async () => {
  loki?.stop();
  await db?.drop();
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
      expect(Object.keys(body.events).sort()).toEqual([`main-${run}-events`, `main-${run}-logs`].sort());

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

  test("SIGTERM under load exits 0 within 10 s, and after a restart every accepted command is applied", async () => {
    const port = freePort();
    let proc = await startKitsune(port);
    const accepted = new Set<string>();
    let stop = false;
    let sent = 0;
    const statuses: string[] = [];
    const client = async (c: number) => {
      for (let i = 0; !stop; i++) {
        const email = `load-${run}-${c}-${i}@example.com`;
        sent++;
        try {
          const r = await execute(port, { command: "create_user", version: "1", payload: { name: `L${c}`, email } });
          if (r.status === 202) accepted.add(((await r.json()) as { id: string }).id);
          else statuses.push(`${r.status} ${await r.text()}`);
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
    expect(code).toBe(0);
    expect(took).toBeLessThan(10_000);
    expect(accepted.size).toBeGreaterThan(0);
    expect(sent).toBeGreaterThanOrEqual(accepted.size);

    proc = await startKitsune(port);
    try {
      const ids = [...accepted];
      const applied = await waitFor(
        "every accepted command applied",
        async () => {
          const [r] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM idempotency_log
                                                    WHERE event_id IN ${db.sql(ids)} AND status = 'applied'`;
          return r!.n === ids.length ? r!.n : undefined;
        },
        60_000,
      );
      expect(applied).toBe(ids.length);
      // Exactly once in effect: one row per accepted command's unique email, none twice.
      const [dups] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM (
        SELECT email FROM users WHERE email LIKE ${`load-${run}-%`} GROUP BY email HAVING count(*) > 1) d`;
      expect(dups!.n).toBe(0);
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
    }
  }, 180_000);
});
