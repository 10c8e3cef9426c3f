import { describe, expect, test } from "bun:test";
import { TEST_TOKEN, testApp } from "../../test/fakes.ts";

const BODY = JSON.stringify({ command: "create_user", version: "1", payload: { name: "Sahil", email: "sahil@example.com" } });

const execute = (authorization?: string) =>
  new Request("http://kitsune.test/execute", {
    method: "POST",
    headers: { "content-type": "application/json", ...(authorization !== undefined ? { authorization } : {}) },
    body: BODY,
  });

describe("bearer auth on /execute", () => {
  test("a missing token: 401 with WWW-Authenticate: Bearer, nothing produced", async () => {
    const { app, sink } = testApp();
    const res = await app.request(execute());
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="kitsune"');
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({ status: 401, code: "unauthorized" });
    expect(sink.calls).toHaveLength(0);
  });

  test("a wrong token, a token of another length, another scheme: 401 invalid_token", async () => {
    const { app } = testApp();
    for (const header of [`Bearer ${TEST_TOKEN.slice(0, -1)}x`, "Bearer a", `Bearer ${TEST_TOKEN}extra`]) {
      const res = await app.request(execute(header));
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"');
    }
    for (const header of [`Basic ${btoa("u:p")}`, "Bearer", "", `Bearer ${TEST_TOKEN} more`]) {
      const res = await app.request(execute(header));
      expect(res.status).toBe(401);
    }
  });

  test("the right token, with any case of the scheme: 202", async () => {
    const { app } = testApp();
    expect((await app.request(execute(`Bearer ${TEST_TOKEN}`))).status).toBe(202);
    expect((await app.request(execute(`bearer ${TEST_TOKEN}`))).status).toBe(202);
  });

  test("any of several configured tokens", async () => {
    const { app } = testApp({
      config: { topics: { events: "db-events", logs: "app-logs", results: "r" }, auth: { tokens: ["one", "two"], disabled: false }, maxBodyBytes: 65536 },
    });
    expect((await app.request(execute("Bearer one"))).status).toBe(202);
    expect((await app.request(execute("Bearer two"))).status).toBe(202);
    expect((await app.request(execute("Bearer three"))).status).toBe(401);
  });

  test("AUTH_DISABLED: no token needed", async () => {
    const { app } = testApp({
      config: { topics: { events: "db-events", logs: "app-logs", results: "r" }, auth: { tokens: [], disabled: true }, maxBodyBytes: 65536 },
    });
    expect((await app.request(execute())).status).toBe(202);
  });

  test("auth runs before the body is looked at", async () => {
    const { app } = testApp();
    const res = await app.request(new Request("http://kitsune.test/execute", { method: "POST", body: "not json" }));
    expect(res.status).toBe(401);
  });

  test("/openapi.json and /docs need no token", async () => {
    const { app } = testApp();
    expect((await app.request("/openapi.json")).status).toBe(200);
    expect((await app.request("/docs")).status).toBe(200);
  });
});
