// Needs PostgreSQL (POSTGRES_DSN, default the local kitsune database); works in a schema of its own.
import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import * as v from "valibot";
import { backendPid, closedGate, HOLD_COMMAND, withSchema, type TestSchema } from "../../test/pg.ts";
import { waitFor } from "../../test/wait.ts";
import { CommandResultSchema, type CommandEvent, type CommandLookup } from "../contracts.ts";
import { applyBatch } from "./apply.ts";
import { PIPELINE_WINDOW } from "./event-pipeline.ts";
import { isConnectionLost, RetriableBatchError } from "./errors.ts";
import { migrate } from "./migrations.ts";
import { createRegistry, loadRegistry, parseCommandFile } from "./registry.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

let db: TestSchema;
let registry: CommandLookup;

/** Test-only commands: raise any SQLSTATE, or hold the batch open until the test says (test/pg.ts). */
const TEST_COMMANDS = {
  "raise.v1.sql": "-- command: raise\n-- version: 1\n-- description: Fail with a SQLSTATE.\nSELECT kitsune_test_raise(:sqlstate::text)",
  [HOLD_COMMAND.file]: HOLD_COMMAND.text,
};

beforeAll(async () => {
  db = await withSchema();
  await migrate(db.sql, "./sql");
  await db.sql.unsafe(`CREATE FUNCTION kitsune_test_raise(code text) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'raised %', code USING ERRCODE = code; END $$`);
  const extra = Object.entries(TEST_COMMANDS).map(([file, text]) => parseCommandFile(file, text));
  registry = createRegistry([...(await loadRegistry("./sql")).list(), ...extra]);
});
afterAll(() => db?.drop());
beforeEach(async () => {
  await db.sql`TRUNCATE users, idempotency_log, idempotency_duplicates`;
});

let seq = 0;
function event(command: string, payload: Record<string, unknown>, { version = "1", key }: { version?: string; key?: string } = {}): CommandEvent {
  seq++;
  return {
    id: `evt-${seq}`,
    command,
    version,
    payload,
    metadata: { idempotency_key: key ?? `key-${seq}-${crypto.randomUUID()}`, timestamp: new Date().toISOString(), source: "test" },
  };
}

const statuses = (outcomes: { result: { status: string } }[]) => outcomes.map((o) => o.result.status);
const users = async () => [...(await db.sql`SELECT name, email, display_name FROM users ORDER BY email`)];
const log = async () => [
  ...(await db.sql`SELECT key, event_id, command, version, status, rows_affected, error FROM idempotency_log ORDER BY processed_at, key`),
];

describe("applyBatch", () => {
  test("applies create, update and delete, recording each key", async () => {
    const batch = [
      event("create_user", { name: "Sahil", email: "sahil@example.com" }),
      event("create_user", { name: "Ana", email: "ana@example.com" }),
      event("update_user", { name: "Sahil K", email: "sahil@example.com" }),
      event("delete_user", { email: "ana@example.com" }),
      event("update_user", { name: "Nobody", email: "nobody@example.com" }),
    ];
    const outcomes = await applyBatch(db.sql, registry, batch);

    expect(outcomes.map((o) => [o.result.status, o.result.rows_affected])).toEqual([
      ["applied", 1], ["applied", 1], ["applied", 1], ["applied", 1], ["applied", 0],
    ]);
    expect(await users()).toEqual([{ name: "Sahil K", email: "sahil@example.com", display_name: null }]);
    const rows = await db.sql`SELECT key, event_id, status, rows_affected FROM idempotency_log`;
    expect(rows.length).toBe(5);
    for (const [i, e] of batch.entries()) {
      expect(rows.find((r) => r.key === e.metadata.idempotency_key)).toEqual({
        key: e.metadata.idempotency_key, event_id: e.id, status: "applied", rows_affected: i === 4 ? 0 : 1,
      });
    }
  });

  test("outcomes carry a valid CommandResult and the event", async () => {
    const e = event("create_user", { name: "A", email: "a@example.com" });
    const [o] = await applyBatch(db.sql, registry, [e]);
    expect(o!.event).toBe(e);
    expect(o!.def?.file).toBe("sql/commands/create_user.v1.sql");
    const result = v.parse(CommandResultSchema, o!.result);
    expect(result).toEqual({
      id: e.id, idempotency_key: e.metadata.idempotency_key, command: "create_user", version: "1",
      status: "applied", rows_affected: 1, finished_at: expect.any(String),
    });
    expect(Date.parse(result.finished_at)).toBeGreaterThan(Date.now() - 60_000);
  });

  test("version 2 of create_user, null display_name falling back to the name", async () => {
    await applyBatch(db.sql, registry, [
      event("create_user", { name: "Bo", email: "bo@example.com", display_name: "Bobby" }, { version: "2" }),
      event("create_user", { name: "Cy", email: "cy@example.com", display_name: null }, { version: "2" }),
    ]);
    expect(await users()).toEqual([
      { name: "Bo", email: "bo@example.com", display_name: "Bobby" },
      { name: "Cy", email: "cy@example.com", display_name: "Cy" },
    ]);
  });

  test("extra payload fields are ignored", async () => {
    const outcomes = await applyBatch(db.sql, registry, [event("create_user", { name: "E", email: "e@example.com", age: 3 })]);
    expect(statuses(outcomes)).toEqual(["applied"]);
  });

  test("an empty batch does nothing", async () => {
    expect(await applyBatch(db.sql, registry, [])).toEqual([]);
  });
});

describe("idempotency", () => {
  test("the same key in a later batch has no effect and reports the stored result", async () => {
    const first = event("create_user", { name: "Sahil", email: "sahil@example.com" }, { key: "k-1" });
    await applyBatch(db.sql, registry, [first]);
    const again = { ...first, id: "evt-redelivered" };
    const [o] = await applyBatch(db.sql, registry, [again]);

    expect(o!.result).toMatchObject({ status: "duplicate", rows_affected: 0, idempotency_key: "k-1", id: "evt-redelivered" });
    expect(o!.original).toEqual({
      event_id: first.id, status: "applied", rows_affected: 1, error: null, processed_at: expect.any(Date),
    });
    expect((await users()).length).toBe(1);
    expect((await log()).length).toBe(1);
    // The duplicate's own id is recorded, for GET /commands/:id; the original's redelivery is not.
    await applyBatch(db.sql, registry, [first]);
    expect([...(await db.sql`SELECT event_id, key FROM idempotency_duplicates`)]).toEqual([{ event_id: "evt-redelivered", key: "k-1" }]);
  });

  test("a batch mixing keys processed before with new ones: each old one a duplicate, each new one applied", async () => {
    const old = [1, 4].map((i) => event("create_user", { name: `old ${i}`, email: `old${i}@example.com` }, { key: `mix-${i}` }));
    await applyBatch(db.sql, registry, old);
    const batch = [0, 1, 2, 3, 4, 5].map((i) => event("create_user", { name: `new ${i}`, email: `new${i}@example.com` }, { key: `mix-${i}` }));
    const outcomes = await applyBatch(db.sql, registry, batch);

    expect(statuses(outcomes)).toEqual(["applied", "duplicate", "applied", "applied", "duplicate", "applied"]);
    expect(outcomes[1]!.original).toMatchObject({ event_id: old[0]!.id, status: "applied" });
    expect(outcomes[4]!.original).toMatchObject({ event_id: old[1]!.id, status: "applied" });
    expect((await users()).map((u) => u.name).sort()).toEqual(["new 0", "new 2", "new 3", "new 5", "old 1", "old 4"]);
    expect((await log()).length).toBe(6);
  });

  test("the same key twice in one batch applies once", async () => {
    const outcomes = await applyBatch(db.sql, registry, [
      event("create_user", { name: "A", email: "a@example.com" }, { key: "same" }),
      event("create_user", { name: "B", email: "b@example.com" }, { key: "same" }),
    ]);
    expect(statuses(outcomes)).toEqual(["applied", "duplicate"]);
    expect(outcomes[1]!.original?.status).toBe("applied");
    expect(await users()).toEqual([{ name: "A", email: "a@example.com", display_name: null }]);
  });

  test("two workers racing on one key: the second waits for the first and finds it a duplicate", async () => {
    const gate = await closedGate(db);
    const other = db.connect({ max: 1 });
    const first = applyBatch(db.sql, registry, [
      event("create_user", { name: "First", email: "first@example.com" }, { key: "raced" }),
      event("hold", gate.hold), // keeps the first transaction, and its claim, open until the gate opens
    ]);
    await waitFor(gate.held, "the first batch to hold its claim at the gate");
    const otherPid = await backendPid(other);
    const second = applyBatch(other, registry, [event("create_user", { name: "Second", email: "second@example.com" }, { key: "raced" })]);
    await waitFor(() => gate.waiting(otherPid), "the second batch to wait for the first one's claim");
    await gate.open();
    expect(statuses(await first)).toEqual(["applied", "applied"]);
    expect(statuses(await second)).toEqual(["duplicate"]);
    expect((await second)[0]!.original?.status).toBe("applied");
    expect((await users()).map((u) => u.name)).toEqual(["First"]);
  });

  test("a duplicate whose statement would fail is still a duplicate", async () => {
    const e = event("create_user", { name: "A", email: "a@example.com" }, { key: "dup-fail" });
    await applyBatch(db.sql, registry, [e]);
    // Re-running the INSERT would violate users_email_key; the key check wins.
    const [o] = await applyBatch(db.sql, registry, [e]);
    expect(o!.result.status).toBe("duplicate");
    expect(o!.result.error).toBeUndefined();
  });
});

describe("permanent failures", () => {
  test("a unique violation fails that event only; later events in the batch apply", async () => {
    const batch = [
      event("create_user", { name: "A", email: "a@example.com" }),
      event("create_user", { name: "A again", email: "a@example.com" }),
      event("create_user", { name: "B", email: "b@example.com" }),
      event("update_user", { name: "A2", email: "a@example.com" }),
    ];
    const outcomes = await applyBatch(db.sql, registry, batch);

    expect(statuses(outcomes)).toEqual(["applied", "failed", "applied", "applied"]);
    const failed = outcomes[1]!;
    expect(failed.result.error).toEqual({ sqlstate: "23505", message: expect.stringContaining("users_email_key") });
    expect(failed.result.rows_affected).toBe(0);
    expect((failed.cause as { detail?: string }).detail).toBe("Key (email)=(a@example.com) already exists.");
    expect((await users()).map((u) => [u.name, u.email])).toEqual([["A2", "a@example.com"], ["B", "b@example.com"]]);

    const recorded = (await log()).find((r) => r.key === batch[1]!.metadata.idempotency_key);
    expect(recorded).toMatchObject({ status: "failed", rows_affected: 0, command: "create_user", version: "1" });
    expect(recorded!.error).toEqual(failed.result.error);
  });

  test("a redelivered failed event is a duplicate that reports the failure", async () => {
    await applyBatch(db.sql, registry, [event("create_user", { name: "A", email: "a@example.com" })]);
    const bad = event("create_user", { name: "A", email: "a@example.com" });
    await applyBatch(db.sql, registry, [bad]);
    const [o] = await applyBatch(db.sql, registry, [bad]);
    expect(o!.result.status).toBe("duplicate");
    expect(o!.original).toMatchObject({ status: "failed", error: { sqlstate: "23505" } });
  });

  test.each(["22P02", "23502", "42501", "P0001"])("SQLSTATE %s is permanent", async (sqlstate) => {
    const outcomes = await applyBatch(db.sql, registry, [
      event("raise", { sqlstate }),
      event("create_user", { name: "A", email: "a@example.com" }),
    ]);
    expect(statuses(outcomes)).toEqual(["failed", "applied"]);
    expect(outcomes[0]!.result.error).toEqual({ sqlstate, message: `raised ${sqlstate}` });
  });

  test("bad data PostgreSQL refuses (a NOT NULL column given null)", async () => {
    const [o] = await applyBatch(db.sql, registry, [event("create_user", { name: null, email: "n@example.com" })]);
    expect(o!.result.error?.sqlstate).toBe("23502");
  });
});

describe("pipelining", () => {
  test(`a batch over ${PIPELINE_WINDOW} events with failures and duplicates anywhere, window edges included`, async () => {
    const n = PIPELINE_WINDOW * 2 + 20;
    const clashes = new Set([0, 5, 6, 7, PIPELINE_WINDOW - 1, PIPELINE_WINDOW, PIPELINE_WINDOW + 1, n - 1]);
    const seenBefore = new Set([10, PIPELINE_WINDOW * 2, n - 2]); // keys from an earlier batch
    const repeats = new Set([PIPELINE_WINDOW - 2, PIPELINE_WINDOW + 2, n - 3]); // the key of event 1 again
    await applyBatch(db.sql, registry, [event("create_user", { name: "taken", email: "taken@example.com" }, { key: "seen" })]);

    const batch: CommandEvent[] = [];
    for (let i = 0; i < n; i++) {
      batch.push(
        clashes.has(i)
          ? event("create_user", { name: `clash ${i}`, email: "taken@example.com" })
          : seenBefore.has(i)
            ? event("create_user", { name: `dupe ${i}`, email: `dupe${i}@example.com` }, { key: "seen" })
            : repeats.has(i)
              ? event("create_user", { name: `dupe ${i}`, email: `dupe${i}@example.com` }, { key: batch[1]!.metadata.idempotency_key })
              : event("create_user", { name: `user ${i}`, email: `user${i}@example.com` }),
      );
    }
    const outcomes = await applyBatch(db.sql, registry, batch);

    const dupes = seenBefore.size + repeats.size;
    expect(statuses(outcomes)).toEqual(
      batch.map((_, i) => (clashes.has(i) ? "failed" : seenBefore.has(i) || repeats.has(i) ? "duplicate" : "applied")),
    );
    expect(outcomes.map((o) => o.result.id)).toEqual(batch.map((e) => e.id));
    expect(outcomes[PIPELINE_WINDOW + 2]!.original).toMatchObject({ event_id: batch[1]!.id, status: "applied" });
    const rows = await users();
    expect(rows.length).toBe(1 + n - clashes.size - dupes);
    expect(rows.some((r) => String(r.name).startsWith("dupe") || String(r.name).startsWith("clash"))).toBe(false);
    const logged = await db.sql`SELECT status, count(*)::int AS n, sum(rows_affected)::int AS rows FROM idempotency_log GROUP BY 1 ORDER BY 1`;
    expect([...logged]).toEqual([
      { status: "applied", n: 1 + n - clashes.size - dupes, rows: 1 + n - clashes.size - dupes },
      { status: "failed", n: clashes.size, rows: 0 },
    ]);
  });

  test(`clean batches of any size around the window (${PIPELINE_WINDOW})`, async () => {
    for (const n of [1, 2, PIPELINE_WINDOW - 1, PIPELINE_WINDOW, PIPELINE_WINDOW + 1, PIPELINE_WINDOW * 3 + 5]) {
      await db.sql`TRUNCATE users, idempotency_log, idempotency_duplicates`;
      const batch = Array.from({ length: n }, (_, i) => event("create_user", { name: `u${i}`, email: `u${i}@example.com` }));
      const outcomes = await applyBatch(db.sql, registry, batch);
      expect(outcomes.map((o) => [o.result.id, o.result.status])).toEqual(batch.map((e) => [e.id, "applied"]));
      expect((await users()).length).toBe(n);
    }
  });

  test("every event failing", async () => {
    await applyBatch(db.sql, registry, [event("create_user", { name: "A", email: "a@example.com" })]);
    const batch = Array.from({ length: 100 }, () => event("create_user", { name: "A", email: "a@example.com" }));
    const outcomes = await applyBatch(db.sql, registry, batch);
    expect(new Set(statuses(outcomes))).toEqual(new Set(["failed"]));
    expect((await log()).length).toBe(101);
  });
});

describe("events that cannot run", () => {
  test("unknown command or version, missing or mistyped parameters fail without SQL; the rest apply", async () => {
    const batch = [
      event("drop_everything", {}),
      event("create_user", { name: "A", email: "a@example.com" }, { version: "9" }),
      event("create_user", { name: "A" }),
      event("create_user", { name: "A", email: { not: "scalar" } }),
      event("create_user", { name: "B", email: "b@example.com" }),
    ];
    const outcomes = await applyBatch(db.sql, registry, batch);

    expect(statuses(outcomes)).toEqual(["failed", "failed", "failed", "failed", "applied"]);
    expect(outcomes.map((o) => o.result.error)).toEqual([
      { sqlstate: "42704", message: "unknown command drop_everything version 1" },
      { sqlstate: "42704", message: "unknown command create_user version 9" },
      { sqlstate: "22023", message: 'invalid payload for create_user version 1: missing parameter "email"' },
      { sqlstate: "22023", message: 'invalid payload for create_user version 1: parameter "email": expected a string, number or boolean' },
      undefined,
    ]);
    expect(outcomes[0]!.def).toBeUndefined();
    expect(outcomes[2]!.def?.command).toBe("create_user");
    expect((await log()).map((r) => r.key)).toEqual([batch[4]!.metadata.idempotency_key]);
  });

  test("an idempotency key PostgreSQL could not store fails that event alone", async () => {
    const outcomes = await applyBatch(db.sql, registry, [
      event("create_user", { name: "A", email: "a@example.com" }, { key: "x".repeat(257) }),
      event("create_user", { name: "B", email: "b@example.com" }, { key: "nul\0key" }),
      event("create_user", { name: "C", email: "c@example.com" }),
    ]);
    expect(statuses(outcomes)).toEqual(["failed", "failed", "applied"]);
    expect(outcomes[0]!.result.error?.sqlstate).toBe("22023");
  });

  test("values PostgreSQL refuses fail that event alone: NUL in text, a value too large to index", async () => {
    const outcomes = await applyBatch(db.sql, registry, [
      event("create_user", { name: "nul\0name", email: "n@example.com" }),
      event("create_user", { name: "big", email: `${Buffer.from(crypto.getRandomValues(new Uint8Array(6000))).toString("base64")}@example.com` }),
      event("create_user", { name: "C", email: "c@example.com" }),
    ]);
    expect(statuses(outcomes)).toEqual(["failed", "failed", "applied"]);
    expect(outcomes.map((o) => o.result.error?.sqlstate)).toEqual(["22021", "54000", undefined]);
  });

  test("a batch of only such events needs no database", async () => {
    const outcomes = await applyBatch(null as never, registry, [event("nope", {})]);
    expect(statuses(outcomes)).toEqual(["failed"]);
  });
});

describe("transient failures", () => {
  test.each(["40001", "40P01", "53300", "57014", "55P03"])("SQLSTATE %s throws RetriableBatchError and commits nothing", async (sqlstate) => {
    const batch = [
      event("create_user", { name: "A", email: "a@example.com" }),
      event("raise", { sqlstate }),
      event("create_user", { name: "B", email: "b@example.com" }),
    ];
    const err = await applyBatch(db.sql, registry, batch).catch((e) => e);
    expect(err).toBeInstanceOf(RetriableBatchError);
    expect(err.sqlstate).toBe(sqlstate);
    expect(await users()).toEqual([]);
    expect(await log()).toEqual([]);
  });

  test("a lost connection throws RetriableBatchError, commits nothing, and a retry on a new pool applies", async () => {
    const pool = db.connect({ max: 1 });
    const pid = await backendPid(pool);
    const gate = await closedGate(db);
    const batch = [event("create_user", { name: "A", email: "a@example.com" }), event("hold", gate.hold)];
    const applying = applyBatch(pool, registry, batch).catch((e) => e);
    // The connection is lost in the middle of the batch: after the insert, inside its transaction.
    await waitFor(() => gate.waiting(pid), "the batch to reach the gate");
    await db.sql`SELECT pg_terminate_backend(${pid})`;
    const err = await applying;
    await gate.open();
    expect(err).toBeInstanceOf(RetriableBatchError);
    expect(isConnectionLost(err.cause)).toBe(true);
    expect(err.connectionLost).toBe(true);
    expect(await users()).toEqual([]);

    // What the worker does on `connectionLost`: drop the pool, retry on a fresh one.
    await pool.end({ timeout: 0 });
    const fresh = db.connect({ max: 1 });
    expect(statuses(await applyBatch(fresh, registry, [batch[0]!]))).toEqual(["applied"]);
  });
});
