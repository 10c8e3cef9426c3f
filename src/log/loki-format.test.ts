import { describe, expect, test } from "bun:test";
import type { LogEvent } from "../contracts.ts";
import {
  buildPushRequest,
  compareNanos,
  encodePush,
  isoToUnixNanos,
  lokiAuthHeaders,
  toLokiEntry,
  type LokiEntry,
} from "./loki-format.ts";

const event = (over: Partial<LogEvent> = {}): LogEvent => ({
  id: "0190a5e4-7b1c-7def-8abc-1234567890ab",
  level: "INFO",
  message: "User registration triggered",
  command: "create_user",
  source: "user-service",
  timestamp: "2024-05-01T12:00:00.123Z",
  idempotency_key: "key-1",
  ...over,
});

describe("isoToUnixNanos", () => {
  test.each([
    ["1970-01-01T00:00:00Z", "0"],
    ["2024-05-01T12:00:00.123Z", "1714564800123000000"],
    ["2024-05-01T12:00:00.123456789Z", "1714564800123456789"],
    ["2024-05-01T12:00:00.1234567891234Z", "1714564800123456789"],
    ["2024-05-01T14:00:00.000000001+02:00", "1714564800000000001"],
    ["2024-05-01T07:30:00-0430", "1714564800000000000"],
    ["2024-02-29T00:00:00Z", "1709164800000000000"],
    ["1969-12-31T23:59:59.5Z", "-500000000"],
  ])("%s → %s", (iso, ns) => {
    expect(isoToUnixNanos(iso)).toBe(ns);
  });

  test("the same-second shortcut gives what the full conversion gives, and only for that second", () => {
    const cases: [string, string | undefined][] = [
      ["2024-05-01T12:00:07.5Z", "1714564807500000000"],
      ["2024-05-01T12:00:07.25Z", "1714564807250000000"],
      ["2024-05-01T12:00:07Z", "1714564807000000000"],
      ["2024-05-01T12:00:07.1234567891Z", "1714564807123456789"],
      ["2024-05-01T12:00:07,5Z", "1714564807500000000"],
      ["2024-05-01T12:00:07.5+01:00", "1714561207500000000"],
      ["2024-05-01T12:00:07.Z", undefined],
      ["2024-05-01T12:00:07.5xZ", undefined],
      ["2024-05-01T12:00:07.5z", "1714564807500000000"],
      ["2024-05-01T12:00:08.5Z", "1714564808500000000"],
      ["2024-05-01T12:00:07.5Z", "1714564807500000000"],
    ];
    for (const [iso, ns] of cases) expect([iso, isoToUnixNanos(iso)]).toEqual([iso, ns]);
  });

  test("agrees with Date.parse to the millisecond for the api's own timestamps", () => {
    const iso = new Date(1_714_564_800_123).toISOString();
    expect(BigInt(isoToUnixNanos(iso)!) / 1_000_000n).toBe(BigInt(Date.parse(iso)));
  });

  test("agrees with Date exactly across years 1 to 9999, before and after 1970, with offsets", () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 5000; i++) {
      const ms = Math.floor((random() * 2 - 1) * 62_000_000_000_000); // years ~1 to ~3935
      const date = new Date(ms);
      const offsetMin = Math.floor(random() * 24 * 60) - 12 * 60;
      const local = new Date(ms + offsetMin * 60_000);
      const sign = offsetMin < 0 ? "-" : "+";
      const abs = Math.abs(offsetMin);
      const pad = (n: number, w = 2) => String(n).padStart(w, "0");
      const iso =
        `${pad(local.getUTCFullYear(), 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}` +
        `T${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}.${pad(local.getUTCMilliseconds(), 3)}789` +
        `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
      if (local.getUTCFullYear() < 1) continue;
      expect([iso, isoToUnixNanos(iso)]).toEqual([iso, (BigInt(date.getTime()) * 1_000_000n + 789_000n).toString()]);
    }
  });

  test("years 0-99 are those years, not 1900-1999", () => {
    expect(isoToUnixNanos("0099-12-31T23:59:59Z")).toBe((BigInt(Date.parse("0099-12-31T23:59:59Z")) * 1_000_000n).toString());
    expect(Date.parse("0099-12-31T23:59:59Z")).toBeLessThan(Date.parse("1900-01-01T00:00:00Z"));
  });

  test.each(["", "2024-05-01", "2024-05-01T12:00:00", "2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z", "yesterday", "2024-05-01T24:00:00Z", "2024-05-01T12:00:00+25:00"])(
    "refuses %p",
    (iso) => {
      expect(isoToUnixNanos(iso)).toBeUndefined();
    },
  );
});

describe("toLokiEntry", () => {
  test("labels are service, lower-case level, source and command — never ids", () => {
    const entry = toLokiEntry(event({ level: "ERROR" }));
    expect(entry.labels).toEqual({ service: "kitsune", level: "error", source: "user-service", command: "create_user" });
    expect(JSON.stringify(entry.labels)).not.toContain("0190a5e4");
    expect(JSON.stringify(entry.labels)).not.toContain("key-1");
  });

  test("the line is JSON with message, level, command and both ids", () => {
    expect(JSON.parse(toLokiEntry(event()).line)).toEqual({
      level: "info",
      message: "User registration triggered",
      command: "create_user",
      id: "0190a5e4-7b1c-7def-8abc-1234567890ab",
      idempotency_key: "key-1",
    });
  });

  test("the timestamp is the event's", () => {
    expect(toLokiEntry(event()).ts).toBe("1714564800123000000");
  });

  test("equal label sets are one object, so pushes group lines by identity", () => {
    const one = toLokiEntry(event({ level: "WARN", id: "a" }));
    const two = toLokiEntry(event({ level: "WARN", id: "b", idempotency_key: "other" }));
    expect(two.labels).toBe(one.labels);
    expect(Object.isFrozen(one.labels)).toBe(true);
    expect(toLokiEntry(event({ level: "WARN", source: "billing" })).labels).not.toBe(one.labels);
  });

  test("label sets that only differ in where source ends and command starts stay apart", () => {
    const a = toLokiEntry(event({ source: "ab", command: "c" }));
    const b = toLokiEntry(event({ source: "a", command: "bc" }));
    expect(a.labels).toMatchObject({ source: "ab", command: "c" });
    expect(b.labels).toMatchObject({ source: "a", command: "bc" });
  });

  test("empty label values become 'unknown', long ones are cut", () => {
    const entry = toLokiEntry(event({ source: "  ", command: "x".repeat(5000) }));
    expect(entry.labels.source).toBe("unknown");
    expect(entry.labels.command!.length).toBe(512);
  });

  test("a timestamp that is not ISO 8601 throws a RangeError", () => {
    expect(() => toLokiEntry(event({ timestamp: "last tuesday" }))).toThrow(RangeError);
  });
});

describe("buildPushRequest", () => {
  const at = (ts: string, labels: Record<string, string>, line = ts): LokiEntry => ({ ts, labels, line });
  const a = { service: "kitsune", level: "info" };
  const b = { service: "kitsune", level: "error" };

  test("one stream per label set (name order does not matter), values sorted by time", () => {
    const req = buildPushRequest([
      at("30", a),
      at("20", b),
      at("100", { level: "info", service: "kitsune" }),
      at("9", a),
      at("30", a, "second at 30"),
    ]);
    expect(req.streams).toEqual([
      { stream: a, values: [["9", "9"], ["30", "30"], ["30", "second at 30"], ["100", "100"]] },
      { stream: b, values: [["20", "20"]] },
    ]);
  });

  test("compareNanos is numeric", () => {
    expect(["100", "-5", "99", "1714564800123000000", "0"].sort(compareNanos)).toEqual(["-5", "0", "99", "100", "1714564800123000000"]);
  });
});

describe("encodePush", () => {
  const entries = [toLokiEntry(event())];

  test("gzip by default, and the body is the push request", () => {
    const { body, headers, jsonBytes } = encodePush(entries);
    expect(headers).toEqual({ "content-type": "application/json", "content-encoding": "gzip" });
    const raw = Bun.gunzipSync(body);
    expect(raw.byteLength).toBe(jsonBytes);
    expect(JSON.parse(new TextDecoder().decode(raw))).toEqual(buildPushRequest(entries));
  });

  test("non-ASCII text survives as UTF-8", () => {
    const unicode = [toLokiEntry(event({ message: "Grüße 🦊 — 狐", source: "dienst-ä" }))];
    const { body, jsonBytes } = encodePush(unicode);
    const raw = Bun.gunzipSync(body);
    expect(raw.byteLength).toBe(jsonBytes);
    const req = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
    expect(JSON.parse(req.streams[0].values[0][1]).message).toBe("Grüße 🦊 — 狐");
    expect(req.streams[0].stream.source).toBe("dienst-ä");
  });

  test("level 0 sends plain JSON", () => {
    const { body, headers } = encodePush(entries, { gzipLevel: 0 });
    expect(headers).toEqual({ "content-type": "application/json" });
    expect(JSON.parse(new TextDecoder().decode(body))).toEqual(buildPushRequest(entries));
  });
});

test("lokiAuthHeaders", () => {
  expect(lokiAuthHeaders({})).toEqual({});
  expect(lokiAuthHeaders({ tenant: "t1", username: "u", password: "p" })).toEqual({
    "x-scope-orgid": "t1",
    authorization: `Basic ${btoa("u:p")}`,
  });
});
