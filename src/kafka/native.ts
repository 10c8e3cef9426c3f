/**
 * @module kafka/native
 * Loads `native.c`, the consumer's hot loop in C, with Bun's built-in TinyCC (`cc` of bun:ffi):
 * ~6 ms once per process. The C code calls librdkafka through the addresses of the binding's own
 * symbols, so it needs neither librdkafka's headers nor its linker name (`librdkafka.so`, which
 * only the -dev package installs).
 *
 * Without a compiler (`cc` failing, or `KITSUNE_NATIVE=0`) the consumer uses the plain FFI path:
 * the same results, slower.
 */
import { cc, ptr, type Pointer } from "bun:ffi";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rdk } from "./ffi.ts";
import source from "./native.c" with { type: "text" };

export interface Native {
  /** See `kitsune_fetch` in native.c; `result` is an array of 5 int64s. */
  fetch(queue: Pointer, out: Pointer, cap: number, max: number, result: Pointer): void;
}

/** Record layout of native.c. */
export const RECORD = {
  size: 0,
  partition: 4,
  offset: 8,
  timestamp: 16,
  rkt: 24,
  keyLen: 32,
  valueLen: 36,
  headerCount: 40,
  headerBytes: 44,
  head: 48,
} as const;

let loaded: Native | null | undefined;
/** Why the native helper is not in use, when it is not. */
export let nativeUnavailable: string | undefined;

/** The compiled helper, or null where it cannot be built (the caller falls back to plain FFI). */
export function native(): Native | null {
  if (loaded !== undefined) return loaded;
  if (process.env.KITSUNE_NATIVE === "0") {
    nativeUnavailable = "KITSUNE_NATIVE=0";
    return (loaded = null);
  }
  // NOTE: TinyCC reads its source from a path; inside a `bun build --compile` binary the
  // embedded file has none, so the text is written to a private temporary directory.
  const dir = mkdtempSync(join(tmpdir(), "kitsune-native-"));
  try {
    const file = join(dir, "native.c");
    writeFileSync(file, source);
    const { symbols } = cc({
      source: file,
      symbols: {
        kitsune_init: { args: ["ptr"], returns: "void" },
        kitsune_fetch: { args: ["ptr", "ptr", "i64", "i32", "ptr"], returns: "void" },
      },
    });
    const lib = rdk() as unknown as Record<string, { ptr: number }>;
    const names = [
      "rd_kafka_queue_poll",
      "rd_kafka_event_type",
      "rd_kafka_event_message_next",
      "rd_kafka_event_destroy",
      "rd_kafka_message_timestamp",
      "rd_kafka_message_headers",
      "rd_kafka_header_get_all",
    ];
    const table = new BigUint64Array(names.map((n) => BigInt(lib[n]!.ptr)));
    symbols.kitsune_init(ptr(table));
    loaded = { fetch: symbols.kitsune_fetch as unknown as Native["fetch"] };
  } catch (err) {
    nativeUnavailable = (err as Error)?.message ?? String(err);
    loaded = null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return loaded;
}
