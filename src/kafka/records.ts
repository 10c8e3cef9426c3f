/**
 * @module kafka/records
 * Fetched messages into plain `Message` objects: in bulk from the records native.c writes into a
 * chunk, or one by one from an `rd_kafka_message_t` through plain FFI. Keys and values are
 * copied out of librdkafka's memory; header names and short values are decoded once each.
 */
import { ERR, errString, libc, MESSAGE, ptr, rdk, read, readCString, readInt64, type Pointer } from "./ffi.ts";
import { KafkaError } from "./errors.ts";
import { RECORD } from "./native.ts";
import type { Message } from "./types.ts";

const decoder = new TextDecoder();

/** A message bigger than this takes the FFI path. */
export const CHUNK_SIZE = 1 << 18;

export class RecordDecoder {
  private readonly topicNames = new Map<number, string>();
  /** Out-parameters of the header calls (3 × 8 bytes), by address. */
  private readonly hdrOut = new BigUint64Array(3);
  private readonly hdrOutAddr: number;
  private scratch = new Uint8Array(4096);
  private readonly slab = new Slab();
  private readonly texts = new TextCache();
  /** Where native.c writes fetched messages, reused by every fetch (allocated on first use). */
  private fetchChunk: Chunk | undefined;

  constructor() {
    // NOTE: `.buffer` first: JSC moves a small typed array's bytes when its buffer is first asked
    // for, which would leave an earlier ptr() dangling.
    void this.hdrOut.buffer;
    this.hdrOutAddr = ptr(this.hdrOut) as number;
  }

  get chunk(): Chunk {
    return (this.fetchChunk ??= new Chunk(CHUNK_SIZE));
  }

  /**
   * Turns `count` records of native.c into Messages. Keys and values are copies: small typed
   * arrays live in the JS heap, whose memory the collector reuses. NOTE: views of fresh 256 KiB
   * chunks let the heap grow by hundreds of MB between collections, and the page faults of all that
   * fresh memory cost the consumer much of its throughput (`bench kafka` consume).
   */
  decodeChunk(chunk: Chunk, count: number, keep: (message: Message) => void): void {
    const { view, bytes } = chunk;
    let at = 0;
    for (let i = 0; i < count; i++) {
      const rkt = view.getUint32(at + RECORD.rkt, true) + view.getUint32(at + RECORD.rkt + 4, true) * 4294967296;
      let topic = this.topicNames.get(rkt);
      if (topic === undefined) {
        topic = readCString(rdk().rd_kafka_topic_name(rkt as unknown as Pointer)) ?? "";
        this.topicNames.set(rkt, topic);
      }
      const keyLen = view.getInt32(at + RECORD.keyLen, true);
      const valueLen = view.getInt32(at + RECORD.valueLen, true);
      let p = at + RECORD.head;
      const key = keyLen < 0 ? null : bytes.slice(p, p + keyLen);
      if (keyLen > 0) p += keyLen;
      const value = valueLen < 0 ? null : bytes.slice(p, p + valueLen);
      if (valueLen > 0) p += valueLen;
      const headers: Record<string, string> = {};
      for (let h = view.getInt32(at + RECORD.headerCount, true); h > 0; h--) {
        const nameLen = view.getUint32(p, true);
        const len = view.getInt32(p + 4, true);
        p += 8;
        const name = this.texts.get(chunk.text, p, nameLen);
        p += nameLen;
        headers[name] = len > 0 ? this.texts.get(chunk.text, p, len) : "";
        if (len > 0) p += len;
      }
      const message: Message = {
        topic,
        partition: view.getInt32(at + RECORD.partition, true),
        offset: view.getUint32(at + RECORD.offset, true) + view.getInt32(at + RECORD.offset + 4, true) * 4294967296,
        value,
        key,
        headers,
        timestamp: view.getUint32(at + RECORD.timestamp, true) + view.getInt32(at + RECORD.timestamp + 4, true) * 4294967296,
      };
      at += view.getUint32(at + RECORD.size, true);
      keep(message);
    }
  }

  /** A message read through plain FFI; a consumer error as a KafkaError; undefined for a partition EOF. */
  decodeMessage(m: Pointer): Message | KafkaError | undefined {
    const lib = rdk();
    const err = read.i32(m, MESSAGE.err);
    if (err !== 0) {
      // A consumer error (e.g. a subscribed topic that does not exist) carries its text.
      return err === ERR.PARTITION_EOF ? undefined : new KafkaError(err, String(lib.rd_kafka_message_errstr(m) ?? errString(err)));
    }
    const rkt = read.ptr(m, MESSAGE.rkt) as number;
    let topic = this.topicNames.get(rkt);
    if (topic === undefined) {
      topic = readCString(lib.rd_kafka_topic_name(rkt as unknown as Pointer)) ?? "";
      this.topicNames.set(rkt, topic);
    }
    const partition = read.i32(m, MESSAGE.partition);
    const payload = read.ptr(m, MESSAGE.payload) as number;
    const len = read.u32(m, MESSAGE.len);
    const key = read.ptr(m, MESSAGE.key) as number;
    const keyLen = read.u32(m, MESSAGE.key_len);
    const message: Message = {
      topic,
      partition,
      offset: readInt64(m, MESSAGE.offset),
      value: payload ? this.slab.copy(payload, len) : null,
      key: key ? this.slab.copy(key, keyLen) : null,
      headers: this.readHeaders(m),
      timestamp: lib.rd_kafka_message_timestamp(m, null),
    };
    return message;
  }

  private readHeaders(m: Pointer): Record<string, string> {
    const lib = rdk();
    const out: Record<string, string> = {};
    const at = this.hdrOutAddr;
    if (lib.rd_kafka_message_headers(m, at) !== 0) return out;
    const hdrs = readInt64(at, 0) as unknown as Pointer;
    // Each header's name, value pointer and size land in hdrOut's three slots.
    for (let i = 0; lib.rd_kafka_header_get_all(hdrs, i, at, at + 8, at + 16) === 0; i++) {
      const name = readCString(readInt64(at, 0) as unknown as Pointer) ?? "";
      const value = readInt64(at, 8);
      const size = readInt64(at, 16);
      out[name] = value && size > 0 ? decoder.decode(this.scratchCopy(value, size)) : "";
    }
    return out;
  }

  /** Native bytes copied into a reused buffer, for decoding at once. */
  private scratchCopy(p: number, len: number): Uint8Array {
    if (len > this.scratch.length) this.scratch = new Uint8Array(Math.max(len, this.scratch.length * 2));
    libc.memcpy(ptr(this.scratch), p as unknown as Pointer, len);
    return this.scratch.subarray(0, len);
  }

}

/** Where native.c writes fetched messages; each fetch reuses it. */
export class Chunk {
  readonly bytes: Uint8Array;
  /** The same bytes as a Buffer, for its UTF-8 decoding. */
  readonly text: Buffer;
  readonly view: DataView;
  readonly addr: number;

  constructor(size: number) {
    const buffer = new ArrayBuffer(size);
    this.bytes = new Uint8Array(buffer);
    this.text = Buffer.from(buffer);
    this.view = new DataView(buffer);
    this.addr = ptr(this.bytes) as number;
  }
}

/**
 * Header names and short values (a content type) repeat from message to message: each distinct
 * one is decoded once. Direct-mapped on length and two bytes; a hit compares every byte.
 * NOTE: decoding every header's name and value anew was a large share of the log-worker's time per message.
 */
export class TextCache {
  static readonly MAX_LEN = 32;
  private readonly keys: (Uint8Array | undefined)[] = new Array(256).fill(undefined);
  private readonly values: string[] = new Array(256).fill("");

  /** The UTF-8 text of `bytes[start, start + len)`. */
  get(bytes: Buffer, start: number, len: number): string {
    if (len > TextCache.MAX_LEN || len === 0) return utf8(bytes, start, len);
    const slot = (len * 31 + bytes[start]! * 7 + bytes[start + len - 1]!) & 255;
    const key = this.keys[slot];
    if (key !== undefined && key.length === len) {
      let i = 0;
      while (i < len && key[i] === bytes[start + i]) i++;
      if (i === len) return this.values[slot]!;
    }
    const text = utf8(bytes, start, len);
    // A copy: the next fetch overwrites the chunk.
    this.keys[slot] = Uint8Array.prototype.slice.call(bytes, start, start + len);
    this.values[slot] = text;
    return text;
  }
}

function utf8(bytes: Buffer, start: number, len: number): string {
  return (bytes as Buffer & { utf8Slice(start: number, end: number): string }).utf8Slice(start, start + len);
}

const SLAB_SIZE = 1 << 16;

/**
 * Copies message bytes out of librdkafka into shared 64 KiB slabs: one memcpy and one view per
 * field, instead of an external ArrayBuffer plus a copy (which cost more than everything else
 * per message). NOTE: a value is a view, so `value.buffer` is the slab; keeping one message
 * keeps its slab (at most 64 KiB) alive.
 */
class Slab {
  private buf = new Uint8Array(0);
  private base = 0;
  private used = 0;

  copy(p: number, len: number): Uint8Array {
    if (len === 0) return new Uint8Array(0);
    if (len > SLAB_SIZE / 8) {
      const own = new Uint8Array(len);
      libc.memcpy(ptr(own), p as unknown as Pointer, len);
      return own;
    }
    if (this.used + len > this.buf.length) {
      this.buf = new Uint8Array(SLAB_SIZE);
      this.base = ptr(this.buf) as number;
      this.used = 0;
    }
    const at = this.used;
    libc.memcpy((this.base + at) as unknown as Pointer, p as unknown as Pointer, len);
    this.used += len;
    return this.buf.subarray(at, at + len);
  }
}
