/** The producer's pure parts: the rd_kafka_vu_t and rd_kafka_message_t encoders and the ring of pending sends (no broker). */
import { CString, read, toArrayBuffer } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import { nextOffsets } from "./consumer.ts";
import { MESSAGE, VTYPE, VU, type Pointer } from "./ffi.ts";
import { BatchEncoder, VuEncoder } from "./encoders.ts";
import { PendingSends } from "./producer.ts";
import type { Message } from "./types.ts";

type Decoded = { type: number } & Record<string, unknown>;

const u64 = (p: number, off: number) => read.u32(p as unknown as Pointer, off) + read.u32(p as unknown as Pointer, off + 4) * 2 ** 32;
const bytes = (p: number, len: number) => (len === 0 ? [] : [...new Uint8Array(toArrayBuffer(p as unknown as Pointer, 0, len))]);
const cstring = (p: number) => new CString(p as unknown as Pointer).toString();

/** Reads back what librdkafka would see in the vu array. */
function decode(vus: Pointer, count: number): Decoded[] {
  const out: Decoded[] = [];
  for (let i = 0; i < count; i++) {
    const at = (vus as unknown as number) + i * VU.size;
    const type = read.i32(at as unknown as Pointer, 0);
    const u = at + VU.union;
    if (type === VTYPE.TOPIC) out.push({ type, topic: cstring(u64(u, 0)) });
    else if (type === VTYPE.RKT) out.push({ type, rkt: u64(u, 0) });
    else if (type === VTYPE.PARTITION || type === VTYPE.MSGFLAGS) out.push({ type, int: read.i32(u as unknown as Pointer, 0) });
    else if (type === VTYPE.VALUE || type === VTYPE.KEY) out.push({ type, bytes: bytes(u64(u, 0), u64(u, 8)) });
    else if (type === VTYPE.OPAQUE) out.push({ type, opaque: u64(u, 0) });
    else if (type === VTYPE.HEADER) out.push({ type, name: cstring(u64(u, 0)), value: Buffer.from(bytes(u64(u, 8), u64(u, 16))).toString() });
    else out.push({ type });
  }
  return out;
}

const utf8 = (s: string) => [...Buffer.from(s)];

describe("VuEncoder", () => {
  test("topic by name, value, key, opaque, flags, headers", () => {
    const enc = new VuEncoder();
    const vus = enc.encode({ topic: "orders", value: "héllo", key: new Uint8Array([1, 2, 3]), headers: { a: "1", ünï: "✓", empty: "" } }, 42);
    expect(decode(vus, enc.count)).toEqual([
      { type: VTYPE.TOPIC, topic: "orders" },
      { type: VTYPE.VALUE, bytes: utf8("héllo") },
      { type: VTYPE.KEY, bytes: [1, 2, 3] },
      { type: VTYPE.OPAQUE, opaque: 42 },
      { type: VTYPE.MSGFLAGS, int: 2 },
      { type: VTYPE.HEADER, name: "a", value: "1" },
      { type: VTYPE.HEADER, name: "ünï", value: "✓" },
      { type: VTYPE.HEADER, name: "empty", value: "" },
    ]);
  });

  test("a topic handle, an explicit partition, a null value and no key", () => {
    const enc = new VuEncoder();
    const vus = enc.encode({ topic: "t", value: null, partition: 5 }, 2 ** 40 + 7, 0x1234_5678_9a as unknown as Pointer);
    expect(decode(vus, enc.count)).toEqual([
      { type: VTYPE.RKT, rkt: 0x1234_5678_9a },
      { type: VTYPE.PARTITION, int: 5 },
      { type: VTYPE.OPAQUE, opaque: 2 ** 40 + 7 },
      { type: VTYPE.MSGFLAGS, int: 2 },
    ]);
  });

  test("grows for big values and many headers, and reuses its buffers afterwards", () => {
    const enc = new VuEncoder();
    const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
    const headers = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`h${i}`, "x".repeat(i * 100)]));
    const vus = enc.encode({ topic: "t", value: big, key: "k".repeat(70_000), headers }, 1);
    const d = decode(vus, enc.count);
    expect(d[1]).toEqual({ type: VTYPE.VALUE, bytes: [...big] });
    expect((d[2]!.bytes as number[]).length).toBe(70_000);
    expect(d.filter((v) => v.type === VTYPE.HEADER)).toEqual(Object.entries(headers).map(([name, value]) => ({ type: VTYPE.HEADER, name, value })));

    const small = enc.encode({ topic: "t2", value: "v" }, 2);
    expect(decode(small, enc.count)).toEqual([
      { type: VTYPE.TOPIC, topic: "t2" },
      { type: VTYPE.VALUE, bytes: utf8("v") },
      { type: VTYPE.OPAQUE, opaque: 2 },
      { type: VTYPE.MSGFLAGS, int: 2 },
    ]);
  });
});

/** Reads back what rd_kafka_produce_batch would see: per message partition, value, key (null: NULL) and opaque. */
function decodeBatch(structs: Pointer, count: number) {
  return Array.from({ length: count }, (_, i) => {
    const at = (structs as unknown as number) + i * MESSAGE.size;
    const payload = u64(at, MESSAGE.payload);
    const key = u64(at, MESSAGE.key);
    return {
      err: read.i32(at as unknown as Pointer, MESSAGE.err),
      partition: read.i32(at as unknown as Pointer, MESSAGE.partition),
      value: payload ? bytes(payload, u64(at, MESSAGE.len)) : null,
      key: key ? bytes(key, u64(at, MESSAGE.key_len)) : null,
      opaque: u64(at, MESSAGE.opaque),
    };
  });
}

describe("BatchEncoder", () => {
  test("values and keys as bytes or text, null as NULL, empty as empty; partition -1 unless given; the ids as opaques", () => {
    const enc = new BatchEncoder();
    const messages = [
      { topic: "t", value: "héllo", key: new Uint8Array([1, 2, 3]) },
      { topic: "t", value: null, key: "k", partition: 4 },
      { topic: "t", value: "", key: null },
      { topic: "t", value: new Uint8Array([9]) },
    ];
    const structs = enc.encode(messages, [0, 11, 2 ** 40 + 7, 13], 1, 4);
    expect(decodeBatch(structs, 3)).toEqual([
      { err: 0, partition: 4, value: null, key: utf8("k"), opaque: 11 },
      { err: 0, partition: -1, value: [], key: null, opaque: 2 ** 40 + 7 },
      { err: 0, partition: -1, value: [9], key: null, opaque: 13 },
    ]);
    expect(enc.errorAt(0)).toBe(0);
  });

  test("grows for many and big messages, and reuses its buffers afterwards", () => {
    const enc = new BatchEncoder();
    const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
    const many = Array.from({ length: 3000 }, (_, i) => ({ topic: "t", value: i === 1500 ? big : `v${i}`, key: "ü".repeat(i % 7) }));
    const ids = many.map((_, i) => i + 1);
    const d = decodeBatch(enc.encode(many, ids, 0, many.length), many.length);
    expect(d[1500]!.value).toEqual([...big]);
    expect(d.map((m) => m.opaque)).toEqual(ids);
    expect(d.filter((_, i) => i !== 1500).map((m) => Buffer.from(m.value!).toString())).toEqual(many.filter((_, i) => i !== 1500).map((m) => m.value as string));
    expect(d.map((m) => (m.key ? Buffer.from(m.key).toString() : null))).toEqual(many.map((m) => (m.key === "" ? "" : m.key)));
    const again = decodeBatch(enc.encode([{ topic: "t", value: "v" }], [9], 0, 1), 1);
    expect(again).toEqual([{ err: 0, partition: -1, value: utf8("v"), key: null, opaque: 9 }]);
  });
});

describe("PendingSends", () => {
  const entry = (topic: string) => ({ topic });

  test("ids grow by one; take removes once", () => {
    const p = new PendingSends<{ topic: string }>(4);
    const ids = ["a", "b", "c"].map((t) => p.add(entry(t)));
    expect(ids).toEqual([1, 2, 3]);
    expect(p.size).toBe(3);
    expect(p.take(2)?.topic).toBe("b");
    expect(p.take(2)).toBeUndefined();
    expect(p.has(2)).toBe(false);
    expect(p.has(3)).toBe(true);
    expect(p.take(99)).toBeUndefined();
    expect(p.take(0)).toBeUndefined();
    expect(p.size).toBe(2);
  });

  test("an old send still pending makes the ring grow; every id stays reachable", () => {
    const p = new PendingSends<{ topic: string }>(4);
    const first = p.add(entry("stuck"));
    const ids: number[] = [];
    for (let i = 0; i < 1000; i++) {
      ids.push(p.add(entry(`m${i}`)));
      // Most settle at once, in order; the first one never does.
      if (i % 3 !== 0) expect(p.take(ids[i]!)?.topic).toBe(`m${i}`);
    }
    for (let i = 0; i < 1000; i++) if (i % 3 === 0) expect(p.take(ids[i]!)?.topic).toBe(`m${i}`);
    expect(p.size).toBe(1);
    expect(p.take(first)?.topic).toBe("stuck");
    expect(p.size).toBe(0);
  });

  test("settling in order keeps the ring small and reuses slots", () => {
    const p = new PendingSends<{ topic: string }>(4);
    for (let i = 0; i < 10_000; i++) {
      const a = p.add(entry("a"));
      const b = p.add(entry("b"));
      expect(p.take(a)?.topic).toBe("a");
      expect(p.take(b)?.topic).toBe("b");
    }
    expect(p.size).toBe(0);
  });

  test("takeEach hands over every pending send once, with its id", () => {
    const p = new PendingSends<{ topic: string }>(4);
    const ids = Array.from({ length: 10 }, (_, i) => p.add(entry(String(i))));
    p.take(ids[3]!);
    const all = () => {
      const taken: [string, number][] = [];
      p.takeEach((e, id) => taken.push([e.topic, id]));
      return taken;
    };
    expect(all()).toEqual(["0", "1", "2", "4", "5", "6", "7", "8", "9"].map((t) => [t, ids[Number(t)]!]));
    expect(p.size).toBe(0);
    expect(all()).toEqual([]);
    const next = p.add(entry("after"));
    expect(p.take(next)?.topic).toBe("after");
  });
});

describe("nextOffsets", () => {
  const m = (topic: string, partition: number, offset: number) => ({ topic, partition, offset }) as Message;
  test("per partition, the highest offset + 1", () => {
    expect(nextOffsets([m("a", 0, 5), m("a", 1, 2), m("a", 0, 7), m("b", 0, 1), m("a", 0, 6)])).toEqual([
      { topic: "a", partition: 0, offset: 8 },
      { topic: "a", partition: 1, offset: 3 },
      { topic: "b", partition: 0, offset: 2 },
    ]);
    expect(nextOffsets([])).toEqual([]);
  });
});
