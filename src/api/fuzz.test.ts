import { expect, test } from "bun:test";
import * as v from "valibot";
import { ProblemSchema } from "../contracts.ts";
import { ORIGINAL_EXAMPLE, rng, TEST_TOKEN, testApp } from "../../test/fakes.ts";

type Rng = ReturnType<typeof rng>;

const NASTY_STRINGS = ["", " ", "\u0000", "\ud800", "💥", "null", "[]", "{}", "__proto__", "constructor", "1e400", "-0", "\\", '"', "<script>", "a".repeat(300)];
const NASTY_KEYS = ["command", "version", "payload", "log", "metadata", "name", "email", "__proto__", "constructor", "prototype", "", "level", "message", "idempotency_key"];

function randomString(r: Rng): string {
  if (r.next() < 0.3) return r.pick(NASTY_STRINGS);
  const len = r.int(40);
  let s = "";
  for (let i = 0; i < len; i++) s += String.fromCharCode(r.next() < 0.8 ? 32 + r.int(95) : r.int(0x10000));
  return s;
}

function randomJson(r: Rng, depth = 0): unknown {
  const roll = r.int(depth > 4 ? 6 : 9);
  switch (roll) {
    case 0:
      return null;
    case 1:
      return r.next() < 0.5;
    case 2:
      return r.pick([0, -0, 1, -1, 1.5, 2 ** 53 + 1, -(2 ** 63), 1e308, 5e-324, r.int(1e9)]);
    case 3:
    case 4:
      return randomString(r);
    case 5:
      return r.int(1000);
    case 6:
    case 7:
      return Object.fromEntries(Array.from({ length: r.int(5) }, () => [r.next() < 0.5 ? r.pick(NASTY_KEYS) : randomString(r), randomJson(r, depth + 1)]));
    default:
      return Array.from({ length: r.int(5) }, () => randomJson(r, depth + 1));
  }
}

const GOOD = { ...ORIGINAL_EXAMPLE, metadata: { ...ORIGINAL_EXAMPLE.metadata, idempotency_key: "k" } };

function mutate(r: Rng): unknown {
  const body = structuredClone(GOOD) as Record<string, any>;
  const n = 1 + r.int(3);
  for (let i = 0; i < n; i++) {
    const target = r.pick([body, body.payload, body.log, body.metadata].filter((o) => o && typeof o === "object"));
    const key = r.next() < 0.7 ? r.pick(Object.keys(target).concat(NASTY_KEYS)) : randomString(r);
    if (r.next() < 0.3) delete target[key];
    else target[key] = randomJson(r);
  }
  return body;
}

function deep(r: Rng): string {
  const depth = 33 + r.int(20_000);
  const open = r.next() < 0.5 ? "[" : '{"a":';
  const close = open === "[" ? "]" : "}";
  const inner = open.repeat(depth) + "1" + close.repeat(r.next() < 0.8 ? depth : r.int(depth));
  return r.next() < 0.5 ? inner : `{"command":"create_user","payload":{"name":${inner},"email":"e"}}`;
}

function huge(r: Rng): string {
  const size = 30_000 + r.int(80_000);
  const big = "x".repeat(size);
  return JSON.stringify(r.pick([
    { ...GOOD, payload: { name: big, email: "e" } },
    { ...GOOD, command: big },
    { ...GOOD, log: { message: big } },
    { ...GOOD, metadata: { idempotency_key: big } },
    { ...GOOD, payload: Object.fromEntries(Array.from({ length: size / 10 }, (_, i) => [`k${i}`, i])) },
  ]));
}

function randomBytes(r: Rng): Uint8Array {
  const out = new Uint8Array(r.int(3000));
  for (let i = 0; i < out.length; i++) out[i] = r.int(256);
  return out;
}

function randomRequest(r: Rng): Request {
  const headers: Record<string, string> = { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" };
  let body: RequestInit["body"];
  switch (r.int(7)) {
    case 0:
      body = randomBytes(r);
      break;
    case 1:
      body = JSON.stringify(randomJson(r));
      break;
    case 2:
      body = deep(r);
      break;
    case 3:
      body = huge(r);
      break;
    case 4: {
      const text = JSON.stringify(mutate(r));
      body = r.next() < 0.3 ? text.slice(0, r.int(text.length)) : text;
      break;
    }
    default:
      body = JSON.stringify(mutate(r));
  }
  if (r.next() < 0.1) headers["content-type"] = r.pick(["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16", "", "*/*"]);
  if (r.next() < 0.05) headers.authorization = r.pick(["", "Bearer", "Bearer wrong", "Basic Zm9vOmJhcg=="]);
  if (r.next() < 0.1) headers["idempotency-key"] = randomString(r).replace(/[^\x20-\x7e]/g, "");
  if (r.next() < 0.1) headers.traceparent = randomString(r).replace(/[^\x20-\x7e]/g, "");
  if (r.next() < 0.05) headers["content-length"] = String(r.int(1e9));
  const path = r.next() < 0.05 ? r.pick(["/execute/", "/execute?x=1", "/EXECUTE", "/commands/1"]) : "/execute";
  const method = r.next() < 0.05 ? r.pick(["GET", "PUT", "DELETE", "PATCH"]) : "POST";
  return new Request(`http://kitsune.test${path}`, { method, headers, body: method === "GET" ? undefined : body });
}

test("2,000 random bad requests: no 5xx, every error a problem document, and a good request still works", async () => {
  const seed = Number(process.env.FUZZ_SEED ?? 20240501);
  const r = rng(seed);
  const { app } = testApp();
  const statuses = new Map<number, number>();
  for (let i = 0; i < 2000; i++) {
    let req: Request;
    try {
      req = randomRequest(r);
    } catch {
      continue; // a header the Request constructor itself refuses never reaches a server
    }
    const res = await app.request(req);
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    if (res.status >= 500) throw new Error(`seed ${seed}, request ${i}: status ${res.status}: ${await res.text()}`);
    if (res.status >= 400) {
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(v.is(ProblemSchema, await res.json())).toBe(true);
    } else {
      await res.arrayBuffer();
    }
  }
  // The generator must actually reach the interesting refusals.
  if (process.env.FUZZ_VERBOSE) console.log(seed, Object.fromEntries(statuses));
  for (const status of [400, 413, 415, 422]) expect(statuses.get(status) ?? 0).toBeGreaterThan(20);

  const good = await app.request(
    new Request("http://kitsune.test/execute", {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(GOOD),
    }),
  );
  expect(good.status).toBe(202);
}, 60_000);
