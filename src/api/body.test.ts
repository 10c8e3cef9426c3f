import { describe, expect, test } from "bun:test";
import { isJsonContentType, jsonDepth, readJson } from "./body.ts";
import { ApiError } from "./problems.ts";

describe("isJsonContentType", () => {
  test.each([
    ["application/json", true],
    ["application/json; charset=utf-8", true],
    ['application/json;charset="UTF-8"', true],
    ["application/problem+json", true],
    ["application/json; charset=iso-8859-1", false],
    ["text/json", false],
    ["text/plain", false],
    ["multipart/form-data; boundary=x", false],
    ["", false],
    [null, false],
  ])("%p → %p", (header, expected) => {
    expect(isJsonContentType(header)).toBe(expected);
  });
});

describe("jsonDepth", () => {
  test.each([
    ["1", 0],
    ["{}", 1],
    ['{"a":[{"b":[]}]}', 4],
    ['{"a":"[[[[{{{{"}', 1],
    ['{"a":"\\"[[[["}', 1],
    ['["\\\\",[[]]]', 3],
  ])("%s has depth %d", (text, depth) => {
    expect(jsonDepth(text)).toBe(depth);
  });

  test("stops counting past the limit", () => {
    expect(jsonDepth("[".repeat(100_000), 32)).toBe(33);
  });
});

/** The ApiError a read is refused with. */
const refusal = (p: Promise<unknown>): Promise<ApiError> =>
  p.then(
    () => {
      throw new Error("expected a refusal");
    },
    (err: ApiError) => err,
  );

describe("readJson", () => {
  const req = (body: RequestInit["body"], headers: Record<string, string> = { "content-type": "application/json" }) =>
    new Request("http://x/", { method: "POST", headers, body });

  test("parses a good body", async () => {
    expect(await readJson(req('{"a":[1,2]}'), { maxBytes: 100 })).toEqual({ a: [1, 2] });
  });

  test("a declared length over the limit is refused before reading", async () => {
    const request = req("{}", { "content-type": "application/json", "content-length": "1000000" });
    const err = await refusal(readJson(request, { maxBytes: 100 }));
    expect(err).toBeInstanceOf(ApiError);
    expect(err.code).toBe("payload_too_large");
  });

  test("a body of exactly the limit is read", async () => {
    const body = `"${"x".repeat(98)}"`;
    expect(await readJson(req(body), { maxBytes: 100 })).toBe("x".repeat(98));
    const err = await refusal(readJson(req(`"${"x".repeat(99)}"`), { maxBytes: 100 }));
    expect(err.code).toBe("payload_too_large");
  });

  test("a stream that errors is a 400, not a 5xx", async () => {
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("{"));
        c.error(new Error("connection reset"));
      },
    });
    const err = await refusal(readJson(req(stream), { maxBytes: 100 }));
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
  });
});
