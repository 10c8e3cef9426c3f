/**
 * @module kafka/ffi
 * The only file that declares librdkafka's C symbols. Loads `LIBRDKAFKA_PATH`, else the library
 * `scripts/build-librdkafka.sh` built from the pinned source, else the system's `librdkafka.so.1`,
 * and refuses librdkafka older than 2.10. Struct offsets are for 64-bit Linux and were checked
 * with `offsetof` against librdkafka 2.15.1's header (they are unchanged since 2.0).
 */
import { CString, dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const T = FFIType;

export const symbols = {
  rd_kafka_version: { args: [], returns: T.i32 },
  rd_kafka_version_str: { args: [], returns: T.cstring },
  rd_kafka_err2name: { args: [T.i32], returns: T.cstring },
  rd_kafka_err2str: { args: [T.i32], returns: T.cstring },

  rd_kafka_conf_new: { args: [], returns: T.ptr },
  rd_kafka_conf_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_conf_set: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.u64], returns: T.i32 },
  rd_kafka_conf_set_events: { args: [T.ptr, T.i32], returns: T.void },
  rd_kafka_conf_set_rebalance_cb: { args: [T.ptr, T.ptr], returns: T.void },
  rd_kafka_conf_set_opaque: { args: [T.ptr, T.ptr], returns: T.void },

  rd_kafka_new: { args: [T.i32, T.ptr, T.ptr, T.u64], returns: T.ptr },
  rd_kafka_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_destroy_flags: { args: [T.ptr, T.i32], returns: T.void },
  rd_kafka_fatal_error: { args: [T.ptr, T.ptr, T.u64], returns: T.i32 },
  rd_kafka_outq_len: { args: [T.ptr], returns: T.i32 },
  rd_kafka_flush: { args: [T.ptr, T.i32], returns: T.i32 },
  rd_kafka_purge: { args: [T.ptr, T.i32], returns: T.i32 },

  rd_kafka_queue_get_main: { args: [T.ptr], returns: T.ptr },
  rd_kafka_queue_get_consumer: { args: [T.ptr], returns: T.ptr },
  rd_kafka_queue_new: { args: [T.ptr], returns: T.ptr },
  rd_kafka_queue_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_queue_poll: { args: [T.ptr, T.i32], returns: T.ptr },
  rd_kafka_consume_batch_queue: { args: [T.ptr, T.i32, T.ptr, T.u64], returns: T.i64 },
  rd_kafka_message_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_message_errstr: { args: [T.ptr], returns: T.cstring },
  rd_kafka_queue_io_event_enable: { args: [T.ptr, T.i32, T.ptr, T.u64], returns: T.void },

  rd_kafka_event_type: { args: [T.ptr], returns: T.i32 },
  rd_kafka_event_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_event_message_next: { args: [T.ptr], returns: T.ptr },
  rd_kafka_event_message_array: { args: [T.ptr, T.ptr, T.u64], returns: T.u64 },
  rd_kafka_event_error: { args: [T.ptr], returns: T.i32 },
  rd_kafka_event_error_string: { args: [T.ptr], returns: T.cstring },
  rd_kafka_event_error_is_fatal: { args: [T.ptr], returns: T.i32 },
  rd_kafka_event_stats: { args: [T.ptr], returns: T.cstring },
  rd_kafka_event_topic_partition_list: { args: [T.ptr], returns: T.ptr },
  rd_kafka_event_opaque: { args: [T.ptr], returns: T.ptr },
  rd_kafka_event_CreateTopics_result: { args: [T.ptr], returns: T.ptr },
  rd_kafka_CreateTopics_result_topics: { args: [T.ptr, T.ptr], returns: T.ptr },
  rd_kafka_event_DeleteTopics_result: { args: [T.ptr], returns: T.ptr },
  rd_kafka_DeleteTopics_result_topics: { args: [T.ptr, T.ptr], returns: T.ptr },
  rd_kafka_topic_result_error: { args: [T.ptr], returns: T.i32 },
  rd_kafka_topic_result_error_string: { args: [T.ptr], returns: T.cstring },
  rd_kafka_topic_result_name: { args: [T.ptr], returns: T.cstring },

  rd_kafka_error_code: { args: [T.ptr], returns: T.i32 },
  rd_kafka_error_name: { args: [T.ptr], returns: T.cstring },
  rd_kafka_error_string: { args: [T.ptr], returns: T.cstring },
  rd_kafka_error_is_retriable: { args: [T.ptr], returns: T.i32 },
  rd_kafka_error_is_fatal: { args: [T.ptr], returns: T.i32 },
  rd_kafka_error_txn_requires_abort: { args: [T.ptr], returns: T.i32 },
  rd_kafka_error_destroy: { args: [T.ptr], returns: T.void },

  rd_kafka_produceva: { args: [T.ptr, T.ptr, T.u64], returns: T.ptr },
  rd_kafka_poll_set_consumer: { args: [T.ptr], returns: T.i32 },
  rd_kafka_produce_batch: { args: [T.ptr, T.i32, T.i32, T.ptr, T.i32], returns: T.i32 },
  rd_kafka_message_headers: { args: [T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_header_get_all: { args: [T.ptr, T.u64, T.ptr, T.ptr, T.ptr], returns: T.i32 },
  // NOTE: i64_fast returns a plain number (no BigInt per message); timestamps fit in 53 bits.
  rd_kafka_message_timestamp: { args: [T.ptr, T.ptr], returns: T.i64_fast },
  rd_kafka_topic_name: { args: [T.ptr], returns: T.ptr },
  rd_kafka_topic_new: { args: [T.ptr, T.ptr, T.ptr], returns: T.ptr },
  rd_kafka_topic_destroy: { args: [T.ptr], returns: T.void },

  rd_kafka_init_transactions: { args: [T.ptr, T.i32], returns: T.ptr },
  rd_kafka_begin_transaction: { args: [T.ptr], returns: T.ptr },
  rd_kafka_commit_transaction: { args: [T.ptr, T.i32], returns: T.ptr },
  rd_kafka_abort_transaction: { args: [T.ptr, T.i32], returns: T.ptr },

  rd_kafka_topic_partition_list_new: { args: [T.i32], returns: T.ptr },
  rd_kafka_topic_partition_list_add: { args: [T.ptr, T.ptr, T.i32], returns: T.ptr },
  rd_kafka_topic_partition_list_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_topic_partition_list_copy: { args: [T.ptr], returns: T.ptr },

  rd_kafka_subscribe: { args: [T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_unsubscribe: { args: [T.ptr], returns: T.i32 },
  rd_kafka_rebalance_protocol: { args: [T.ptr], returns: T.cstring },
  rd_kafka_assign: { args: [T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_incremental_assign: { args: [T.ptr, T.ptr], returns: T.ptr },
  rd_kafka_incremental_unassign: { args: [T.ptr, T.ptr], returns: T.ptr },
  rd_kafka_assignment_lost: { args: [T.ptr], returns: T.i32 },
  rd_kafka_commit_queue: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_pause_partitions: { args: [T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_resume_partitions: { args: [T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_seek_partitions: { args: [T.ptr, T.ptr, T.i32], returns: T.ptr },
  rd_kafka_consumer_close_queue: { args: [T.ptr, T.ptr], returns: T.ptr },
  rd_kafka_consumer_closed: { args: [T.ptr], returns: T.i32 },

  rd_kafka_AdminOptions_new: { args: [T.ptr, T.i32], returns: T.ptr },
  rd_kafka_AdminOptions_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_AdminOptions_set_opaque: { args: [T.ptr, T.ptr], returns: T.void },
  rd_kafka_AdminOptions_set_operation_timeout: { args: [T.ptr, T.i32, T.ptr, T.u64], returns: T.i32 },
  rd_kafka_NewTopic_new: { args: [T.ptr, T.i32, T.i32, T.ptr, T.u64], returns: T.ptr },
  rd_kafka_NewTopic_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_NewTopic_set_config: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rd_kafka_CreateTopics: { args: [T.ptr, T.ptr, T.u64, T.ptr, T.ptr], returns: T.void },
  rd_kafka_DeleteTopic_new: { args: [T.ptr], returns: T.ptr },
  rd_kafka_DeleteTopic_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_DeleteTopics: { args: [T.ptr, T.ptr, T.u64, T.ptr, T.ptr], returns: T.void },
  rd_kafka_metadata: { args: [T.ptr, T.i32, T.ptr, T.ptr, T.i32], returns: T.i32 },
  rd_kafka_metadata_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_query_watermark_offsets: { args: [T.ptr, T.ptr, T.i32, T.ptr, T.ptr, T.i32], returns: T.i32 },

  rd_kafka_mock_cluster_new: { args: [T.ptr, T.i32], returns: T.ptr },
  rd_kafka_mock_cluster_destroy: { args: [T.ptr], returns: T.void },
  rd_kafka_mock_cluster_bootstraps: { args: [T.ptr], returns: T.cstring },
  rd_kafka_mock_broker_set_down: { args: [T.ptr, T.i32], returns: T.i32 },
  rd_kafka_mock_broker_set_up: { args: [T.ptr, T.i32], returns: T.i32 },
  rd_kafka_mock_push_request_errors_array: { args: [T.ptr, T.i16, T.u64, T.ptr], returns: T.void },
  rd_kafka_mock_topic_create: { args: [T.ptr, T.ptr, T.i32, T.i32], returns: T.i32 },
} as const;

/**
 * The librdkafka `scripts/build-librdkafka.sh` builds from the pinned `@confluentinc/kafka-javascript`
 * source (ffi.test.ts checks that the two agree).
 */
export const BUILT_VERSION = "2.15.1";
/** 2.10: older releases turn idempotence off against Kafka 4 (KIP-896, librdkafka#4948). */
export const MIN_VERSION = 0x020a0000;

export interface LibraryChoice {
  /** What dlopen is given: a file, or the bare soname for the system's library. */
  path: string;
  source: "LIBRDKAFKA_PATH" | "project build" | "system";
}

/** Where `scripts/build-librdkafka.sh` puts the library by default (`KITSUNE_CACHE` honoured). */
export function builtLibraryPath(env: Record<string, string | undefined> = process.env): string {
  const cache = env.KITSUNE_CACHE || join(env.HOME || homedir(), ".cache", "kitsune");
  return join(cache, `librdkafka-${BUILT_VERSION}`, "lib", "librdkafka.so.1");
}

/** Which librdkafka to load: `LIBRDKAFKA_PATH`, else the project build if it exists, else the system's. */
export function chooseLibrary(env: Record<string, string | undefined> = process.env, exists = existsSync): LibraryChoice {
  if (env.LIBRDKAFKA_PATH) return { path: env.LIBRDKAFKA_PATH, source: "LIBRDKAFKA_PATH" };
  const built = builtLibraryPath(env);
  if (exists(built)) return { path: built, source: "project build" };
  return { path: "librdkafka.so.1", source: "system" };
}

/** What the start-up errors tell the user to do. */
function howToBuild(): string {
  return (
    `Run scripts/build-librdkafka.sh (after bun install): it builds librdkafka ${BUILT_VERSION} from the pinned ` +
    `source into ${builtLibraryPath()}, where Kitsune looks by itself; or set LIBRDKAFKA_PATH to a ` +
    "librdkafka.so.1 of 2.10 or newer."
  );
}

/** The start-up error for a librdkafka older than `MIN_VERSION`, or null when `version` will do. */
export function versionRefusal(version: number, versionStr: string, choice: LibraryChoice): string | null {
  if (version >= MIN_VERSION) return null;
  return `librdkafka ${versionStr} found at "${choice.path}" (${choice.source}), but Kitsune needs librdkafka 2.10 or newer. ${howToBuild()}`;
}

let chosen: LibraryChoice | undefined;

function open() {
  const choice = chooseLibrary();
  let lib;
  try {
    lib = dlopen(choice.path, symbols);
  } catch (err) {
    throw new Error(`cannot load librdkafka from "${choice.path}" (${choice.source}): ${(err as Error).message}. ${howToBuild()}`);
  }
  const refusal = versionRefusal(lib.symbols.rd_kafka_version(), String(lib.symbols.rd_kafka_version_str()), choice);
  if (refusal) {
    lib.close();
    throw new Error(refusal);
  }
  chosen = choice;
  return lib;
}

let loaded: ReturnType<typeof open> | undefined;

/** The few libc calls the binding needs: a pipe for wake-ups, and writing into native structs. */
export const libc = dlopen("libc.so.6", {
  pipe2: { args: [T.ptr, T.i32], returns: T.i32 },
  close: { args: [T.i32], returns: T.i32 },
  memcpy: { args: [T.ptr, T.ptr, T.u64], returns: T.ptr },
}).symbols;

type Returns<R> = R extends typeof T.ptr
  ? Pointer | null
  : R extends typeof T.cstring
    ? CString
    : R extends typeof T.void
      ? void
      : R extends typeof T.i64
        ? bigint
        : number;

/** The symbols with plain TypeScript types (bun's own typings widen pointers to `bigint | Pointer`). */
export type Lib = {
  [K in keyof typeof symbols]: (...args: any[]) => Returns<(typeof symbols)[K]["returns"]>;
};

/** The librdkafka symbols, loaded on first use. */
export function rdk(): Lib {
  return (loaded ??= open()).symbols as unknown as Lib;
}

export function librdkafkaVersion(): string {
  return String(rdk().rd_kafka_version_str());
}

/** The library loaded (loading it if need be): what dlopen was given, and why that one. */
export function loadedLibrary(): LibraryChoice {
  rdk();
  return chosen!;
}

/** The path dlopen was given, for the transaction worker to open the same library. */
export function libraryPath(): string {
  return loadedLibrary().path;
}

/** The file the loaded librdkafka came from (the system's is found through the process's maps). */
export function loadedLibraryFile(): string {
  const { path } = loadedLibrary();
  if (path.includes("/")) return path;
  try {
    const line = readFileSync("/proc/self/maps", "utf8")
      .split("\n")
      .find((l) => l.includes("/librdkafka.so"));
    if (line) return line.slice(line.indexOf("/"));
  } catch {}
  return path;
}

// --- constants (rdkafka.h) -------------------------------------------------------------------

export const RD_KAFKA_PRODUCER = 0;
export const RD_KAFKA_CONSUMER = 1;

export const EVENT = {
  DR: 0x1,
  FETCH: 0x2,
  LOG: 0x4,
  ERROR: 0x8,
  REBALANCE: 0x10,
  OFFSET_COMMIT: 0x20,
  STATS: 0x40,
  CREATETOPICS_RESULT: 100,
  DELETETOPICS_RESULT: 101,
} as const;

export const VTYPE = { END: 0, TOPIC: 1, RKT: 2, PARTITION: 3, VALUE: 4, KEY: 5, OPAQUE: 6, MSGFLAGS: 7, TIMESTAMP: 8, HEADER: 9 } as const;
export const MSG_F_COPY = 2;
/** `rd_kafka_produce_batch`: each message's own `partition` field counts. */
export const MSG_F_PARTITION = 8;
export const PARTITION_UA = -1;
export const ADMIN_OP = { CREATETOPICS: 1, DELETETOPICS: 2 } as const;

export const ERR = {
  NO_ERROR: 0,
  REVOKE_PARTITIONS: -174,
  ASSIGN_PARTITIONS: -175,
  FATAL: -150,
  NO_OFFSET: -168,
  STATE: -172,
  QUEUE_FULL: -184,
  TIMED_OUT: -185,
  ALL_BROKERS_DOWN: -187,
  UNKNOWN_PARTITION: -190,
  PARTITION_EOF: -191,
  MSG_TIMED_OUT: -192,
  TRANSPORT: -195,
  DESTROY: -197,
  UNKNOWN_TOPIC_OR_PART: 3,
  TOPIC_ALREADY_EXISTS: 36,
} as const;

export const CONF_OK = 0;
/** `rd_kafka_destroy_flags`: do not run consumer_close() again (the binding closes consumers itself). */
export const DESTROY_F_NO_CONSUMER_CLOSE = 0x8;

// --- struct layouts (x86_64 / aarch64 Linux) -------------------------------------------------

export const MESSAGE = { size: 72, err: 0, rkt: 8, partition: 16, payload: 24, len: 32, key: 40, key_len: 48, offset: 56, opaque: 64 } as const;
export const TOPAR = { size: 64, topic: 0, partition: 8, offset: 16, err: 48 } as const;
export const TOPAR_LIST = { cnt: 0, elems: 8 } as const;
export const VU = { size: 72, union: 8 } as const;
export const METADATA = { broker_cnt: 0, brokers: 8, topic_cnt: 16, topics: 24 } as const;
export const METADATA_TOPIC = { size: 32, topic: 0, partition_cnt: 8, partitions: 16, err: 24 } as const;
export const METADATA_PARTITION = { size: 40, id: 0, err: 4, leader: 8 } as const;
export const METADATA_BROKER = { size: 24, id: 0, host: 8, port: 16 } as const;

// --- small helpers ---------------------------------------------------------------------------

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s`, to pass as `const char *`; keep it referenced for the call. */
export function cstr(s: string): Uint8Array {
  const bytes = new Uint8Array(Buffer.byteLength(s) + 1);
  encoder.encodeInto(s, bytes);
  return bytes;
}

/** Reads a `char *` (or null) into a JS string. */
export function readCString(p: number | Pointer | null): string | null {
  return p ? new CString(p as Pointer).toString() : null;
}

/**
 * Reads an int64 field as a number, without the BigInt `read.i64` allocates: offsets and
 * pointers fit in 53 bits, and this runs once or twice per message.
 */
export function readInt64(p: Pointer | number, offset: number): number {
  return read.u32(p as Pointer, offset) + read.i32(p as Pointer, offset + 4) * 4294967296;
}

export function errName(code: number): string {
  return String(rdk().rd_kafka_err2name(code));
}

export function errString(code: number): string {
  return String(rdk().rd_kafka_err2str(code));
}

export { ptr, read };
export type { Pointer };
