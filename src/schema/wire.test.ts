import { describe, expect, test } from "bun:test";
import { encodeValue, unwrap, valueSchema, wireSchemaId } from "./wire.ts";

const utf8 = new TextDecoder();
const bytes = (s: string) => new TextEncoder().encode(s);

describe("Confluent wire format", () => {
  test("magic byte 0, the id in 4 bytes big-endian, then the JSON as UTF-8", () => {
    const out = encodeValue('{"a":"ü"}', valueSchema(0x01020304, "confluent")) as Uint8Array;
    expect([...out.subarray(0, 5)]).toEqual([0, 1, 2, 3, 4]);
    expect(utf8.decode(out.subarray(5))).toBe('{"a":"ü"}');
    expect(wireSchemaId(out)).toBe(0x01020304);
  });

  test("plain JSON stays the string it was (no copy), with the id for the header only", () => {
    const schema = valueSchema(7, "json");
    expect(schema).toEqual({ id: 7, header: "7" });
    expect(encodeValue("{}", schema)).toBe("{}");
    expect(encodeValue("{}", undefined)).toBe("{}");
  });

  test("unwrap takes either format back to the JSON bytes", () => {
    const json = '{"id":"x","n":[1,2]}';
    expect(utf8.decode(unwrap(encodeValue(json, valueSchema(42, "confluent")) as Uint8Array))).toBe(json);
    expect(utf8.decode(unwrap(bytes(json)))).toBe(json);
    expect(utf8.decode(unwrap(bytes(" \n{}")))).toBe(" \n{}");
    expect(wireSchemaId(bytes(json))).toBeUndefined();
  });

  test("a value too short for the prefix is left as it is (and fails later as JSON)", () => {
    expect([...unwrap(new Uint8Array([0, 1]))]).toEqual([0, 1]);
    expect([...unwrap(new Uint8Array([]))]).toEqual([]);
  });

  test("unwrap works on a view into a larger buffer, as the consumer hands out", () => {
    const whole = new Uint8Array([9, 9, 0, 0, 0, 0, 5, 0x7b, 0x7d, 9]);
    const view = whole.subarray(2, 9);
    expect(wireSchemaId(view)).toBe(5);
    expect(utf8.decode(unwrap(view))).toBe("{}");
  });

  test("ids outside 4 bytes are refused", () => {
    expect(() => valueSchema(-1, "confluent")).toThrow(RangeError);
    expect(() => valueSchema(2 ** 32, "confluent")).toThrow(RangeError);
    expect(() => valueSchema(1.5, "json")).toThrow(RangeError);
  });
});
