import { describe, expect, test } from "bun:test";
import { TextCache } from "./consumer.ts";

describe("TextCache", () => {
  const cache = new TextCache();
  const at = (texts: string[]) => {
    const buf = Buffer.from(texts.join(""));
    let start = 0;
    return texts.map((t) => {
      const len = Buffer.byteLength(t);
      const got = cache.get(buf, start, len);
      start += len;
      return got;
    });
  };
  test("decodes what it has not seen, and what it has, the same", () => {
    const texts = ["content-type", "application/json", "kitsune-id", "ünï", "çødé ✓", "x".repeat(33), "", "a"];
    expect(at(texts)).toEqual(texts);
    expect(at(texts)).toEqual(texts);
  });
  test("texts sharing a slot (same length, first and last byte) are told apart", () => {
    const texts = ["abXc", "abYc", "aZZc", "abXc", "aZZc"];
    expect(at(texts)).toEqual(texts);
  });
});
