import { describe, expect, test } from "bun:test";
import type { CommandDef } from "../contracts.ts";
import { acceptedBody, partitionKey, validTraceparent } from "./events.ts";

describe("validTraceparent", () => {
  const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  test.each([
    [good, good],
    [`  ${good} `, good],
    ["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"],
    [`${good}-extra`, undefined],
    ["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", undefined],
    ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", undefined],
    ["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", undefined],
    ["00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", undefined],
    ["garbage", undefined],
    [undefined, undefined],
  ])("%p → %p", (header, expected) => {
    expect(validTraceparent(header)).toBe(expected);
  });
});

describe("partitionKey", () => {
  const def: CommandDef = { command: "c", version: "1", description: "", key: "email", params: [], sql: "", file: "" };
  test("the key field's value, stringified", () => {
    expect(partitionKey(def, { email: "a@x" }, "idem")).toBe("a@x");
    expect(partitionKey(def, { email: 42 }, "idem")).toBe("42");
    expect(partitionKey(def, { email: { a: 1 } }, "idem")).toBe('{"a":1}');
  });
  test("the idempotency key when there is no usable value", () => {
    expect(partitionKey(def, { email: null }, "idem")).toBe("idem");
    expect(partitionKey(def, { email: "" }, "idem")).toBe("idem");
    expect(partitionKey(def, {}, "idem")).toBe("idem");
    expect(partitionKey({ ...def, key: undefined }, { email: "a@x" }, "idem")).toBe("idem");
  });
});

describe("acceptedBody", () => {
  const messages = [
    { topic: "db-events", value: "{}" },
    { topic: "app-logs", value: "{}" },
  ];
  test("refuses reports that do not match the messages", () => {
    expect(() => acceptedBody("i", "k", messages, [{ topic: "db-events", partition: 0, offset: 1 }])).toThrow();
    expect(() =>
      acceptedBody("i", "k", messages, [
        { topic: "app-logs", partition: 0, offset: 1 },
        { topic: "db-events", partition: 0, offset: 1 },
      ]),
    ).toThrow();
  });
});
