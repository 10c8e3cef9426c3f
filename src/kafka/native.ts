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
  /** See `kitsune_fetch` in native.c; `state` is a consumer's `STATE`. */
  fetch(queue: Pointer, out: Pointer, cap: number, max: number, state: Pointer): void;
  /** Destroys the messages still pending in `state`. */
  release(state: Pointer): void;
  /** The address of `kitsune_rebalance_cb`, for rd_kafka_conf_set_rebalance_cb (opaque: the state). */
  rebalanceCb: Pointer;
}

/** Layout of native.c's `state_t`, in bytes. */
export const STATE = {
  records: 0,
  left: 8,
  empty: 16,
  start: 24,
  count: 28,
  rebalances: 32,
  overflow: 36,
  rebalanceErr: 40,
  rebalanceList: 40 + 16 * 8,
  /** Most rebalances recorded between two fetch calls. */
  rebalanceSlots: 16,
  size: 40 + 32 * 8 + 1000 * 8,
} as const;

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
        kitsune_release: { args: ["ptr"], returns: "void" },
        kitsune_rebalance_cb_addr: { args: [], returns: "ptr" },
      },
    });
    const lib = rdk() as unknown as Record<string, { ptr: number }>;
    const names = [
      "rd_kafka_consume_batch_queue",
      "rd_kafka_message_destroy",
      "rd_kafka_topic_partition_list_copy",
      "rd_kafka_message_timestamp",
      "rd_kafka_message_headers",
      "rd_kafka_header_get_all",
    ];
    const table = new BigUint64Array(names.map((n) => BigInt(lib[n]!.ptr)));
    symbols.kitsune_init(ptr(table));
    loaded = {
      fetch: symbols.kitsune_fetch as unknown as Native["fetch"],
      release: symbols.kitsune_release as unknown as Native["release"],
      rebalanceCb: symbols.kitsune_rebalance_cb_addr() as Pointer,
    };
  } catch (err) {
    nativeUnavailable = (err as Error)?.message ?? String(err);
    loaded = null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return loaded;
}
