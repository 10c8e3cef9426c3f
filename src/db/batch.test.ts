// decodeBatch and applyDecoded without Kafka or PostgreSQL: hand-built messages, a fake `apply`.
import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { CommandEventSchema, CommandResultSchema, type CommandEvent, type CommandResult } from "../contracts.ts";
import type { Outcome, StoredResult } from "./apply.ts";
import { DLQ_HEADERS } from "../pipeline/dead-letter.ts";
import { RetriableBatchError } from "./errors.ts";
import type { Message, OutgoingMessage } from "../kafka/types.ts";
import { rng } from "../../test/fakes.ts";
import { Counter, Registry } from "prom-client";
import { applyDecoded, countOutcomes, decodeBatch, plainCommandEvent, type BatchDeps, type BatchOutcome } from "./batch.ts";

const TOPICS = { results: "db-results", dlq: "db-events.dlq" };
const NOW = new Date("2026-01-02T03:04:05.678Z");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

let offset = 100;
function message(value: string | Uint8Array | null, { key = "k", partition = 2, headers = {} }: { key?: string | null; partition?: number; headers?: Record<string, string> } = {}): Message {
  return {
    topic: "db-events",
    partition,
    offset: offset++,
    key: key === null ? null : encoder.encode(key),
    value: typeof value === "string" ? encoder.encode(value) : value,
    headers: { "content-type": "application/json", ...headers },
    timestamp: Date.now(),
  };
}

function event(command: string, payload: Record<string, unknown> = {}, key = crypto.randomUUID()): CommandEvent {
  return {
    id: crypto.randomUUID(),
    command,
    version: "1",
    payload,
    metadata: { idempotency_key: key, timestamp: NOW.toISOString(), source: "test" },
  };
}

const eventMessage = (e: CommandEvent, opts?: Parameters<typeof message>[1]) => message(JSON.stringify(e), opts);

function result(e: CommandEvent, status: CommandResult["status"], extra: Partial<CommandResult> = {}): CommandResult {
  return {
    id: e.id,
    idempotency_key: e.metadata.idempotency_key,
    command: e.command,
    version: e.version,
    status,
    rows_affected: status === "applied" ? 1 : 0,
    finished_at: NOW.toISOString(),
    ...extra,
  };
}

const FAILED_ORIGINAL: StoredResult = {
  event_id: "first-delivery",
  status: "failed",
  rows_affected: 0,
  error: { sqlstate: "23505", message: "duplicate key value violates unique constraint \"users_email_key\"" },
  processed_at: NOW,
};

/**
 * A fake `apply` deciding by command name: `fail` fails with 23505, `dup` is a duplicate of an
 * applied command, `dup_failed` a duplicate of a failed one, `retry` throws RetriableBatchError;
 * anything else applies. Records every call.
 */
function fakeApply() {
  const calls: CommandEvent[][] = [];
  const apply = async (events: CommandEvent[]): Promise<Outcome[]> => {
    calls.push(events);
    if (events.some((e) => e.command === "retry")) throw new RetriableBatchError(Object.assign(new Error("gone"), { code: "CONNECTION_CLOSED" }));
    return events.map((e): Outcome => {
      switch (e.command) {
        case "fail":
          return { event: e, result: result(e, "failed", { error: { sqlstate: "23505", message: "duplicate key" } }) };
        case "dup":
          return { event: e, result: result(e, "duplicate"), original: { ...FAILED_ORIGINAL, status: "applied", rows_affected: 1, error: null } };
        case "dup_failed":
          return { event: e, result: result(e, "duplicate"), original: FAILED_ORIGINAL };
        default:
          return { event: e, result: result(e, "applied") };
      }
    });
  };
  return { apply, calls };
}

/** What a batch becomes, as the worker decides it: decoded, then applied. */
const handleBatch = (messages: Message[], deps: BatchDeps): Promise<BatchOutcome> =>
  applyDecoded(decodeBatch(messages, deps.topics.dlq, deps.now?.()), deps);

const deps = (apply: BatchDeps["apply"]): BatchDeps => ({ apply, topics: TOPICS, now: () => NOW });
const on = (topic: string, publish: OutgoingMessage[]) => publish.filter((m) => m.topic === topic);
const text = (b: OutgoingMessage["value"]) => (typeof b === "string" ? b : b ? decoder.decode(b) : null);
const resultsOf = (publish: OutgoingMessage[]) => on(TOPICS.results, publish).map((m) => v.parse(CommandResultSchema, JSON.parse(text(m.value)!)));

describe("decodeBatch then applyDecoded", () => {
  test("applies the decoded events in one call and publishes one result each, keyed and headed", async () => {
    const events = [event("create_user", { name: "A", email: "a@example.com" }), event("update_user"), event("delete_user")];
    const batch = events.map((e, i) => eventMessage(e, { key: `key-${i}` }));
    const { apply, calls } = fakeApply();

    const out = await handleBatch(batch, deps(apply));

    expect(calls).toEqual([events]);
    expect(out.deadLettered).toBe(0);
    expect(out.outcomes.map((o) => o.event)).toEqual(events);
    expect(out.publish.length).toBe(3);
    expect(resultsOf(out.publish).map((r) => [r.id, r.status, r.rows_affected])).toEqual(events.map((e) => [e.id, "applied", 1]));
    out.publish.forEach((m, i) => {
      expect(text(m.key ?? null)).toBe(`key-${i}`);
      expect(m.headers).toEqual({ "content-type": "application/json", "kitsune-id": events[i]!.id });
    });
  });

  test("an empty batch applies nothing", async () => {
    const { apply, calls } = fakeApply();
    expect(await handleBatch([], deps(apply))).toEqual({ outcomes: [], publish: [], deadLettered: 0 });
    expect(calls).toEqual([]);
  });

  test("a message that is not JSON is dead-lettered at once with its bytes, key and headers", async () => {
    const bad = message("{not json", { key: "the-key", headers: { traceparent: "00-abc-def-01", "kitsune-id": "x1" } });
    const { apply, calls } = fakeApply();

    const out = await handleBatch([bad], deps(apply));

    expect(calls).toEqual([]); // nothing to apply
    expect(out.deadLettered).toBe(1);
    expect(out.publish.length).toBe(1);
    const [dl] = out.publish;
    expect(dl!.topic).toBe(TOPICS.dlq);
    expect(dl!.key).toEqual(bad.key);
    expect(dl!.value).toEqual(bad.value);
    expect(dl!.headers).toEqual({
      "content-type": "application/json",
      traceparent: "00-abc-def-01",
      "kitsune-id": "x1",
      [DLQ_HEADERS.error]: expect.stringMatching(/^not JSON: /),
      [DLQ_HEADERS.topic]: "db-events",
      [DLQ_HEADERS.partition]: "2",
      [DLQ_HEADERS.offset]: String(bad.offset),
      [DLQ_HEADERS.attempts]: "1",
      [DLQ_HEADERS.firstFailure]: NOW.toISOString(),
      [DLQ_HEADERS.lastFailure]: NOW.toISOString(),
    });
    expect(dl!.headers![DLQ_HEADERS.sqlstate]).toBeUndefined();
  });

  test.each([
    ["an empty value", null, "empty message value"],
    ["a JSON array", "[1, 2]", "not a CommandEvent"],
    ["an event without metadata", JSON.stringify({ id: "1", command: "c", version: "1", payload: {} }), "metadata"],
    ["an empty idempotency key", JSON.stringify({ ...event("c"), metadata: { idempotency_key: "", timestamp: "t", source: "s" } }), "idempotency_key"],
    ["a payload that is a string", JSON.stringify({ ...event("c"), payload: "x" }), "payload"],
    ["a value that is not UTF-8", Uint8Array.of(0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d), "not UTF-8"],
  ])("%s is dead-lettered, naming what is wrong", async (_, value, reason) => {
    const { apply } = fakeApply();
    const out = await handleBatch([message(value)], deps(apply));
    expect(out.deadLettered).toBe(1);
    expect(on(TOPICS.dlq, out.publish)[0]!.headers![DLQ_HEADERS.error]).toContain(reason);
    expect(on(TOPICS.results, out.publish)).toEqual([]);
  });

  test("bad messages between good ones: each result goes with its own message", async () => {
    const a = event("create_user");
    const b = event("fail");
    const c = event("create_user");
    const batch = [message("nope", { key: "x" }), eventMessage(a, { key: "a" }), message(null, { key: "y" }), eventMessage(b, { key: "b" }), eventMessage(c, { key: "c" })];
    const { apply, calls } = fakeApply();

    const out = await handleBatch(batch, deps(apply));

    expect(calls).toEqual([[a, b, c]]);
    expect(out.deadLettered).toBe(3); // two that do not parse, one that failed
    const results = on(TOPICS.results, out.publish);
    expect(results.map((m) => text(m.key ?? null))).toEqual(["a", "b", "c"]);
    expect(resultsOf(out.publish).map((r) => [r.id, r.status])).toEqual([[a.id, "applied"], [b.id, "failed"], [c.id, "applied"]]);
    const dead = on(TOPICS.dlq, out.publish);
    expect(dead.map((m) => [text(m.key ?? null), m.headers![DLQ_HEADERS.offset]])).toEqual([
      ["x", String(batch[0]!.offset)],
      ["y", String(batch[2]!.offset)],
      ["b", String(batch[3]!.offset)],
    ]);
  });

  test("a failed command gets its result and a dead letter with the SQLSTATE", async () => {
    const e = event("fail");
    const m = eventMessage(e, { key: "a@example.com" });
    const { apply } = fakeApply();

    const out = await handleBatch([m], deps(apply));

    expect(resultsOf(out.publish)).toEqual([result(e, "failed", { error: { sqlstate: "23505", message: "duplicate key" } })]);
    const [dl] = on(TOPICS.dlq, out.publish);
    expect(dl!.value).toEqual(m.value);
    expect(dl!.headers).toMatchObject({
      [DLQ_HEADERS.error]: "duplicate key",
      [DLQ_HEADERS.sqlstate]: "23505",
      [DLQ_HEADERS.offset]: String(m.offset),
      [DLQ_HEADERS.partition]: "2",
      [DLQ_HEADERS.attempts]: "1",
    });
  });

  test("an unknown command fails like any other: result and dead letter (its SQLSTATE from apply)", async () => {
    const e = event("no_such_command");
    const apply = async (events: CommandEvent[]): Promise<Outcome[]> =>
      events.map((ev) => ({ event: ev, result: result(ev, "failed", { error: { sqlstate: "42704", message: "unknown command no_such_command version 1" } }) }));
    const out = await handleBatch([eventMessage(e)], deps(apply));
    expect(out.deadLettered).toBe(1);
    expect(on(TOPICS.dlq, out.publish)[0]!.headers).toMatchObject({ [DLQ_HEADERS.sqlstate]: "42704", [DLQ_HEADERS.error]: "unknown command no_such_command version 1" });
  });

  test("a duplicate of an applied command: its result only", async () => {
    const e = event("dup");
    const { apply } = fakeApply();
    const out = await handleBatch([eventMessage(e)], deps(apply));
    expect(out.deadLettered).toBe(0);
    expect(resultsOf(out.publish).map((r) => r.status)).toEqual(["duplicate"]);
  });

  test("a duplicate of a failed command is dead-lettered again, with the first delivery's error", async () => {
    // The first delivery may have committed its `failed` row and crashed before its dead letter got out.
    const e = event("dup_failed");
    const { apply } = fakeApply();
    const out = await handleBatch([eventMessage(e)], deps(apply));
    expect(out.deadLettered).toBe(1);
    expect(resultsOf(out.publish).map((r) => r.status)).toEqual(["duplicate"]);
    expect(on(TOPICS.dlq, out.publish)[0]!.headers).toMatchObject({
      [DLQ_HEADERS.sqlstate]: "23505",
      [DLQ_HEADERS.error]: FAILED_ORIGINAL.error!.message,
    });
  });

  test("a transient failure rejects the whole batch: nothing to publish, nothing to commit", async () => {
    const { apply } = fakeApply();
    const batch = [eventMessage(event("create_user")), message("not json"), eventMessage(event("retry"))];
    await expect(handleBatch(batch, deps(apply))).rejects.toBeInstanceOf(RetriableBatchError);
  });

  test("any other error from apply propagates as it is", async () => {
    const boom = new Error("bug");
    await expect(handleBatch([eventMessage(event("x"))], deps(() => Promise.reject(boom)))).rejects.toBe(boom);
  });

  test("a long error message is cut in the header", async () => {
    const e = event("x");
    const apply = async (events: CommandEvent[]): Promise<Outcome[]> =>
      events.map((ev) => ({ event: ev, result: result(ev, "failed", { error: { sqlstate: "22001", message: "y".repeat(10_000) } }) }));
    const out = await handleBatch([eventMessage(e)], deps(apply));
    expect(on(TOPICS.dlq, out.publish)[0]!.headers![DLQ_HEADERS.error]!.length).toBeLessThanOrEqual(4000);
  });
});

describe("plainCommandEvent, the shortcut past CommandEventSchema", () => {
  test("accepts only what the schema accepts, and gives what the schema outputs, in its order", () => {
    const r = rng(11);
    const anyValue = () => r.pick<unknown>(["s", "", 1, null, true, [], {}, { a: 1 }, ["x"]]);
    const fields = ["id", "command", "version", "payload", "metadata"];
    const metaFields = ["idempotency_key", "timestamp", "source"];
    const oddPayloads = () => r.pick<unknown>([JSON.parse('{"__proto__": {"x": 1}, "a": 1}'), { constructor: 1 }, { prototype: "p" }, [], null, "p", { nested: { a: [1] } }]);
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 20_000; i++) {
      const x: Record<string, unknown> = {
        metadata: { source: "it", idempotency_key: "k", timestamp: "2026-01-01T00:00:00Z" },
        version: "1",
        payload: { name: "A", email: "a@example.com" },
        command: "create_user",
        id: "0193a2b4",
      };
      for (let k = r.int(3); k > 0; k--) {
        const f = r.pick(fields);
        if (r.int(4) === 0) delete x[f];
        else x[f] = f === "payload" && r.int(2) === 0 ? oddPayloads() : anyValue();
      }
      if (typeof x.metadata === "object" && x.metadata !== null && r.int(3) === 0) {
        const meta = { ...(x.metadata as Record<string, unknown>) };
        const f = r.pick(metaFields);
        if (r.int(3) === 0) delete meta[f];
        else meta[f] = anyValue();
        if (r.int(5) === 0) meta.extra = 1;
        x.metadata = meta;
      }
      if (r.int(10) === 0) x.extra = anyValue();
      // Through JSON, as the worker sees it: `__proto__` is then an own key.
      const value = JSON.parse(JSON.stringify(r.int(50) === 0 ? r.pick<unknown>([null, [], "s", 1]) : x));
      const plain = plainCommandEvent(value);
      if (!plain) {
        refused++;
        continue;
      }
      accepted++;
      const schema = v.safeParse(CommandEventSchema, value);
      expect(schema.success).toBe(true);
      expect(JSON.stringify(plain)).toBe(JSON.stringify(schema.output));
    }
    expect(accepted).toBeGreaterThan(5000);
    expect(refused).toBeGreaterThan(5000);
  });

  test("what it refuses still decodes through the schema", () => {
    const e = event("create_user", { name: "A", email: "a@example.com" });
    const withOddPayload = { ...e, payload: JSON.parse('{"__proto__": 1, "name": "A"}') };
    expect(plainCommandEvent(withOddPayload)).toBeUndefined();
    const decoded = decodeBatch([message(JSON.stringify(withOddPayload))], TOPICS.dlq);
    expect(decoded.deadLetters).toEqual([]);
    expect(decoded.events).toEqual([{ ...e, payload: { name: "A" } }]);
  });
});

test("countOutcomes counts each command and status, in runs or mixed", async () => {
  const registry = new Registry();
  const counter = new Counter({ name: "c", help: "h", labelNames: ["command", "status"], registers: [registry] });
  const o = (command: string, status: CommandResult["status"]): Outcome => {
    const e = event(command);
    return { event: e, result: result(e, status) };
  };
  countOutcomes([o("a", "applied"), o("a", "applied"), o("b", "applied"), o("a", "applied"), o("a", "failed"), o("a", "failed")], counter);
  countOutcomes([], counter);
  countOutcomes([o("b", "duplicate")], counter);
  const values = (await counter.get()).values.map((x) => [x.labels.command, x.labels.status, x.value]);
  expect(values.sort()).toEqual([["a", "applied", 3], ["a", "failed", 2], ["b", "applied", 1], ["b", "duplicate", 1]]);
});
