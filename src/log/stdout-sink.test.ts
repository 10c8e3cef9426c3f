import { expect, test } from "bun:test";
import { toLokiEntry } from "./loki-format.ts";
import { createStdoutSink, formatEntry } from "./stdout-sink.ts";

const event = {
  id: "0193c0de-0000-7000-8000-000000000001",
  level: "INFO",
  message: "User registration triggered",
  command: "create_user",
  source: "user-service",
  timestamp: "2026-12-03T14:55:01.123Z",
  idempotency_key: "signup-sahil-1",
} as const;

test("a log event reads as one line: time, level, source, command, message, id", () => {
  expect(formatEntry(toLokiEntry(event))).toBe(
    "app-logs 2026-12-03T14:55:01.123Z INFO  user-service create_user  User registration triggered  id=0193c0de-0000-7000-8000-000000000001",
  );
});

test("the sink writes every entry of a push and answers like Loki's 2xx; it is always ready", async () => {
  let written = "";
  const sink = createStdoutSink({ write: (t: string) => (written += t) });
  const result = await sink.push([toLokiEntry(event), toLokiEntry({ ...event, level: "ERROR", message: "second" })]);
  expect(result.kind).toBe("ok");
  expect(written.split("\n")).toEqual([expect.stringContaining("INFO  user-service"), expect.stringContaining("ERROR user-service create_user  second"), ""]);
  expect((await sink.ready()).ok).toBe(true);
});
