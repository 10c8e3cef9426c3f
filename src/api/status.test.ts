import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import { CommandStatusSchema, ProblemSchema, type CommandStatus } from "../contracts.ts";
import { ProduceBreaker } from "./breaker.ts";
import type { CommandStatuses } from "./status.ts";
import { TEST_TOKEN, testApp } from "../../test/fakes.ts";

const ID = "0190c0de-0000-7000-8000-000000000001";
const get = (path: string, token: string | null = TEST_TOKEN) =>
  new Request(`http://kitsune.test${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });

/** A status store over a map; ids it does not hold are pending, as in idempotency_log. */
function memoryStatuses(known: Record<string, CommandStatus>): CommandStatuses & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async find(id) {
      asked.push(id);
      return known[id] ?? { id, status: "pending" };
    },
  };
}

describe("GET /commands/:id (status store faked)", () => {
  const applied: CommandStatus = {
    id: ID,
    status: "applied",
    idempotency_key: "k",
    command: "create_user",
    version: "1",
    rows_affected: 1,
    error: null,
    processed_at: "2024-05-01T12:00:00.000Z",
  };

  test("the stored status; pending for an id not there yet; ids are looked up in lower case", async () => {
    const statuses = memoryStatuses({ [ID]: applied });
    const { app } = testApp({ statuses });
    let res = await app.request(get(`/commands/${ID.toUpperCase()}`));
    expect(res.status).toBe(200);
    expect(v.parse(CommandStatusSchema, await res.json())).toEqual(applied);
    const other = "0190c0de-0000-7000-8000-000000000002";
    res = await app.request(get(`/commands/${other}`));
    expect(await res.json()).toEqual({ id: other, status: "pending" });
    expect(statuses.asked).toEqual([ID, other]);
  });

  test("not a UUID: 404 problem, the store is not asked", async () => {
    const statuses = memoryStatuses({});
    const { app } = testApp({ statuses });
    for (const id of ["nope", "0190c0de-0000-7000-8000-00000000000g", `${ID}0`, "%27%3B--"]) {
      const res = await app.request(get(`/commands/${id}`));
      expect(res.status).toBe(404);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(v.is(ProblemSchema, await res.json())).toBe(true);
    }
    expect(statuses.asked).toEqual([]);
  });

  test("no token: 401; another method: 405 with Allow", async () => {
    const { app } = testApp({ statuses: memoryStatuses({}) });
    expect((await app.request(get(`/commands/${ID}`, null))).status).toBe(401);
    const res = await app.request(`/commands/${ID}`, { method: "DELETE", headers: { authorization: `Bearer ${TEST_TOKEN}` } });
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("GET");
  });

  test("PostgreSQL failing or not configured: 503 database_unavailable with Retry-After", async () => {
    const failing: CommandStatuses = { find: () => Promise.reject(new Error("connect ECONNREFUSED")) };
    for (const statuses of [failing, undefined]) {
      const { app, metrics } = testApp({ statuses });
      const res = await app.request(get(`/commands/${ID}`));
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
      expect(((await res.json()) as { code: string }).code).toBe("database_unavailable");
      expect(await metrics.metrics()).toContain('kitsune_status_lookups_total{outcome="unavailable"} 1');
    }
  });
});

describe("ProduceBreaker", () => {
  test("closed until a timeout; then one probe per interval; a success closes it", () => {
    let now = 0;
    const breaker = new ProduceBreaker(1000, () => now);
    expect(breaker.allow()).toBe(true);
    breaker.timedOut();
    expect(breaker.isOpen).toBe(true);
    expect(breaker.allow()).toBe(false);
    now = 999;
    expect(breaker.allow()).toBe(false);
    now = 1000;
    expect(breaker.allow()).toBe(true); // the probe
    expect(breaker.allow()).toBe(false); // only one
    breaker.succeeded();
    expect(breaker.allow()).toBe(true);
    expect(breaker.allow()).toBe(true);
  });
});
