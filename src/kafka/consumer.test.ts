import { describe, expect, test } from "bun:test";
import { consumerConfig } from "./consumer.ts";
import { TextCache } from "./records.ts";

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

describe("consumerConfig", () => {
  test("classic protocol: cooperative-sticky and a short session, unless the caller says otherwise", () => {
    const c = consumerConfig({ "group.id": "g" });
    expect(c["partition.assignment.strategy"]).toBe("cooperative-sticky");
    expect(c["session.timeout.ms"]).toBe(10000);
    expect(consumerConfig({ "group.id": "g", "partition.assignment.strategy": "range" })["partition.assignment.strategy"]).toBe("range");
  });
  test("KIP-848 consumer protocol: none of the keys librdkafka refuses there", () => {
    const c = consumerConfig({ "group.id": "g", "group.protocol": "Consumer" });
    expect(c["group.protocol"]).toBe("Consumer");
    for (const key of ["partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"]) expect(c[key]).toBeUndefined();
  });
  test("the safety keys win over the caller's", () => {
    const c = consumerConfig({ "group.id": "g", "enable.auto.commit": true, "isolation.level": "read_uncommitted" });
    expect(c["enable.auto.commit"]).toBe(false);
    expect(c["isolation.level"]).toBe("read_committed");
  });
});
