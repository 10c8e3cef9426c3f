import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { ExecuteRequestSchema } from "../contracts.ts";
import { ORIGINAL_EXAMPLE, rng } from "../../test/fakes.ts";
import { fastExecuteRequest, parseExecuteRequest } from "./request.ts";

/** Values near the edges of what the schema accepts, for every field. */
const VALUES: unknown[] = [
  undefined, null, true, 0, 1, -1, 1.5, 2, 1e21, 123456789, 1234567890, NaN, "", " ", "1", " 1", "01", "2", "1.0", "v1",
  "create_user", " create_user", "Create_user", "create-user", "c", "a".repeat(128), "a".repeat(129), "x".repeat(256), "x".repeat(257),
  " padded ", "\t", "info", "Info", "warn", "FATAL", "TRACE", "ınfo", "message", "a".repeat(8192), "a".repeat(8193),
  [], [1], {}, { a: 1 }, { name: "n", email: "e" }, { __proto__: 1 }, JSON.parse('{"__proto__": 1}'), { constructor: 1 }, { prototype: 1 },
  { level: "INFO", message: "m" }, { message: "m" }, { level: "debug", message: "" }, { level: 1, message: "m" }, { message: "m", extra: 1 },
  { idempotency_key: "k" }, { idempotency_key: " k " }, { source: "s", other: 1 }, { idempotency_key: "" }, { source: null },
];
const KEYS = ["command", "version", "payload", "log", "metadata", "extra", "__proto__", "level", "message", "idempotency_key", "source"];

function mutate(r: ReturnType<typeof rng>): unknown {
  const body = structuredClone(ORIGINAL_EXAMPLE) as Record<string, any>;
  const n = Math.floor(r.next() * 3);
  for (let i = 0; i < n; i++) {
    const target = r.pick([body, body, body.payload, body.log, body.metadata].filter((o) => o && typeof o === "object" && !Array.isArray(o)));
    const key = r.pick(KEYS);
    if (r.next() < 0.25) delete target[key];
    else Object.defineProperty(target, key, { value: structuredClone(r.pick(VALUES)), enumerable: true, configurable: true, writable: true });
  }
  return r.next() < 0.5 ? body : JSON.parse(JSON.stringify(body));
}

describe("the envelope's fast path", () => {
  test("takes the original example and returns what the schema returns", () => {
    const fast = fastExecuteRequest(structuredClone(ORIGINAL_EXAMPLE));
    expect(fast).toBeDefined();
    expect(JSON.stringify(fast)).toBe(JSON.stringify(v.parse(ExecuteRequestSchema, ORIGINAL_EXAMPLE)));
  });

  test("never accepts what the schema refuses, and returns the schema's output key for key (20,000 bodies)", () => {
    const r = rng(20240501);
    let taken = 0;
    let refused = 0;
    for (let i = 0; i < 20_000; i++) {
      const body = mutate(r);
      const fast = fastExecuteRequest(body);
      const reference = v.safeParse(ExecuteRequestSchema, body, { abortEarly: false });
      if (!reference.success) refused++;
      if (fast === undefined) continue;
      taken++;
      if (!reference.success) throw new Error(`fast path accepted what the schema refuses (#${i}): ${JSON.stringify(body)}`);
      // Same values and the same key order (the CommandEvent is serialised from it).
      expect(JSON.stringify(fast)).toBe(JSON.stringify(reference.output));
    }
    // The generator must exercise both sides for this to mean anything.
    expect(taken).toBeGreaterThan(2_000);
    expect(refused).toBeGreaterThan(5_000);
  });

  test("parseExecuteRequest falls back to valibot's issues for a refused body", () => {
    const parsed = parseExecuteRequest({ ...ORIGINAL_EXAMPLE, payload: [1] });
    expect(parsed.success).toBe(false);
    if (!parsed.success) expect(v.getDotPath(parsed.issues[0])).toBe("payload");
  });
});
