/**
 * @module kafka/partitions
 * `rd_kafka_topic_partition_list_t` to and from plain objects. Every list made here is freed by
 * the caller through `withList`, so none outlives the call it was made for.
 */
import { cstr, libc, ptr, rdk, read, readCString, TOPAR, TOPAR_LIST, type Pointer } from "./ffi.ts";
import type { TopicPartition, TopicPartitionOffset } from "./types.ts";

/** Builds a native list, runs `fn` with it, and frees it whatever happens. */
export function withList<R>(parts: (TopicPartition & { offset?: number })[], fn: (list: Pointer) => R): R {
  const lib = rdk();
  const list = lib.rd_kafka_topic_partition_list_new(Math.max(parts.length, 1))!;
  try {
    for (const p of parts) {
      const elem = lib.rd_kafka_topic_partition_list_add(list, ptr(cstr(p.topic)), p.partition)!;
      if (p.offset !== undefined) {
        // offset is an int64 at TOPAR.offset; write it through a view over that element.
        const view = new BigInt64Array(1);
        view[0] = BigInt(p.offset);
        copyInto(elem as number, TOPAR.offset, view);
      }
    }
    return fn(list);
  } finally {
    lib.rd_kafka_topic_partition_list_destroy(list);
  }
}

function copyInto(base: number, offset: number, data: BigInt64Array): void {
  libc.memcpy((base + offset) as unknown as Pointer, ptr(data), data.byteLength);
}

/** Reads a native list (not freed here). */
export function readList(list: Pointer | null): (TopicPartitionOffset & { error: number })[] {
  if (!list) return [];
  const cnt = read.i32(list, TOPAR_LIST.cnt);
  const elems = read.ptr(list, TOPAR_LIST.elems) as number;
  const out: (TopicPartitionOffset & { error: number })[] = [];
  for (let i = 0; i < cnt; i++) {
    const e = (elems + i * TOPAR.size) as unknown as Pointer;
    out.push({
      topic: readCString(read.ptr(e, TOPAR.topic) as unknown as Pointer) ?? "",
      partition: read.i32(e, TOPAR.partition),
      offset: Number(read.i64(e, TOPAR.offset)),
      error: read.i32(e, TOPAR.err),
    });
  }
  return out;
}
