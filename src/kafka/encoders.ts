/**
 * @module kafka/encoders
 * Outgoing messages into the memory librdkafka reads: `rd_kafka_vu_t[]` for `rd_kafka_produceva`
 * (`VuEncoder`) and `rd_kafka_message_t[]` for `rd_kafka_produce_batch` (`BatchEncoder`), each in
 * one reused arena. The producer hands them to librdkafka with `RD_KAFKA_MSG_F_COPY`.
 */
import { MSG_F_COPY, MESSAGE, PARTITION_UA, ptr, VTYPE, VU, type Pointer } from "./ffi.ts";
import type { OutgoingMessage } from "./types.ts";
/** The three fields of each entry in `VuEncoder.refs`: which vu, which field of its union, where in the arena. */
const REF_VU = 0;
const REF_FIELD = 1;
const REF_AT = 2;

/**
 * Encodes messages into `rd_kafka_vu_t[]` plus the bytes they point at, in one growable arena.
 * NOTE: this runs once per send, so it avoids allocating: strings go in with `Buffer#write`
 * (no `subarray` per string), addresses are written as two 32-bit halves (no BigInt), and the
 * arena-relative references live in a reused Int32Array.
 */
export class VuEncoder {
  private arena = Buffer.alloc(1 << 16);
  private arenaAddr = ptr(this.arena) as number;
  private vus = new Uint8Array(VU.size * 8);
  private vuView = new DataView(this.vus.buffer);
  // NOTE: after `.buffer`: JSC moves a small typed array's bytes when its buffer is first asked for.
  private vusAddr = ptr(this.vus) as Pointer;
  count = 0;
  private used = 0;
  private refs = new Int32Array(3 * 16);
  private refCount = 0;

  /**
   * Fills the vu array for one message; returns the vu array pointer after fix-up. `rkt` is a
   * topic handle for `msg.topic` when the caller has one (saves librdkafka a locked lookup by name).
   */
  encode(msg: OutgoingMessage, opaque: number, rkt?: Pointer | null): Pointer {
    this.count = 0;
    this.used = 0;
    this.refCount = 0;
    if (rkt) this.addrAt(this.slot(VTYPE.RKT) + VU.union, rkt as unknown as number);
    else this.cstrVu(VTYPE.TOPIC, msg.topic);
    if (msg.partition !== undefined && msg.partition >= 0) this.intVu(VTYPE.PARTITION, msg.partition);
    if (msg.value !== null && msg.value !== undefined) this.bytesVu(VTYPE.VALUE, msg.value);
    if (msg.key !== null && msg.key !== undefined) this.bytesVu(VTYPE.KEY, msg.key);
    this.addrAt(this.slot(VTYPE.OPAQUE) + VU.union, opaque);
    this.intVu(VTYPE.MSGFLAGS, MSG_F_COPY);
    if (msg.headers) {
      for (const name in msg.headers) {
        const value = msg.headers[name];
        if (value === undefined) continue;
        const vu = this.slot(VTYPE.HEADER);
        this.ref(vu, 0, this.putString(name, true));
        const at = this.putString(value, false);
        this.ref(vu, 8, at);
        this.addrAt(vu + VU.union + 16, this.used - at);
      }
    }
    // The arena may have grown while encoding: resolve offsets to addresses only now.
    const refs = this.refs;
    for (let i = 0; i < this.refCount * 3; i += 3) {
      this.addrAt(refs[i + REF_VU]! + VU.union + refs[i + REF_FIELD]!, this.arenaAddr + refs[i + REF_AT]!);
    }
    return this.vusAddr;
  }

  private addrAt(at: number, value: number): void {
    setAddr(this.vuView, at, value);
  }

  private ref(vu: number, field: number, at: number): void {
    if ((this.refCount + 1) * 3 > this.refs.length) {
      const bigger = new Int32Array(this.refs.length * 2);
      bigger.set(this.refs);
      this.refs = bigger;
    }
    const i = this.refCount++ * 3;
    this.refs[i + REF_VU] = vu;
    this.refs[i + REF_FIELD] = field;
    this.refs[i + REF_AT] = at;
  }

  private slot(type: number): number {
    if ((this.count + 1) * VU.size > this.vus.length) {
      const bigger = new Uint8Array(this.vus.length * 2);
      bigger.set(this.vus);
      this.vus = bigger;
      this.vuView = new DataView(bigger.buffer);
      this.vusAddr = ptr(bigger);
    }
    const at = this.count++ * VU.size;
    // Only the fields each type uses are written; librdkafka reads nothing else of the union.
    this.vuView.setInt32(at, type, true);
    return at;
  }

  private intVu(type: number, value: number): void {
    const at = this.slot(type);
    this.vuView.setInt32(at + VU.union, value, true);
  }

  private cstrVu(type: number, s: string): void {
    const vu = this.slot(type);
    this.ref(vu, 0, this.putString(s, true));
  }

  private bytesVu(type: number, data: Uint8Array | string): void {
    if (typeof data !== "string" && !(data instanceof Uint8Array)) throw new TypeError(notBytes(data));
    const vu = this.slot(type);
    const at = typeof data === "string" ? this.putString(data, false) : this.putBytes(data);
    this.ref(vu, 0, at);
    this.addrAt(vu + VU.union + 8, this.used - at);
  }

  private ensure(extra: number): void {
    if (this.used + extra <= this.arena.length) return;
    let size = this.arena.length * 2;
    while (size < this.used + extra) size *= 2;
    const bigger = Buffer.alloc(size);
    this.arena.copy(bigger, 0, 0, this.used);
    this.arena = bigger;
    this.arenaAddr = ptr(bigger) as number;
  }

  private putString(s: string, nul: boolean): number {
    this.ensure(s.length * 3 + 1);
    const at = this.used;
    this.used += this.arena.write(s, at);
    if (nul) this.arena[this.used++] = 0;
    return at;
  }

  private putBytes(b: Uint8Array): number {
    this.ensure(b.length);
    const at = this.used;
    this.arena.set(b, at);
    this.used += b.length;
    return at;
  }
}

/**
 * Encodes a run of messages to one topic, without headers, as the `rd_kafka_message_t[]` of
 * `rd_kafka_produce_batch`, their keys and values in one growable arena.
 */
export class BatchEncoder {
  private arena = Buffer.alloc(1 << 18);
  private arenaAddr = ptr(this.arena) as number;
  private structs = new Uint8Array(MESSAGE.size * 1024);
  private view = new DataView(this.structs.buffer);
  // NOTE: after `.buffer`: JSC moves a small typed array's bytes when its buffer is first asked for.
  private structsAddr = ptr(this.structs) as Pointer;

  /** Encodes messages[from, to) with their send ids; returns the array's address. */
  encode(messages: OutgoingMessage[], ids: number[], from: number, to: number): Pointer {
    const n = to - from;
    if (n * MESSAGE.size > this.structs.length) {
      this.structs = new Uint8Array(n * MESSAGE.size * 2);
      this.view = new DataView(this.structs.buffer);
      this.structsAddr = ptr(this.structs);
    }
    // Room for every key and value first, so no address moves while writing.
    let bytes = 0;
    for (let i = from; i < to; i++) bytes += byteBound(messages[i]!.value) + byteBound(messages[i]!.key);
    if (bytes > this.arena.length) {
      this.arena = Buffer.alloc(Math.max(bytes, this.arena.length * 2));
      this.arenaAddr = ptr(this.arena) as number;
    }
    const view = this.view;
    let used = 0;
    for (let i = from; i < to; i++) {
      const m = messages[i]!;
      const at = (i - from) * MESSAGE.size;
      view.setInt32(at + MESSAGE.err, 0, true);
      view.setInt32(at + MESSAGE.partition, m.partition !== undefined && m.partition >= 0 ? m.partition : PARTITION_UA, true);
      used = this.field(at + MESSAGE.payload, at + MESSAGE.len, m.value, used);
      used = this.field(at + MESSAGE.key, at + MESSAGE.key_len, m.key, used);
      setAddr(view, at + MESSAGE.opaque, ids[i]!);
    }
    return this.structsAddr;
  }

  /** The error librdkafka set on message `i` of the last batch (0: enqueued). */
  errorAt(i: number): number {
    return this.view.getInt32(i * MESSAGE.size + MESSAGE.err, true);
  }

  /** Writes one key or value into the arena and its pointer and length into the struct; null stays NULL. */
  private field(ptrAt: number, lenAt: number, data: Uint8Array | string | null | undefined, used: number): number {
    if (data === null || data === undefined) {
      setAddr(this.view, ptrAt, 0);
      setAddr(this.view, lenAt, 0);
      return used;
    }
    if (typeof data !== "string" && !(data instanceof Uint8Array)) throw new TypeError(notBytes(data));
    const len = typeof data === "string" ? this.arena.write(data, used) : (this.arena.set(data, used), data.length);
    setAddr(this.view, ptrAt, this.arenaAddr + used);
    setAddr(this.view, lenAt, len);
    return used + len;
  }
}

function notBytes(data: unknown): string {
  return `a key or value must be a Uint8Array, a string or null, not ${data === null ? "null" : typeof data}`;
}

/** Most bytes `data` takes in UTF-8. */
function byteBound(data: Uint8Array | string | null | undefined): number {
  if (data === null || data === undefined) return 0;
  return typeof data === "string" ? data.length * 3 : data.length;
}

/** Writes a non-negative integer below 2^53 (an address, a size) as a little-endian 64-bit field. */
function setAddr(view: DataView, at: number, value: number): void {
  view.setUint32(at, value >>> 0, true);
  view.setUint32(at + 4, Math.floor(value / 4294967296), true);
}

export function hasHeaders(m: OutgoingMessage): boolean {
  if (!m.headers) return false;
  for (const _ in m.headers) return true;
  return false;
}

