/** Configuration errors are reported before any connection is made (no broker needed). */
import { describe, expect, test } from "bun:test";
import { Admin, Consumer, KafkaError, Producer } from "./index.ts";

const base = { "bootstrap.servers": "127.0.0.1:1" };

function thrown(f: () => unknown): KafkaError {
  try {
    f();
  } catch (e) {
    return e as KafkaError;
  }
  throw new Error("expected an error");
}

describe("librdkafka configuration", () => {
  test("an unknown key is a KafkaError naming the key", () => {
    for (const make of [
      () => new Producer({ ...base, "no.such.property": 1 }),
      () => new Consumer({ ...base, "group.id": "g", "no.such.property": 1 }),
      () => new Admin({ ...base, "no.such.property": 1 }),
    ]) {
      const err = thrown(make);
      expect(err).toBeInstanceOf(KafkaError);
      expect(err.codeName).toBe("_INVALID_ARG");
      expect(err.retriable).toBe(false);
      expect(err.message).toContain("no.such.property");
    }
  });

  test("an invalid value names the key and the value", () => {
    const err = thrown(() => new Producer({ ...base, "linger.ms": "soon" }));
    expect(err).toBeInstanceOf(KafkaError);
    expect(err.message).toContain("linger.ms");
    expect(err.message).toContain("soon");
  });

  test("a consumer needs group.id", () => {
    const err = thrown(() => new Consumer(base));
    expect(err).toBeInstanceOf(KafkaError);
    expect(err.message).toContain("group.id");
  });

  test("LIBRDKAFKA_PATH pointing at a missing file: the error names the path", () => {
    // The library is loaded once per process, so this runs in a fresh one.
    const missing = "/nonexistent/kitsune-test/librdkafka.so.1";
    const script = `
      const { Producer } = await import(${JSON.stringify(new URL("./index.ts", import.meta.url).pathname)});
      try { new Producer({}); console.log("loaded"); } catch (e) { console.log(e.message); process.exit(3); }
    `;
    const run = Bun.spawnSync([process.execPath, "-e", script], { env: { ...process.env, LIBRDKAFKA_PATH: missing } });
    expect(run.exitCode).toBe(3);
    expect(run.stdout.toString()).toContain(missing);
  });
});
