/**
 * Loading native.c compiled ahead of time: only an object built from this very source is used.
 * Needs gcc (skipped without it) and librdkafka, not a broker; the consume path of such an object
 * is tested against the broker in kafka.int.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { HAVE_GCC, nativeSharedObject } from "../../test/native-so.ts";
import { loadNative, NATIVE_SOURCE_SHA256 } from "./native.ts";

describe.skipIf(!HAVE_GCC)("loadNative(path)", () => {
  test("loads an object built from this native.c", () => {
    const lib = loadNative(nativeSharedObject());
    expect(typeof lib.fetch).toBe("function");
    expect(typeof lib.release).toBe("function");
    expect(Number(lib.rebalanceCb)).toBeGreaterThan(0);
  });

  test("refuses an object built from another native.c, naming both hashes", () => {
    const other = "0".repeat(64);
    expect(() => loadNative(nativeSharedObject(other))).toThrow(
      `built from another native.c (sha256 000000000000…), not this one (${NATIVE_SOURCE_SHA256.slice(0, 12)}…)`,
    );
  });

  test("refuses an object that does not say which native.c it was built from", () => {
    expect(() => loadNative(nativeSharedObject(""))).toThrow("built from a native.c of unknown version");
  });
});
