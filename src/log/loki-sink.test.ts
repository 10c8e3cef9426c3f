import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { startFakeLoki } from "../../test/fake-loki.ts";
import type { LokiEntry } from "./loki-format.ts";
import { createLokiSink, parseRetryAfter } from "./loki-sink.ts";

const loki = startFakeLoki({ tenant: "team-a", auth: { username: "worker", password: "s3cret" } });
const open = startFakeLoki();
afterAll(() => Promise.all([loki.stop(), open.stop()]));
beforeEach(() => {
  loki.reset();
  open.reset();
});

const sink = createLokiSink({ url: loki.url, tenant: "team-a", username: "worker", password: "s3cret", timeoutMs: 2000 });
const entries: LokiEntry[] = [
  { labels: { service: "kitsune", level: "info" }, ts: "1714564800000000002", line: "b" },
  { labels: { service: "kitsune", level: "info" }, ts: "1714564800000000001", line: "a" },
];

describe("push", () => {
  test("gzip JSON with tenant and basic auth; 2xx is ok", async () => {
    const result = await sink.push(entries);
    expect(result).toMatchObject({ kind: "ok", status: 204 });
    const [req] = loki.requests;
    expect(req?.gzip).toBe(true);
    expect(req?.headers["content-encoding"]).toBe("gzip");
    expect(req?.headers["content-type"]).toBe("application/json");
    expect(req?.headers["x-scope-orgid"]).toBe("team-a");
    expect(req?.headers.authorization).toBe(`Basic ${btoa("worker:s3cret")}`);
    expect(loki.entries.map((e) => [e.ts, e.line])).toEqual([
      ["1714564800000000001", "a"],
      ["1714564800000000002", "b"],
    ]);
  });

  test("a trailing slash in the URL is fine", async () => {
    const result = await createLokiSink({ url: `${open.url}/`, timeoutMs: 2000 }).push(entries);
    expect(result.kind).toBe("ok");
    expect(open.requests[0]?.path).toBe("/loki/api/v1/push");
  });

  test("wrong credentials are retriable (an operator fixes them; nothing is dead-lettered)", async () => {
    const result = await createLokiSink({ url: loki.url, tenant: "team-a", username: "worker", password: "nope", timeoutMs: 2000 }).push(entries);
    expect(result).toMatchObject({ kind: "retriable", cause: "401", status: 401 });
  });

  test("429 is retriable, with Retry-After", async () => {
    loki.failNext(429, 1, { retryAfter: "3" });
    expect(await sink.push(entries)).toMatchObject({ kind: "retriable", cause: "429", status: 429, retryAfterMs: 3000 });
    expect(loki.entries).toHaveLength(0);
  });

  test("5xx is retriable", async () => {
    loki.failNext(503, 1, { body: "too many unhealthy instances in the ring" });
    const result = await sink.push(entries);
    expect(result).toMatchObject({ kind: "retriable", cause: "503", reason: "HTTP 503: too many unhealthy instances in the ring" });
    expect(result).not.toHaveProperty("retryAfterMs");
  });

  test("400 is rejected, with Loki's reason", async () => {
    loki.rejectWhen((e) => e.line === "a" && "line too long");
    const result = await sink.push(entries);
    expect(result.kind).toBe("rejected");
    expect(result).toMatchObject({ status: 400 });
    expect((result as { reason: string }).reason).toContain("line too long");
    expect(loki.entries.map((e) => e.line)).toEqual(["b"]); // Loki keeps the valid ones
  });

  test("a timeout is retriable", async () => {
    loki.delayNext(500);
    const result = await createLokiSink({ url: loki.url, tenant: "team-a", username: "worker", password: "s3cret", timeoutMs: 50 }).push(entries);
    expect(result).toMatchObject({ kind: "retriable", cause: "timeout" });
    // Once the fake Loki is done with the request, it has dropped it: the sink really went away.
    await loki.waitFor("abandoned", 1);
    expect(loki.entries).toHaveLength(0); // the abandoned request does not land later
  });

  test("a refused connection is retriable", async () => {
    const gone = startFakeLoki();
    const url = gone.url;
    await gone.stop();
    const result = await createLokiSink({ url, timeoutMs: 2000 }).push(entries);
    expect(result).toMatchObject({ kind: "retriable", cause: "network" });
  });

  test("the caller's abort rejects with its reason", async () => {
    loki.delayNext(10_000);
    const controller = new AbortController();
    const pushing = sink.push(entries, { signal: controller.signal });
    await loki.waitFor("requests", 1); // aborted while the request is with Loki
    controller.abort(new Error("shutting down"));
    await expect(pushing).rejects.toThrow("shutting down");
  });

  test("a custom fetch is used", async () => {
    const calls: string[] = [];
    const custom = createLokiSink({
      url: "http://loki.invalid",
      timeoutMs: 1000,
      fetch: async (url) => {
        calls.push(url);
        return new Response(null, { status: 204 });
      },
    });
    expect((await custom.push(entries)).kind).toBe("ok");
    expect(calls).toEqual(["http://loki.invalid/loki/api/v1/push"]);
  });
});

describe("ready", () => {
  test("200 → ok; 503 → not ok with the reason", async () => {
    expect(await sink.ready()).toEqual({ ok: true, detail: "ok" });
    loki.setReady(false);
    expect(await sink.ready()).toEqual({ ok: false, detail: "HTTP 503: Ingester not ready" });
  });
});

test("parseRetryAfter", () => {
  const now = Date.parse("2024-05-01T12:00:00Z");
  expect(parseRetryAfter(null)).toBeUndefined();
  expect(parseRetryAfter("0")).toBe(0);
  expect(parseRetryAfter("12")).toBe(12_000);
  expect(parseRetryAfter("Wed, 01 May 2024 12:00:05 GMT", now)).toBe(5000);
  expect(parseRetryAfter("Wed, 01 May 2024 11:00:00 GMT", now)).toBe(0);
  expect(parseRetryAfter("soon")).toBeUndefined();
});
