/**
 * The api role behind the process's real HTTP server (src/http.ts) on a socket: mounting keeps
 * auth and problem answers, and body limits hold for real chunked and lying-length uploads.
 * The sink is a fake and PostgreSQL is unreachable here; the real broker and database are in
 * api.int.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import type { Config } from "../config.ts";
import { buildApp } from "../http.ts";
import { silentLogger } from "../logger.ts";
import { createRegistry } from "../metrics.ts";
import { start } from "../roles/api.ts";
import type { Service } from "../service.ts";
import { FakeSink, memoryLookup, SAMPLE_COMMANDS, TEST_TOKEN } from "../../test/fakes.ts";

const config = {
  role: "api",
  httpPort: 0,
  kafka: { brokers: ["localhost:9092"], overrides: {}, transactions: true },
  // Nothing listens on port 1: PostgreSQL is unreachable, which the api must survive.
  postgresDsn: "postgres://kitsune@127.0.0.1:1/kitsune",
  loki: { url: "http://localhost:3100" },
  sqlDir: "./sql",
  topics: { logs: "app-logs", events: "db-events", results: "db-results" },
  auth: { tokens: [TEST_TOKEN], disabled: false },
  maxBodyBytes: 4096,
  logLevel: "silent",
} satisfies Config;

const GOOD = JSON.stringify({ command: "create_user", version: "1", payload: { name: "Sahil", email: "sahil@example.com" } });
const auth = { authorization: `Bearer ${TEST_TOKEN}` };

let server: Server<undefined>;
let service: Service;
let base: string;
const sink = new FakeSink();

beforeAll(async () => {
  const registry = createRegistry();
  service = await start(config, { logger: silentLogger, registry, sink, commands: memoryLookup(SAMPLE_COMMANDS) });
  server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: buildApp([service], registry).fetch });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(async () => {
  await service.stop();
  server.stop(true);
});

describe("the api mounted in the process server", () => {
  test("probes need no token; /readyz reports the wired sink and registry", async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    // PostgreSQL is reported but not required: only GET /commands/:id needs it.
    expect(((await ready.json()) as any).services.api.checks).toMatchObject({
      kafka: "ok",
      registry: "ok (3 commands)",
      postgres: expect.stringMatching(/^unavailable/),
    });
  });

  test("POST /execute: 202 with a token, 401 problem without", async () => {
    const ok = await fetch(`${base}/execute`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: GOOD });
    expect(ok.status).toBe(202);
    const denied = await fetch(`${base}/execute`, { method: "POST", headers: { "content-type": "application/json" }, body: GOOD });
    expect(denied.status).toBe(401);
    expect(denied.headers.get("content-type")).toBe("application/problem+json");
    expect(denied.headers.get("www-authenticate")).toStartWith("Bearer");
  });

  test("/metrics shows the api's metrics", async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toContain('kitsune_http_requests_total{method="POST",route="/execute",status="202"}');
  });

  test("a chunked body without content-length over the limit: 413", async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > 1_000_000) return controller.close();
        sent += 1024;
        controller.enqueue(new Uint8Array(1024).fill(0x20));
      },
    });
    const res = await fetch(`${base}/execute`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body,
      duplex: "half",
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as any).code).toBe("payload_too_large");
  });

  test("a declared content-length over the limit: 413 before the body is sent", async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      let text = "";
      Bun.connect({
        hostname: "127.0.0.1",
        port: server.port!,
        socket: {
          open(socket) {
            socket.write(
              `POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_TOKEN}\r\n` +
                "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{",
            );
          },
          data(_socket, data) {
            text += data.toString();
            if (text.includes("\r\n\r\n")) resolve(text);
          },
          close: () => resolve(text),
          error: (_s, err) => reject(err),
        },
      });
      // A generous deadline: the answer must come without the body, however busy the machine.
      setTimeout(() => resolve(text), 20_000);
    });
    expect(answer).toStartWith("HTTP/1.1 413");
  }, 30_000);
});

describe("the process server around the api", () => {
  test("an unknown path: 404 problem+json with the request id", async () => {
    const res = await fetch(`${base}/nowhere?x=1`);
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    const body = (await res.json()) as any;
    expect(body).toMatchObject({ status: 404, code: "not_found", instance: "/nowhere", type: "urn:kitsune:problem:not_found" });
    expect(body.request_id).toBe(res.headers.get("x-request-id"));
  });

  test("GET /commands/:id without a reachable PostgreSQL: 503 with Retry-After; start-up did not fail", async () => {
    const id = Bun.randomUUIDv7();
    const res = await fetch(`${base}/commands/${id}`, { headers: auth });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(((await res.json()) as any).code).toBe("database_unavailable");
  });

  test("GET /commands/:id needs a token and a UUID", async () => {
    expect((await fetch(`${base}/commands/${Bun.randomUUIDv7()}`)).status).toBe(401);
    const res = await fetch(`${base}/commands/not-a-uuid`, { headers: auth });
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).code).toBe("not_found");
  });
});
