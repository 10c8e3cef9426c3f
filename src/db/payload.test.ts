import { describe, expect, test } from "bun:test";
import * as v from "valibot";
import type { CommandDef, ParamType } from "../contracts.ts";
import { bindParams, paramSchema, payloadSchema } from "./payload.ts";

const def = (params: [string, ParamType][]): CommandDef => ({
  command: "c", version: "1", description: "", sql: "", file: "c.v1.sql",
  params: params.map(([name, type]) => ({ name, type })),
});

describe("bindParams", () => {
  test("binds in parameter order, as text, ignoring extra fields", () => {
    const bound = bindParams(def([["email", "scalar"], ["name", "text"], ["age", "integer"]]), {
      name: "Sahil", age: 42, email: "sahil@example.com", extra: { ignored: true },
    });
    expect(bound).toEqual({ ok: true, values: ["sahil@example.com", "Sahil", "42"] });
  });

  test("null binds SQL NULL; json is serialized", () => {
    const bound = bindParams(def([["a", "text"], ["b", "json"], ["c", "json"], ["d", "scalar"]]), {
      a: null, b: { x: [1, "y"] }, c: "s", d: true,
    });
    expect(bound).toEqual({ ok: true, values: [null, '{"x":[1,"y"]}', '"s"', "true"] });
  });

  test("reports every missing or mistyped parameter", () => {
    const bound = bindParams(def([["name", "text"], ["email", "scalar"], ["age", "integer"]]), {
      name: 7, age: 1.5,
    });
    expect(bound).toEqual({
      ok: false,
      issues: [
        { path: "name", message: 'parameter "name": expected a string' },
        { path: "email", message: 'missing parameter "email"' },
        { path: "age", message: 'parameter "age": expected a whole number' },
      ],
    });
  });

  test("an inherited property is not a payload field", () => {
    expect(bindParams(def([["toString", "scalar"]]), {}).ok).toBe(false);
  });
});

describe("paramSchema", () => {
  const ok = (type: ParamType, value: unknown) => v.safeParse(paramSchema(type), value).success;

  test.each([
    ["scalar", ["a", 1, true, null], [{}, [1]]],
    ["text", ["", "a", null], [1, true, {}]],
    ["integer", [1, -3, "12345678901234567890", "+7", null], [1.5, "1.5", "x", true]],
    ["numeric", [1.5, "-0.25", "1e10", ".5", 3], ["abc", "1,5", false, Number.NaN]],
    ["boolean", [true, false, null], ["true", 1]],
    ["json", [{}, [], "s", 1, null, true], []],
    ["uuid", ["0192d7e4-7c1e-7cc3-8f9e-3b8f2c4b5a61", null], ["not-a-uuid", 1]],
    ["timestamp", ["2024-05-01", "2024-05-01T10:00:00Z", "2024-05-01 10:00:00.123+02:00", null], ["yesterday", 1714557600]],
  ] as [ParamType, unknown[], unknown[]][])("%s", (type, good, bad) => {
    for (const value of good) expect(ok(type, value)).toBe(true);
    for (const value of bad) expect(ok(type, value)).toBe(false);
  });
});

describe("payloadSchema", () => {
  const d = def([["name", "text"], ["email", "scalar"]]);

  test("refuses extra fields by default (the api's 422)", () => {
    expect(v.safeParse(payloadSchema(d), { name: "a", email: "b" }).success).toBe(true);
    expect(v.safeParse(payloadSchema(d), { name: "a", email: "b", x: 1 }).success).toBe(false);
    expect(v.safeParse(payloadSchema(d), { name: "a" }).success).toBe(false);
  });

  test("keeps extra fields when allowed", () => {
    expect(v.safeParse(payloadSchema(d, { allowExtra: true }), { name: "a", email: "b", x: 1 }).success).toBe(true);
  });
});
