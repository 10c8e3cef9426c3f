import { describe, expect, jest, test } from "bun:test";
import type { CommandResult } from "../contracts.ts";
import type { Message } from "../kafka/types.ts";
import { ResultWaiters } from "./results.ts";

const result = (id: string, extra: Partial<CommandResult> = {}): CommandResult => ({
  id,
  idempotency_key: `key-${id}`,
  command: "create_user",
  version: "1",
  status: "applied",
  rows_affected: 1,
  finished_at: "2024-05-01T12:00:00.000Z",
  ...extra,
});

let offset = 0;
function message(value: unknown, headers: Record<string, string> = {}): Message {
  return {
    topic: "db-results",
    partition: 0,
    offset: offset++,
    key: null,
    value: typeof value === "string" ? new TextEncoder().encode(value) : new TextEncoder().encode(JSON.stringify(value)),
    headers,
    timestamp: Date.now(),
  };
}

describe("ResultWaiters", () => {
  test("a result that arrives while the request waits settles it", async () => {
    const waiters = new ResultWaiters();
    const waiting = waiters.expect("a")!.wait(5_000);
    expect(waiters.handleBatch([message(result("b"), { "kitsune-id": "b" }), message(result("a"), { "kitsune-id": "a" })])).toBe(1);
    expect(await waiting).toEqual(result("a"));
    expect(waiters.size).toBe(0);
  });

  test("a result that arrives before the wait starts (the broker's ack was slower) is kept", async () => {
    const waiters = new ResultWaiters();
    const expected = waiters.expect("a")!;
    waiters.handleBatch([message(result("a", { status: "failed", rows_affected: 0, error: { sqlstate: "23505", message: "dup" } }))]);
    expect(await expected.wait(10)).toMatchObject({ id: "a", status: "failed" });
  });

  test("no result in time: undefined after exactly the wait, and the id is forgotten", async () => {
    const waiters = new ResultWaiters();
    jest.useFakeTimers();
    try {
      let settled = false;
      const waiting = waiters.expect("a")!.wait(30);
      waiting.then(() => (settled = true));
      jest.advanceTimersByTime(29);
      await Promise.resolve();
      expect(settled).toBe(false);
      expect(waiters.size).toBe(1);
      jest.advanceTimersByTime(1);
      expect(await waiting).toBeUndefined();
    } finally {
      jest.useRealTimers();
    }
    expect(waiters.size).toBe(0);
    expect(waiters.handleBatch([message(result("a"))])).toBe(0);
  });

  test("cancel (the produce failed) settles the wait and forgets the id", async () => {
    const waiters = new ResultWaiters();
    const expected = waiters.expect("a")!;
    const waiting = expected.wait(5_000);
    expected.cancel();
    expect(await waiting).toBeUndefined();
    expect(waiters.size).toBe(0);
  });

  test("messages that are no CommandResult are skipped; results for nobody are not even parsed", () => {
    const waiters = new ResultWaiters();
    waiters.expect("a");
    const unparsable = message("{not json", { "kitsune-id": "a" });
    const wrongShape = message({ id: "a", status: "weird" });
    const forNobody = message("{not json either", { "kitsune-id": "zzz" });
    expect(waiters.handleBatch([unparsable, wrongShape, forNobody, { ...message(""), value: null }])).toBe(0);
    expect(waiters.size).toBe(1);
  });

  test("at most `max` waiters: beyond that, expect() declines and the request answers 202 at once", () => {
    const waiters = new ResultWaiters(2);
    expect(waiters.expect("a")).toBeDefined();
    expect(waiters.expect("b")).toBeDefined();
    expect(waiters.expect("c")).toBeUndefined();
    expect(waiters.expect("a")).toBeUndefined(); // the same id twice: the first one has it
  });
});
