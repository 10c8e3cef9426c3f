/**
 * @module kafka/native
 * Loads `native.c`, the consumer's hot loop in C, the first way that works:
 *   1. compiled ahead of time into a shared object (`gcc -O2 -shared -fPIC`, as the Dockerfile
 *      does): `KITSUNE_NATIVE_LIB`, else `../lib/kitsune/native.so` beside a compiled `kitsune`
 *      executable (the image's /usr/local/lib/kitsune/native.so). Only an object built from this
 *      very native.c is used (it carries the source's SHA-256, see kitsune_source_sha256);
 *   2. compiled at start-up by Bun's built-in TinyCC (`cc` of bun:ffi), ~6 ms once per process;
 *      it needs C headers and libc.so, which a slim runtime image does not have.
 * The C code calls librdkafka through the addresses of the binding's own symbols (kitsune_init),
 * so neither way needs librdkafka's headers or its linker name (`librdkafka.so`, -dev only).
 *
 * When neither works (or with `KITSUNE_NATIVE=0`) the consumer uses the plain FFI path: the same
 * results, slower. `kitsune version` prints which one is in use.
 */
import { cc, dlopen, ptr, type Pointer } from "bun:ffi";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
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

const SYMBOLS = {
  kitsune_init: { args: ["ptr"], returns: "void" },
  kitsune_fetch: { args: ["ptr", "ptr", "i64", "i32", "ptr"], returns: "void" },
  kitsune_release: { args: ["ptr"], returns: "void" },
  kitsune_rebalance_cb_addr: { args: [], returns: "ptr" },
  kitsune_source_sha256: { args: [], returns: "cstring" },
} as const;

/** SHA-256 (hex) of native.c as this build holds it; a shared object must say the same. */
export const NATIVE_SOURCE_SHA256 = new Bun.CryptoHasher("sha256").update(source).digest("hex");

/** librdkafka functions native.c calls, in the order of kitsune_init's table. */
const LIBRDKAFKA = [
  "rd_kafka_consume_batch_queue",
  "rd_kafka_message_destroy",
  "rd_kafka_topic_partition_list_copy",
  "rd_kafka_message_timestamp",
  "rd_kafka_message_headers",
  "rd_kafka_header_get_all",
];

let loaded: Native | null | undefined;
/** Why the native helper is not in use, when it is not. */
export let nativeUnavailable: string | undefined;
/** How the helper in use was built: `AOT <path>` or `TinyCC` (plus why no AOT object was used). */
export let nativeBuild: string | undefined;

/** The helper, or null where it can be neither loaded nor built (the caller falls back to plain FFI). */
export function native(): Native | null {
  if (loaded !== undefined) return loaded;
  if (process.env.KITSUNE_NATIVE === "0") {
    nativeUnavailable = "KITSUNE_NATIVE=0";
    return (loaded = null);
  }
  const failed: string[] = [];
  for (const path of compiledPaths()) {
    try {
      loaded = loadNative(path);
      nativeBuild = `AOT ${path}`;
      return loaded;
    } catch (err) {
      failed.push(`${path}: ${message(err)}`);
    }
  }
  try {
    loaded = loadNative();
    nativeBuild = failed.length ? `TinyCC; not loaded: ${failed.join("; ")}` : "TinyCC";
  } catch (err) {
    nativeUnavailable = [...failed, message(err)].join("; ");
    loaded = null;
  }
  return loaded;
}

/** Shared objects to try, in order. */
function compiledPaths(): string[] {
  const paths: string[] = [];
  if (process.env.KITSUNE_NATIVE_LIB) paths.push(process.env.KITSUNE_NATIVE_LIB);
  // NOTE: only beside a compiled executable (its modules live under /$bunfs/): under
  // `bun src/main.ts` the executable is bun, and an installed object could be older than the
  // native.c being developed.
  if (import.meta.path.startsWith("/$bunfs/")) {
    const beside = join(dirname(process.execPath), "..", "lib", "kitsune", "native.so");
    if (existsSync(beside)) paths.push(beside);
  }
  return paths;
}

/**
 * native.c from the shared object at `path` (compiled ahead of time from this very source), or
 * compiled now by TinyCC when no path is given. Throws when it cannot.
 */
export function loadNative(path?: string): Native {
  const { symbols } = path ? dlopen(path, SYMBOLS) : compileWithTinyCC();
  if (path) {
    const built = String(symbols.kitsune_source_sha256());
    if (built !== NATIVE_SOURCE_SHA256) {
      throw new Error(
        `built from ${built ? `another native.c (sha256 ${built.slice(0, 12)}…)` : "a native.c of unknown version"}, ` +
          `not this one (${NATIVE_SOURCE_SHA256.slice(0, 12)}…); build it as the Dockerfile's native stage does`,
      );
    }
  }
  const lib = rdk() as unknown as Record<string, { ptr: number }>;
  const table = new BigUint64Array(LIBRDKAFKA.map((n) => BigInt(lib[n]!.ptr)));
  symbols.kitsune_init(ptr(table));
  return {
    fetch: symbols.kitsune_fetch as unknown as Native["fetch"],
    release: symbols.kitsune_release as unknown as Native["release"],
    rebalanceCb: symbols.kitsune_rebalance_cb_addr() as Pointer,
  };
}

function compileWithTinyCC() {
  // NOTE: TinyCC reads its source from a path; inside a `bun build --compile` binary the
  // embedded file has none, so the text is written to a private temporary directory.
  const dir = mkdtempSync(join(tmpdir(), "kitsune-native-"));
  try {
    const file = join(dir, "native.c");
    writeFileSync(file, source);
    return cc({ source: file, symbols: SYMBOLS });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function message(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}
