import { describe, expect, test } from "bun:test";
import pino from "pino";
import * as v from "valibot";
import { waitFor } from "../../test/wait.ts";
import { AcceptedSchema, CommandEventSchema, LogEventSchema, ProblemSchema } from "../contracts.ts";
import { FakeSink, TEST_TOKEN, testApp, ORIGINAL_EXAMPLE } from "../../test/fakes.ts";
import { ProduceBreaker } from "./breaker.ts";
import { ResultWaiters } from "./results.ts";


const NOW = new Date("2024-05-01T12:00:00.000Z");
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function post(body: unknown, headers: Record<string, string> = {}): Request {
  return new Request("http://kitsune.test/execute", {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

const json = async (res: Response): Promise<any> => res.json();
const decode = (value: unknown) => JSON.parse(typeof value === "string" ? value : new TextDecoder().decode(value as Uint8Array));

/** Asserts the RFC 9457 envelope and returns the body. */
async function problem(res: Response, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  const body = await json(res);
  expect(v.is(ProblemSchema, body)).toBe(true);
  expect(body).toMatchObject({ status, code, type: `urn:kitsune:problem:${code}`, instance: "/execute" });
  expect(body.request_id).toBe(res.headers.get("x-request-id"));
  return body as v.InferOutput<typeof ProblemSchema> & Record<string, any>;
}

describe("POST /execute accepts", () => {
  test("the original example unchanged: 202 after both events are on the sink", async () => {
    const { app, sink } = testApp({ now: () => NOW });
    const res = await app.request(post(ORIGINAL_EXAMPLE));
    expect(res.status).toBe(202);
    const body = await json(res);
    expect(v.is(AcceptedSchema, body)).toBe(true);
    expect(body.id).toMatch(UUID_V7);
    expect(body).toMatchObject({ idempotency_key: "3f0f8a0e-signup-sahil", status: "accepted" });
    expect(Object.keys(body.events).sort()).toEqual(["app-logs", "db-events"]);

    expect(sink.calls).toHaveLength(1);
    const [commandMsg, logMsg] = sink.calls[0]!;
    expect(commandMsg!.topic).toBe("db-events");
    expect(logMsg!.topic).toBe("app-logs");

    const command = v.parse(CommandEventSchema, decode(commandMsg!.value));
    expect(command).toEqual({
      id: body.id,
      command: "create_user",
      version: "1",
      payload: { name: "Sahil", email: "sahil@example.com" },
      metadata: { idempotency_key: "3f0f8a0e-signup-sahil", timestamp: NOW.toISOString(), source: "user-service" },
    });
    const log = v.parse(LogEventSchema, decode(logMsg!.value));
    expect(log).toEqual({
      id: body.id,
      level: "INFO",
      message: "User registration triggered",
      command: "create_user",
      source: "user-service",
      timestamp: NOW.toISOString(),
      idempotency_key: "3f0f8a0e-signup-sahil",
    });

    // Keys: the registry's `key: email` for db-events; none for app-logs.
    expect(commandMsg!.key).toBe("sahil@example.com");
    expect(logMsg!.key ?? null).toBeNull();
    for (const m of [commandMsg!, logMsg!]) {
      expect(m.headers).toEqual({ "content-type": "application/json", "kitsune-id": body.id });
    }
  });

  test("the 202 reports each event's partition and offset from the sink", async () => {
    const sink = new FakeSink();
    const reports = [
      { topic: "db-events", partition: 2, offset: 1234 },
      { topic: "app-logs", partition: 0, offset: 99 },
    ];
    sink.sendAll = async () => reports;
    const { app } = testApp({ sink });
    const body = await json(await app.request(post(ORIGINAL_EXAMPLE)));
    expect(body.events).toEqual({ "db-events": { partition: 2, offset: 1234 }, "app-logs": { partition: 0, offset: 99 } });
  });

  test("defaults: newest version, INFO log naming the command, idempotency key = id, source unknown", async () => {
    const ids = ["0190a000-0000-7000-8000-000000000001"];
    const { app, sink } = testApp({ newId: () => ids[0]! });
    const res = await app.request(post({ command: "create_user", payload: { name: "A", email: "a@x", age: 30 } }));
    expect(res.status).toBe(202);
    const body = await json(res);
    expect(body.id).toBe(ids[0]);
    expect(body.idempotency_key).toBe(ids[0]);
    const command = decode(sink.messages[0]!.value);
    const log = decode(sink.messages[1]!.value);
    expect(command.version).toBe("2");
    expect(command.metadata).toMatchObject({ idempotency_key: ids[0], source: "unknown" });
    expect(log.level).toBe("INFO");
    expect(log.message).toContain("create_user");
  });

  test("the Idempotency-Key header, alone or equal to metadata.idempotency_key", async () => {
    const { app } = testApp();
    const alone = await app.request(post({ ...ORIGINAL_EXAMPLE, metadata: undefined }, { "idempotency-key": "hdr-1" }));
    expect((await json(alone)).idempotency_key).toBe("hdr-1");
    const both = await app.request(post(ORIGINAL_EXAMPLE, { "idempotency-key": "3f0f8a0e-signup-sahil" }));
    expect(both.status).toBe(202);
  });

  test("a numeric version, a lower-case level and a log without level", async () => {
    const { app, sink } = testApp();
    expect((await app.request(post({ ...ORIGINAL_EXAMPLE, version: 1, log: { level: "warn", message: "m" } }))).status).toBe(202);
    expect(decode(sink.messages[1]!.value).level).toBe("WARN");
    expect((await app.request(post({ ...ORIGINAL_EXAMPLE, log: { message: "m" } }))).status).toBe(202);
    expect(decode(sink.messages[3]!.value).level).toBe("INFO");
  });

  test("a valid traceparent is copied onto both messages; an invalid one is dropped", async () => {
    const { app, sink } = testApp();
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    await app.request(post(ORIGINAL_EXAMPLE, { traceparent: tp }));
    expect(sink.messages.map((m) => m.headers?.traceparent)).toEqual([tp, tp]);
    await app.request(post(ORIGINAL_EXAMPLE, { traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01" }));
    expect(sink.messages.slice(2).map((m) => m.headers?.traceparent)).toEqual([undefined, undefined]);
  });

  test("without a registry key the db-events key is the idempotency key", async () => {
    const { app, sink } = testApp();
    const res = await app.request(
      post({
        command: "record_order",
        payload: {
          order_id: "0190c0de-0000-7000-8000-000000000000",
          total: "19.99",
          paid: true,
          placed_at: "2024-05-01T12:00:00Z",
          items: [{ sku: "a", qty: 2 }],
        },
        metadata: { idempotency_key: "order-1" },
      }),
    );
    expect(res.status).toBe(202);
    expect(sink.messages[0]!.key).toBe("order-1");
  });
});

describe("POST /execute refuses", () => {
  test("an unknown command with 422 listing what is registered", async () => {
    const { app, sink } = testApp();
    const body = await problem(await app.request(post({ ...ORIGINAL_EXAMPLE, command: "drop_users" })), 422, "unknown_command");
    expect(body.detail).toContain("create_user (v1, v2)");
    expect(body.detail).toContain("record_order");
    expect(body.errors).toEqual([{ path: "command", message: expect.stringContaining("create_user") }]);
    expect(body.registered).toContainEqual({ command: "create_user", versions: ["1", "2"] });
    expect(sink.calls).toHaveLength(0);
  });

  test("an unknown version with 422 listing the registered versions", async () => {
    const { app } = testApp();
    const body = await problem(await app.request(post({ ...ORIGINAL_EXAMPLE, version: "7" })), 422, "unknown_version");
    expect(body.errors).toEqual([{ path: "version", message: "unknown version; registered: 1, 2" }]);
  });

  test("missing, extra and wrongly typed payload fields with 422 and their paths", async () => {
    const { app, sink } = testApp();
    const body = await problem(
      await app.request(post({ command: "create_user", version: "2", payload: { name: 5, age: 1.5, role: "admin" } })),
      422,
      "invalid_payload",
    );
    expect(body.errors).toEqual(
      expect.arrayContaining([
        { path: "payload.name", message: "expected a string" },
        { path: "payload.email", message: "missing field" },
        { path: "payload.age", message: "expected a whole number" },
        { path: "payload.role", message: "unexpected field" },
      ]),
    );
    expect(sink.calls).toHaveLength(0);
  });

  test("payload types: scalar refuses objects, integer takes digit strings, null fits any type, json takes anything", async () => {
    const { app } = testApp();
    await problem(await app.request(post({ ...ORIGINAL_EXAMPLE, payload: { name: { a: 1 }, email: "e" } })), 422, "invalid_payload");
    const scalarNull = await app.request(post({ ...ORIGINAL_EXAMPLE, payload: { name: null, email: "e" } }));
    expect(scalarNull.status).toBe(202);
    const digits = await app.request(post({ command: "create_user", payload: { name: "a", email: "e", age: "42" } }));
    expect(digits.status).toBe(202);
    // null binds SQL NULL for every type, as in the db-worker (both use db/payload's schema).
    const nullAge = await app.request(post({ command: "create_user", payload: { name: "a", email: "e", age: null } }));
    expect(nullAge.status).toBe(202);
    const bad = await problem(
      await app.request(
        post({ command: "record_order", payload: { order_id: "nope", total: "1,5", paid: "yes", placed_at: "yesterday", items: null } }),
      ),
      422,
      "invalid_payload",
    );
    expect(bad.errors!.map((e) => e.path).sort()).toEqual(["payload.order_id", "payload.paid", "payload.placed_at", "payload.total"]);
  });

  test("an envelope that does not match the schema with 422 invalid_request", async () => {
    const { app } = testApp();
    const body = await problem(
      await app.request(post({ command: "Create User", payload: [], log: { level: "LOUD", message: "x" }, extra: 1 })),
      422,
      "invalid_request",
    );
    const paths = body.errors!.map((e) => e.path);
    expect(paths).toEqual(expect.arrayContaining(["command", "payload", "log.level", "extra"]));
    await problem(await app.request(post([1, 2, 3])), 422, "invalid_request");
    await problem(await app.request(post("null")), 422, "invalid_request");
  });

  test("differing Idempotency-Key header and metadata key with 422", async () => {
    const { app } = testApp();
    await problem(await app.request(post(ORIGINAL_EXAMPLE, { "idempotency-key": "other" })), 422, "idempotency_key_conflict");
    await problem(await app.request(post(ORIGINAL_EXAMPLE, { "idempotency-key": "  " })), 422, "invalid_request");
  });

  test("malformed JSON, an empty body and invalid UTF-8 with 400", async () => {
    const { app } = testApp();
    await problem(await app.request(post('{"command": "create_user",')), 400, "malformed_json");
    await problem(await app.request(post("")), 400, "malformed_json");
    const latin1 = new Request("http://kitsune.test/execute", {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
      body: new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
    });
    await problem(await app.request(latin1), 400, "malformed_json");
  });

  test("absurd nesting with 400 before parsing", async () => {
    const { app } = testApp();
    const deep = `{"command":"create_user","payload":{"name":${"[".repeat(40)}${"]".repeat(40)},"email":"e"}}`;
    const body = await problem(await app.request(post(deep)), 400, "nesting_too_deep");
    expect(body.max_depth).toBe(32);
    // Brackets inside strings are not nesting.
    const inString = await app.request(post({ ...ORIGINAL_EXAMPLE, payload: { name: "[".repeat(100), email: "e" } }));
    expect(inString.status).toBe(202);
  });

  test("a wrong or missing content type with 415", async () => {
    const { app } = testApp();
    await problem(await app.request(post(ORIGINAL_EXAMPLE, { "content-type": "text/plain" })), 415, "unsupported_media_type");
    await problem(await app.request(post(ORIGINAL_EXAMPLE, { "content-type": "application/json; charset=latin1" })), 415, "unsupported_media_type");
    const none = new Request("http://kitsune.test/execute", {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}` },
      body: new Blob([JSON.stringify(ORIGINAL_EXAMPLE)]).stream(),
    });
    await problem(await app.request(none), 415, "unsupported_media_type");
    const ok = await app.request(post(ORIGINAL_EXAMPLE, { "content-type": "Application/JSON; charset=UTF-8" }));
    expect(ok.status).toBe(202);
  });

  test("a body over MAX_BODY_BYTES with 413, by content-length and while streaming", async () => {
    const { app } = testApp({ config: { topics: { events: "db-events", logs: "app-logs", results: "r" }, auth: { tokens: [TEST_TOKEN], disabled: false }, maxBodyBytes: 1024 } });
    const big = JSON.stringify({ ...ORIGINAL_EXAMPLE, payload: { name: "x".repeat(2000), email: "e" } });
    const body = await problem(await app.request(post(big)), 413, "payload_too_large");
    expect(body.max_bytes).toBe(1024);

    // A chunked body with no content-length that never ends: refused after the cap, not read to the end.
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(256).fill(0x20));
      },
    });
    const streamed = new Request("http://kitsune.test/execute", {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" },
      body: endless,
      duplex: "half",
    });
    expect(streamed.headers.get("content-length")).toBeNull();
    await problem(await app.request(streamed), 413, "payload_too_large");
    expect(pulled).toBeLessThan(10);
  });

  test("a sink that rejects: 503 with Retry-After, never 202", async () => {
    const sink = new FakeSink();
    sink.mode = "reject";
    const { app } = testApp({ sink, newId: () => "0190a000-0000-7000-8000-00000000000a" });
    const res = await app.request(post(ORIGINAL_EXAMPLE));
    const body = await problem(res, 503, "broker_unavailable");
    expect(res.headers.get("retry-after")).toBe("1");
    expect(body).toMatchObject({ id: "0190a000-0000-7000-8000-00000000000a", idempotency_key: "3f0f8a0e-signup-sahil" });
    expect(sink.calls).toHaveLength(1);
  });

  test("a sink that throws synchronously: 503", async () => {
    const sink = new FakeSink();
    sink.sendAll = () => {
      throw new Error("boom");
    };
    const { app } = testApp({ sink });
    await problem(await app.request(post(ORIGINAL_EXAMPLE)), 503, "broker_unavailable");
  });

  test("a sink that never settles: 503 after the produce timeout", async () => {
    const sink = new FakeSink();
    sink.mode = "hang";
    const { app, metrics } = testApp({ sink, produceTimeoutMs: 50, retryAfterSeconds: 3 });
    const res = await app.request(post(ORIGINAL_EXAMPLE));
    await problem(res, 503, "broker_unavailable");
    expect(res.headers.get("retry-after")).toBe("3");
    // It answered because the produce timed out (how soon is for `bench api`), not for another reason.
    expect(await metrics.metrics()).toContain('kitsune_produce_errors_total{reason="timeout"} 1');
  });

  test("other methods with 405 and Allow", async () => {
    const { app } = testApp();
    const res = await app.request("/execute", { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
    await problem(res, 405, "method_not_allowed");
    expect(res.headers.get("allow")).toBe("POST");
  });

  test("a sink bug (wrong report count) is a logged 500, not a 202", async () => {
    const sink = new FakeSink();
    sink.sendAll = async () => [];
    const lines: Record<string, any>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const { app } = testApp({ sink, logger });
    const body = await problem(await app.request(post(ORIGINAL_EXAMPLE)), 500, "internal");
    const logged = lines.filter((l) => l.msg === "unhandled error in api");
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 50, request_id: body.request_id, path: "/execute" });
    expect(logged[0]!.err.message).toBe("sink returned 0 delivery reports for 2 messages");
  });
});

describe("metrics", () => {
  test("requests by route and status, latency, produce errors and in-flight", async () => {
    const sink = new FakeSink();
    const { app, metrics } = testApp({ sink });
    await app.request(post(ORIGINAL_EXAMPLE));
    await app.request(post("{"));
    sink.mode = "reject";
    await app.request(post(ORIGINAL_EXAMPLE));
    await app.request("/nowhere");
    const text = await metrics.metrics();
    expect(text).toContain('kitsune_http_requests_total{method="POST",route="/execute",status="202"} 1');
    expect(text).toContain('kitsune_http_requests_total{method="POST",route="/execute",status="400"} 1');
    expect(text).toContain('kitsune_http_requests_total{method="POST",route="/execute",status="503"} 1');
    expect(text).toContain('kitsune_http_requests_total{method="GET",route="unmatched",status="404"} 1');
    expect(text).toContain('kitsune_http_request_duration_seconds_count{method="POST",route="/execute",status="202"} 1');
    expect(text).toContain('kitsune_produce_errors_total{reason="rejected"} 1');
    expect(text).toContain('kitsune_produce_duration_seconds_count{outcome="ok"} 1');
    expect(text).toContain('kitsune_commands_accepted_total{command="create_user",version="1"} 1');
    expect(text).toContain("kitsune_http_requests_in_flight 0");
  });

  test("two apps on one registry share the metrics instead of throwing", async () => {
    const { metrics } = testApp();
    expect(() => testApp({ metrics })).not.toThrow();
  });
});

describe("POST /execute?wait=<ms> (results fed by hand)", () => {
  const ID = "0190a000-0000-7000-8000-0000000000aa";
  const result = { id: ID, idempotency_key: "3f0f8a0e-signup-sahil", command: "create_user", version: "1", status: "applied", rows_affected: 1, finished_at: "2024-05-01T12:00:01.000Z" } as const;
  const resultMessage = (value: unknown) => ({ topic: "db-results", partition: 0, offset: 0, key: null, value: new TextEncoder().encode(JSON.stringify(value)), headers: { "kitsune-id": ID }, timestamp: 0 });

  test("200 with the CommandResult when it comes within the wait", async () => {
    const results = new ResultWaiters();
    const { app, metrics } = testApp({ results, newId: () => ID });
    const answer = app.request(new Request("http://kitsune.test/execute?wait=20000", post(ORIGINAL_EXAMPLE)));
    await waitFor(() => results.size === 1, "the request to wait for its result");
    expect(results.handleBatch([resultMessage(result)])).toBe(1);
    const res = await answer;
    expect(res.status).toBe(200);
    expect(await json(res)).toEqual(result);
    expect(res.headers.get("x-request-id")).toBe(ID);
    expect(await metrics.metrics()).toContain('kitsune_result_waits_total{outcome="result"} 1');
  });

  test("202 after the wait when no result comes; the waiter is gone afterwards", async () => {
    const results = new ResultWaiters();
    const { app, metrics } = testApp({ results, newId: () => ID });
    const res = await app.request(new Request("http://kitsune.test/execute?wait=100", post(ORIGINAL_EXAMPLE)));
    expect(res.status).toBe(202);
    // It waited and ran out of time; results.test.ts checks on a fake clock that a wait lasts its ms.
    expect(await metrics.metrics()).toContain('kitsune_result_waits_total{outcome="timeout"} 1');
    expect(results.size).toBe(0);
  });

  test("a produce that fails: 503 at once, nobody left waiting", async () => {
    const results = new ResultWaiters();
    const sink = new FakeSink();
    sink.mode = "reject";
    const { app } = testApp({ sink, results });
    await problem(await app.request(new Request("http://kitsune.test/execute?wait=5000", post(ORIGINAL_EXAMPLE))), 503, "broker_unavailable");
    expect(results.size).toBe(0);
  });

  test("without a results consumer (fake sink), ?wait answers 202 without waiting", async () => {
    const { app, metrics } = testApp();
    expect((await app.request(new Request("http://kitsune.test/execute?wait=30000", post(ORIGINAL_EXAMPLE)))).status).toBe(202);
    // No wait was started at all (one that timed out would count as outcome="timeout").
    expect(await metrics.metrics()).not.toContain("kitsune_result_waits_total{");
  });

  test("wait beyond 30000 ms, negative, fractional or not a number: 422 naming query:wait", async () => {
    const { app, sink } = testApp();
    for (const wait of ["30001", "-1", "1.5", "abc", "", "1e3"]) {
      const body = await problem(await app.request(new Request(`http://kitsune.test/execute?wait=${wait}`, post(ORIGINAL_EXAMPLE))), 422, "invalid_request");
      expect(body.errors).toEqual([{ path: "query:wait", message: "expected a whole number from 0 to 30000" }]);
    }
    expect(sink.calls).toHaveLength(0);
    expect((await app.request(new Request("http://kitsune.test/execute?wait=30000&other=1", post(ORIGINAL_EXAMPLE)))).status).toBe(202);
  });
});

describe("fail fast while the broker does not answer", () => {
  test("after a produce timeout, the next request gets 503 at once; a later probe that succeeds closes the breaker", async () => {
    const sink = new FakeSink();
    sink.mode = "hang";
    let clock = 0;
    const breaker = new ProduceBreaker(1000, () => clock);
    const { app, metrics } = testApp({ sink, produceTimeoutMs: 50, breaker });
    await problem(await app.request(post(ORIGINAL_EXAMPLE)), 503, "broker_unavailable");

    clock += 999; // still within the probe interval
    const fast = await app.request(post(ORIGINAL_EXAMPLE));
    await problem(fast, 503, "broker_unavailable");
    expect(fast.headers.get("retry-after")).toBe("1");
    expect(sink.calls).toHaveLength(1); // the fast 503 did not touch the sink
    expect(await metrics.metrics()).toContain('kitsune_produce_errors_total{reason="breaker_open"} 1');

    sink.mode = "ok";
    clock += 1; // one probe per Retry-After
    expect((await app.request(post(ORIGINAL_EXAMPLE))).status).toBe(202);
    expect(breaker.isOpen).toBe(false);
    expect((await app.request(post(ORIGINAL_EXAMPLE))).status).toBe(202);
    expect(sink.calls).toHaveLength(3);
  });
});
