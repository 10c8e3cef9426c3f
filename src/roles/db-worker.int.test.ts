// Needs the broker (KAFKA_BROKERS, default 127.0.0.1:9092) and PostgreSQL (POSTGRES_DSN). Every
// world has its own topics, consumer group and schema; the worker runs in this process (`main.run`).
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import * as v from "valibot";
import {
  collect,
  commandEvent,
  createUser,
  createWorld,
  json,
  metricValue,
  pgProxy,
  produceEvents,
  startWorker,
  terminateWorkerSessions,
  text,
  waitFor,
  adminPool,
  type Collector,
  type RunningWorker,
  type World,
} from "../../test/db-worker-harness.ts";
import { APPEND_COMMAND, appendRegistry } from "../../test/append-command.ts";
import { CommandResultSchema, type CommandEvent, type CommandResult } from "../contracts.ts";
import { DLQ_HEADERS } from "../pipeline/dead-letter.ts";
import type { Message } from "../kafka/types.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

const results = (c: Collector, topic: string): CommandResult[] => c.on(topic).map((m) => v.parse(CommandResultSchema, json(m)));
const resultsFor = (c: Collector, topic: string, events: CommandEvent[]) => {
  const ids = new Set(events.map((e) => e.id));
  return results(c, topic).filter((r) => ids.has(r.id));
};
/** Waits for one result per event and returns them in the events' order. */
async function awaitResults(c: Collector, world: World, events: CommandEvent[]): Promise<CommandResult[]> {
  await c.until(() => resultsFor(c, world.topics.results, events).length >= events.length, `${events.length} results`);
  const byId = new Map(resultsFor(c, world.topics.results, events).map((r) => [r.id, r]));
  return events.map((e) => byId.get(e.id)!);
}
const users = async (world: World, emails: string[]) =>
  [...(await world.db.sql`SELECT name, email FROM users WHERE email = ANY(${emails}) ORDER BY email`)];

describe("db-worker on the broker and PostgreSQL", () => {
  let world: World;
  let worker: RunningWorker;
  let seen: Collector;

  const registry = appendRegistry();

  beforeAll(async () => {
    world = await createWorld();
    // The shipped commands plus chaos_append, whose table exists before the worker prepares it.
    await world.db.sql.unsafe(APPEND_COMMAND.table);
    worker = await startWorker(world, { SQL_DIR: registry.dir }); // creates the topics and migrates the schema
    seen = collect([world.topics.results, world.topics.dlq]);
  });
  afterAll(async () => {
    await seen?.stop();
    await worker?.stop();
    await world?.close();
    registry.remove();
  });

  test("create_user, update_user and delete_user are applied; each result is on db-results", async () => {
    const events = [
      commandEvent("create_user", { name: "Sahil", email: "sahil@example.com" }),
      commandEvent("create_user", { name: "Ana", email: "ana@example.com" }),
      commandEvent("update_user", { name: "Sahil K", email: "sahil@example.com" }),
      commandEvent("delete_user", { email: "ana@example.com" }),
      commandEvent("update_user", { name: "Nobody", email: "nobody@example.com" }),
    ];
    await produceEvents(world.topics.events, events);

    const got = await awaitResults(seen, world, events);
    expect(got.map((r) => [r.command, r.status, r.rows_affected])).toEqual([
      ["create_user", "applied", 1],
      ["create_user", "applied", 1],
      ["update_user", "applied", 1],
      ["delete_user", "applied", 1],
      ["update_user", "applied", 0],
    ]);
    got.forEach((r, i) => {
      expect(r).toMatchObject({ idempotency_key: events[i]!.metadata.idempotency_key, version: "1" });
      expect(r.error).toBeUndefined();
    });
    // Keyed like the events, so a reader of one partition sees a user's results in order.
    const messages = seen.on(world.topics.results).filter((m) => events.some((e) => e.id === json(m).id));
    expect(messages.map((m) => text(m.key))).toEqual(expect.arrayContaining(["sahil@example.com", "ana@example.com", "nobody@example.com"]));
    for (const m of messages) expect(m.headers).toMatchObject({ "content-type": "application/json", "kitsune-id": json(m).id });

    expect(await users(world, ["sahil@example.com", "ana@example.com", "nobody@example.com"])).toEqual([{ name: "Sahil K", email: "sahil@example.com" }]);
    const logged = await world.db.sql`SELECT key, status, rows_affected FROM idempotency_log WHERE key = ANY(${events.map((e) => e.metadata.idempotency_key)})`;
    expect(logged.length).toBe(5);
    expect(logged.every((r) => r.status === "applied")).toBe(true);
  });

  test("the same idempotency key twice, or again later, has one effect; the repeats are duplicates", async () => {
    // chaos_append: no constraint would stop a second apply, only the idempotency key does.
    const effects = async (email: string) => [...(await world.db.sql`SELECT name FROM chaos_effects WHERE email = ${email}`)];
    const payload = { name: "Dee", email: "dee@example.com" };
    const first = commandEvent("chaos_append", payload, { key: "once-only" });
    const retried = commandEvent("chaos_append", payload, { key: "once-only" }); // a client retry: new id, same key
    await produceEvents(world.topics.events, [first, retried]);
    const [r1, r2] = await awaitResults(seen, world, [first, retried]);
    expect([r1!.status, r1!.rows_affected]).toEqual(["applied", 1]);
    expect([r2!.status, r2!.rows_affected]).toEqual(["duplicate", 0]);

    // Again later, in a later batch, beside commands applied for the first time.
    const later = commandEvent("chaos_append", { ...payload, name: "Dee again" }, { key: "once-only" });
    const others = [1, 2, 3].map((i) => commandEvent("chaos_append", { name: `Other ${i}`, email: `other-${i}@example.com` }));
    await produceEvents(world.topics.events, [...others, later]);
    const [r3] = await awaitResults(seen, world, [later]);
    expect(r3!.status).toBe("duplicate");
    expect((await awaitResults(seen, world, others)).map((r) => r.status)).toEqual(["applied", "applied", "applied"]);

    expect(await effects("dee@example.com")).toEqual([{ name: "Dee" }]);
    const logged = await world.db.sql`SELECT event_id, status FROM idempotency_log WHERE key = 'once-only'`;
    expect([...logged]).toEqual([{ event_id: first.id, status: "applied" }]);
    expect(seen.on(world.topics.dlq).some((m) => json(m).metadata?.idempotency_key === "once-only")).toBe(false);
  });

  test("poison is dead-lettered with its context while later messages of the same partition apply", async () => {
    const partitionKey = "clash@example.com"; // every message below goes to this key's partition
    const first = commandEvent("create_user", { name: "First", email: partitionKey });
    const clash = commandEvent("create_user", { name: "Clash", email: partitionKey }); // users_email_key: 23505
    const unknown = commandEvent("drop_everything", { email: partitionKey });
    const after = commandEvent("update_user", { name: "After", email: partitionKey });
    const other = commandEvent("create_user", { name: "Other", email: "other@example.com" });
    const reports = await produceEvents(world.topics.events, [
      first,
      clash,
      { key: partitionKey, value: "{ this is not json", headers: { "kitsune-id": "not-json-1" } },
      { key: partitionKey, value: null, headers: { "kitsune-id": "empty-1" } },
      { key: partitionKey, value: JSON.stringify(unknown), headers: { "content-type": "application/json", "kitsune-id": unknown.id } },
      after,
      { key: partitionKey, value: JSON.stringify(other), headers: { "content-type": "application/json", "kitsune-id": other.id } },
    ]);
    expect(new Set(reports.map((r) => r.partition)).size).toBe(1);
    const partition = reports[0]!.partition;
    const [clashAt, notJsonAt, emptyAt, unknownAt] = [reports[1]!.offset, reports[2]!.offset, reports[3]!.offset, reports[4]!.offset];

    const got = await awaitResults(seen, world, [first, clash, unknown, after, other]);
    expect(got.map((r) => r.status)).toEqual(["applied", "failed", "failed", "applied", "applied"]);
    expect(got[1]!.error).toEqual({ sqlstate: "23505", message: expect.stringContaining("users_email_key") });
    expect(got[2]!.error?.sqlstate).toBe("42704");
    expect(await users(world, [partitionKey, "other@example.com"])).toEqual([
      { name: "After", email: partitionKey },
      { name: "Other", email: "other@example.com" },
    ]);

    const byOffset = (offset: number) => (m: Message) => m.headers[DLQ_HEADERS.partition] === String(partition) && m.headers[DLQ_HEADERS.offset] === String(offset);
    const dlq = () => seen.on(world.topics.dlq).filter((m) => m.headers[DLQ_HEADERS.topic] === world.topics.events);
    await seen.until(() => [clashAt, notJsonAt, emptyAt, unknownAt].every((o) => dlq().some(byOffset(o))), "four dead letters");

    const dead = dlq().find(byOffset(clashAt))!;
    expect(text(dead.key)).toBe(partitionKey);
    expect(json(dead)).toEqual(clash); // the original bytes
    expect(dead.headers).toMatchObject({
      "content-type": "application/json",
      "kitsune-id": clash.id,
      [DLQ_HEADERS.sqlstate]: "23505",
      [DLQ_HEADERS.topic]: world.topics.events,
      [DLQ_HEADERS.partition]: String(partition),
      [DLQ_HEADERS.offset]: String(clashAt),
      [DLQ_HEADERS.attempts]: "1",
    });
    expect(dead.headers[DLQ_HEADERS.error]).toContain("users_email_key");
    const firstFailure = Date.parse(dead.headers[DLQ_HEADERS.firstFailure]!);
    const lastFailure = Date.parse(dead.headers[DLQ_HEADERS.lastFailure]!);
    expect(firstFailure).toBeGreaterThan(Date.now() - 60_000);
    expect(lastFailure).toBeGreaterThanOrEqual(firstFailure);

    const notJson = dlq().find(byOffset(notJsonAt))!;
    expect(text(notJson.value)).toBe("{ this is not json");
    expect(notJson.headers[DLQ_HEADERS.error]).toMatch(/^not JSON/);
    expect(notJson.headers[DLQ_HEADERS.sqlstate]).toBeUndefined();
    expect(dlq().find(byOffset(emptyAt))!.headers[DLQ_HEADERS.error]).toBe("empty message value");
    expect(dlq().find(byOffset(unknownAt))!.headers).toMatchObject({
      [DLQ_HEADERS.sqlstate]: "42704",
      [DLQ_HEADERS.error]: "unknown command drop_everything version 1",
    });
    // Each poison message once, and the worker goes on.
    expect(dlq().filter(byOffset(clashAt)).length).toBe(1);
    await waitFor(async () => (await worker.readyz()).status === 200, "the worker ready");
    expect(metricValue(await worker.metrics(), "kitsune_db_dead_letters_total")).toBeGreaterThanOrEqual(4);
  });
});

describe("db-worker while PostgreSQL is unreachable", () => {
  test("pauses with the breaker open and not ready, then catches up: nothing lost, nothing dead-lettered", async () => {
    await using world = await createWorld();
    const proxy = await pgProxy();
    const admin = adminPool();
    const worker = await startWorker(world, { POSTGRES_DSN: proxy.dsn(world) });
    const seen = collect([world.topics.dlq]);
    try {
      const waves = [0, 1, 2].map((w) => Array.from({ length: 500 }, (_, i) => createUser(w * 500 + i, `outage-${world.id}`)));
      await produceEvents(world.topics.events, waves[0]!);
      await waitFor(async () => (await world.count("idempotency_log")) > 0, "the first commands applied");
      await produceEvents(world.topics.events, waves[1]!);

      // The outage: sessions ended under the worker (FATAL 57P01), and no new connection gets through.
      expect(await terminateWorkerSessions(admin, world.appName)).toBeGreaterThan(0);
      await proxy.cut();
      await produceEvents(world.topics.events, waves[2]!);
      const open = { breaker: false, notReady: false };
      await waitFor(async () => {
        open.breaker ||= metricValue(await worker.metrics(), "kitsune_db_breaker_open") === 1;
        // NOTE: /readyz may fail on its own PostgreSQL check a moment before a batch opens the
        // breaker; what must hold is a 503 that says the breaker is open.
        const ready = await worker.readyz();
        if (ready.status === 503 && ready.body.services["db-worker"].checks.breaker === "open") open.notReady = true;
        return open.breaker && open.notReady;
      }, "the breaker to open and /readyz to fail", { timeoutMs: 20_000 });
      // Nothing moves while the database is away: not while the worker probes it twice more either.
      const during = await world.count("idempotency_log");
      const probes = async () => metricValue(await worker.metrics(), "kitsune_db_breaker_probes_total") ?? 0;
      const probed = await probes();
      await waitFor(async () => (await probes()) >= probed + 2, "two more probes of PostgreSQL", { timeoutMs: 30_000 });
      expect(await world.count("idempotency_log")).toBe(during);
      expect(metricValue(await worker.metrics(), "kitsune_db_breaker_open")).toBe(1);

      await proxy.restore();
      await waitFor(async () => (await world.count("idempotency_log")) === 1500, "every command applied", { timeoutMs: 45_000 });
      await waitFor(async () => (await worker.readyz()).status === 200, "ready again", { timeoutMs: 15_000 });
      expect(metricValue(await worker.metrics(), "kitsune_db_breaker_open")).toBe(0);
      expect(await world.count("users")).toBe(1500);
      expect(world.depth(world.topics.dlq)).toBe(0);
      expect(seen.on(world.topics.dlq)).toEqual([]);
    } finally {
      await seen.stop();
      await worker.stop();
      await proxy.close();
      await admin.end();
    }
  }, 90_000);
});

describe("db-worker after a batch that failed for good", () => {
  test("the batch comes again, with those fetched behind it: nothing lost, nothing applied twice", async () => {
    await using world = await createWorld();
    const worker = await startWorker(world);
    const seen = collect([world.topics.results, world.topics.dlq]);
    try {
      // Not transient (42P01): every batch fails as a whole, is sought back and comes again.
      await world.db.sql`ALTER TABLE idempotency_log RENAME TO idempotency_log_away`;
      const events = Array.from({ length: 6000 }, (_, i) => createUser(i, `refetch-${world.id}`));
      await produceEvents(world.topics.events, events);
      // A few failed tries (6,000 events are three batches or more: the next ones are fetched meanwhile).
      const failed = async () => metricValue(await worker.metrics(), "kitsune_db_batches_failed_total") ?? 0;
      await waitFor(async () => (await failed()) >= 3, "three failed tries of the batch", { timeoutMs: 45_000 });
      expect(await world.count("users")).toBe(0);
      await world.db.sql`ALTER TABLE idempotency_log_away RENAME TO idempotency_log`;

      await waitFor(async () => (await world.count("idempotency_log")) === events.length, "every command applied", { timeoutMs: 45_000 });
      expect(await world.count("users")).toBe(events.length);
      await seen.until(() => results(seen, world.topics.results).length >= events.length, "every result");
      const byStatus = Map.groupBy(results(seen, world.topics.results), (r) => r.status);
      expect([...byStatus.keys()]).toEqual(["applied"]);
      expect(new Set(byStatus.get("applied")!.map((r) => r.id)).size).toBe(events.length);
      expect(seen.on(world.topics.dlq)).toEqual([]);
    } finally {
      await seen.stop();
      await worker.stop();
    }
  }, 90_000);
});

describe("db-worker rebalance", () => {
  test("two workers in one group, one stopped mid-stream: nothing lost, nothing applied twice", async () => {
    await using world = await createWorld();
    const a = await startWorker(world);
    const b = await startWorker(world);
    let stoppedA = false;
    const seen = collect([world.topics.results, world.topics.dlq]);
    try {
      const tag = `rebalance-${world.id}`;
      let produced = 0;
      // A steady stream, a wave every 100 ms, until A has been stopped and five more waves went out.
      const producing = (async () => {
        for (let after = 0; after < 5; after += stoppedA ? 1 : 0) {
          await produceEvents(world.topics.events, Array.from({ length: 300 }, (_, i) => createUser(produced + i, tag)));
          produced += 300;
          await Bun.sleep(100);
        }
      })();
      const appliedBy = async (w: RunningWorker) =>
        Number(/kitsune_db_commands_total\{command="create_user",status="applied"\} (\d+)/.exec(await w.metrics())?.[1] ?? 0);
      await waitFor(async () => (await appliedBy(a)) > 0 && (await appliedBy(b)) > 0, "both workers applying", { timeoutMs: 30_000 });
      await a.stop(); // hands its partitions over: its batches in flight are committed first
      stoppedA = true;
      await producing;
      const total = produced;
      await waitFor(async () => (await world.count("idempotency_log")) === total, "every command applied", { timeoutMs: 60_000 });

      expect(await world.count("users")).toBe(total);
      await seen.until(() => seen.on(world.topics.results).length >= total, "a result per command");
      const applied = new Map<string, number>();
      for (const r of results(seen, world.topics.results)) {
        if (r.status === "applied") applied.set(r.idempotency_key, (applied.get(r.idempotency_key) ?? 0) + 1);
      }
      expect(applied.size).toBe(total);
      expect([...applied.values()].every((n) => n === 1)).toBe(true);
      // Redelivered commands (a commit refused while the group rebalanced) report `duplicate`.
      expect(results(seen, world.topics.results).every((r) => r.status === "applied" || r.status === "duplicate")).toBe(true);
      expect(seen.on(world.topics.dlq)).toEqual([]);
    } finally {
      await seen.stop();
      if (!stoppedA) await a.stop();
      await b.stop();
    }
  }, 120_000);
});
