// Needs PostgreSQL (POSTGRES_DSN, default the local kitsune database); works in a schema of its own.
// The batch-at-once path of event-pipeline.ts (apply.int.test.ts covers the rest through applyBatch).
import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { backendPid, closedGate, HOLD_COMMAND, withSchema, type TestSchema } from "../../test/pg.ts";
import { waitFor } from "../../test/wait.ts";
import type { CommandEvent, CommandLookup } from "../contracts.ts";
import { applyBatch } from "./apply.ts";
import { migrate } from "./migrations.ts";
import { createRegistry, loadRegistry, parseCommandFile } from "./registry.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

let db: TestSchema;
let registry: CommandLookup;

beforeAll(async () => {
  db = await withSchema();
  await migrate(db.sql, "./sql");
  registry = createRegistry([...(await loadRegistry("./sql")).list(), parseCommandFile(HOLD_COMMAND.file, HOLD_COMMAND.text)]);
});
afterAll(() => db?.drop());
beforeEach(async () => {
  await db.sql`TRUNCATE users, idempotency_log`;
});

let seq = 0;
function event(command: string, payload: Record<string, unknown>, key = `key-${++seq}-${crypto.randomUUID()}`): CommandEvent {
  return { id: `evt-${++seq}`, command, version: "1", payload, metadata: { idempotency_key: key, timestamp: new Date().toISOString(), source: "test" } };
}
const create = (i: number, key?: string) => event("create_user", { name: `user ${i}`, email: `u${i}@example.com` }, key);
const statuses = (outcomes: { result: { status: string } }[]) => outcomes.map((o) => o.result.status);
const count = async (table: string) => ((await db.sql.unsafe(`SELECT count(*)::int AS n FROM ${table}`))[0]!.n as number);

describe("a batch with distinct keys, run at once", () => {
  test("a clean batch: every event applied, every key recorded with its row count", async () => {
    const batch = Array.from({ length: 300 }, (_, i) => create(i));
    const outcomes = await applyBatch(db.sql, registry, batch);
    expect(new Set(statuses(outcomes))).toEqual(new Set(["applied"]));
    expect(await count("users")).toBe(300);
    const logged = await db.sql`SELECT rows_affected, count(*)::int AS n FROM idempotency_log GROUP BY 1`;
    expect([...logged]).toEqual([{ rows_affected: 1, n: 300 }]);
  });

  test("row counts other than one are recorded as they were", async () => {
    await applyBatch(db.sql, registry, [create(1), create(2)]);
    const batch = [
      event("update_user", { name: "nobody", email: "nobody@example.com" }), // 0 rows
      event("update_user", { name: "one", email: "u1@example.com" }), // 1 row
      event("delete_user", { email: "u2@example.com" }), // 1 row
      event("delete_user", { email: "u2@example.com" }), // 0 rows: already gone
    ];
    const outcomes = await applyBatch(db.sql, registry, batch);
    expect(outcomes.map((o) => [o.result.status, o.result.rows_affected])).toEqual([["applied", 0], ["applied", 1], ["applied", 1], ["applied", 0]]);
    const rows = await db.sql`SELECT key, rows_affected FROM idempotency_log WHERE key = ANY(${batch.map((e) => e.metadata.idempotency_key)})`;
    const byKey = new Map(rows.map((r) => [r.key, r.rows_affected]));
    expect(batch.map((e) => byKey.get(e.metadata.idempotency_key))).toEqual([0, 1, 1, 0]);
  });

  test("keys processed before are duplicates with what was stored; their statements leave no trace", async () => {
    const earlier = [create(1), event("update_user", { name: "renamed once", email: "u1@example.com" })];
    await applyBatch(db.sql, registry, earlier);
    const again = { ...earlier[1]!, id: "redelivered", payload: { name: "renamed twice", email: "u1@example.com" } };
    const batch = [create(2), again, create(3), { ...earlier[0]!, id: "redelivered-create" }, create(4)];
    const outcomes = await applyBatch(db.sql, registry, batch);

    expect(statuses(outcomes)).toEqual(["applied", "duplicate", "applied", "duplicate", "applied"]);
    expect(outcomes[1]!.original).toMatchObject({ event_id: earlier[1]!.id, status: "applied", rows_affected: 1 });
    expect(outcomes[3]!.original).toMatchObject({ event_id: earlier[0]!.id, status: "applied" });
    const [u1] = await db.sql`SELECT name FROM users WHERE email = 'u1@example.com'`;
    expect(u1!.name).toBe("renamed once");
    expect(await count("users")).toBe(4);
    expect(await count("idempotency_log")).toBe(5);
  });

  test("a replayed batch, all duplicates, changes nothing", async () => {
    const batch = Array.from({ length: 100 }, (_, i) => create(i));
    await applyBatch(db.sql, registry, batch);
    const outcomes = await applyBatch(db.sql, registry, batch.map((e) => ({ ...e, id: `${e.id}-again` })));
    expect(new Set(statuses(outcomes))).toEqual(new Set(["duplicate"]));
    expect(await count("users")).toBe(100);
    expect(await count("idempotency_log")).toBe(100);
  });

  test("a failure in the middle: the events before it apply once, it fails alone, the rest apply", async () => {
    await applyBatch(db.sql, registry, [create(0)]);
    const batch = Array.from({ length: 200 }, (_, i) => (i === 120 || i === 121 || i === 199 ? create(0) : create(1000 + i)));
    const outcomes = await applyBatch(db.sql, registry, batch);

    expect(statuses(outcomes)).toEqual(batch.map((_, i) => (i === 120 || i === 121 || i === 199 ? "failed" : "applied")));
    expect(outcomes[120]!.result.error?.sqlstate).toBe("23505");
    expect(await count("users")).toBe(1 + 197);
    const logged = await db.sql`SELECT status, count(*)::int AS n FROM idempotency_log GROUP BY 1 ORDER BY 1`;
    expect([...logged]).toEqual([{ status: "applied", n: 1 + 197 }, { status: "failed", n: 3 }]);
  });

  test("two batches claiming the same keys in opposite orders: the second waits, finds them taken, no deadlock", async () => {
    const keys = Array.from({ length: 50 }, (_, i) => `shared-${i}`);
    const gate = await closedGate(db);
    const other = db.connect({ max: 1 });
    const first = applyBatch(db.sql, registry, [
      ...keys.map((k, i) => create(i, k)),
      event("hold", gate.hold), // holds the first transaction, and its claims, open until the gate opens
    ]);
    await waitFor(gate.held, "the first batch to hold its claims at the gate");
    const otherPid = await backendPid(other);
    const pending = applyBatch(other, registry, keys.toReversed().map((k, i) => create(100 + i, k)));
    await waitFor(() => gate.waiting(otherPid), "the second batch to wait for the first one's claims");
    await gate.open();
    const second = await pending;
    expect(new Set(statuses(await first))).toEqual(new Set(["applied"]));
    expect(new Set(statuses(second))).toEqual(new Set(["duplicate"]));
    expect(await count("users")).toBe(50);
  });
});
