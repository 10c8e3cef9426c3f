/**
 * @module kafka/producer
 * The idempotent producer: `send` settles with the broker's delivery report. Messages are encoded
 * into one reusable arena and handed to librdkafka with `RD_KAFKA_MSG_F_COPY`, so no JS memory is
 * referenced by librdkafka after the call returns.
 *
 * Sends are staged and produced together at the end of the current task (or of `sendAll`): runs of
 * messages to one topic without headers go in one `rd_kafka_produce_batch` call, which costs
 * librdkafka ~25% less per message than `rd_kafka_produceva` (one clock read and one topic lock
 * per call); a message with headers goes through `rd_kafka_produceva`.
 *
 * @example
 * const producer = new Producer({ "bootstrap.servers": "localhost:9092" });
 * const { partition, offset } = await producer.send({ topic: "t", key: "k", value: "v" });
 * await producer.close();
 */
import { NativeClient } from "./client.ts";
import { cstr, ERR, EVENT, MESSAGE, MSG_F_COPY, MSG_F_PARTITION, PARTITION_UA, ptr, rdk, read, readInt64, RD_KAFKA_PRODUCER, type Pointer } from "./ffi.ts";
import { BatchEncoder, hasHeaders, VuEncoder } from "./encoders.ts";
import { KafkaError } from "./errors.ts";
import type { DeliveryReport, KafkaConfig, MessageSink, OutgoingMessage } from "./types.ts";

export interface ProducerOptions {
  /** How long a send may wait for room in librdkafka's local queue before it rejects. */
  queueFullTimeoutMs?: number;
}

/** What awaits a delivery report: one `send`, or a `sendAll` batch (under each of its ids). */
interface Pending {
  topicOf(id: number): string;
  deliver(id: number, partition: number, offset: number): void;
  fail(id: number, err: KafkaError): void;
}

class OneSend implements Pending {
  constructor(
    private readonly topic: string,
    private readonly resolve: (report: DeliveryReport) => void,
    private readonly reject: (err: KafkaError) => void,
  ) {}

  topicOf(): string {
    return this.topic;
  }

  deliver(_id: number, partition: number, offset: number): void {
    this.resolve({ topic: this.topic, partition, offset });
  }

  fail(_id: number, err: KafkaError): void {
    this.reject(err);
  }
}

/**
 * The messages of one `sendAll`, under consecutive ids from `firstId`: one promise and no
 * closures per message. Like `Promise.all`, the first failure rejects it.
 */
class SendBatch implements Pending {
  firstId = 0;
  private remaining: number;
  private settled = false;
  private readonly reports: DeliveryReport[];

  constructor(
    private readonly messages: OutgoingMessage[],
    private readonly resolve: (reports: DeliveryReport[]) => void,
    private readonly reject: (err: KafkaError) => void,
  ) {
    this.remaining = messages.length;
    this.reports = new Array(messages.length);
  }

  topicOf(id: number): string {
    return this.messages[id - this.firstId]!.topic;
  }

  deliver(id: number, partition: number, offset: number): void {
    this.reports[id - this.firstId] = { topic: this.topicOf(id), partition, offset };
    if (--this.remaining === 0 && !this.settled) {
      this.settled = true;
      this.resolve(this.reports);
    }
  }

  fail(_id: number, err: KafkaError): void {
    this.remaining--;
    if (this.settled) return;
    this.settled = true;
    this.reject(err);
  }
}

interface Blocked {
  msg: OutgoingMessage;
  id: number;
  since: number;
}

/** Most sends staged before they are produced, and most messages in one rd_kafka_produce_batch call. */
const STAGE_MAX = 1000;

/** Defaults a user may change. */
export const PRODUCER_DEFAULTS: KafkaConfig = {
  "linger.ms": 2,
  "message.timeout.ms": 30000,
  "queue.buffering.max.messages": 500000,
  "statistics.interval.ms": 5000,
};

/** Keys applied last: the delivery guarantees Kitsune's contract relies on. */
export const PRODUCER_SAFETY: KafkaConfig = {
  "enable.idempotence": true,
  acks: "all",
};

/** What a send, or a staged one, gets once the producer is closed. */
export function closedError(): KafkaError {
  return new KafkaError(ERR.DESTROY, "producer is closed", { retriable: false });
}

/**
 * Sends awaiting their delivery report, by id. Ids grow by one per send, so a ring indexed by
 * `id & mask` does what a Map would; NOTE: a Map with ~100k entries churning costs ~0.5 µs per
 * send, more than everything else the binding does for it.
 */
export class PendingSends<T> {
  private slots: (T | undefined)[];
  private mask: number;
  /** No live id is below `head`; the next id is `tail`. */
  private head = 1;
  private tail = 1;
  size = 0;

  constructor(capacity = 1 << 12) {
    this.slots = new Array(capacity).fill(undefined);
    this.mask = capacity - 1;
  }

  add(p: T): number {
    const id = this.tail;
    if (id - this.head >= this.slots.length) this.makeRoom();
    this.slots[id & this.mask] = p;
    this.tail++;
    this.size++;
    return id;
  }

  has(id: number): boolean {
    return id >= this.head && id < this.tail && this.slots[id & this.mask] !== undefined;
  }

  /** Removes and returns the send `id`, if it is still pending. */
  take(id: number): T | undefined {
    if (id < this.head || id >= this.tail) return undefined;
    const slot = id & this.mask;
    const p = this.slots[slot];
    if (p === undefined) return undefined;
    this.slots[slot] = undefined;
    this.size--;
    return p;
  }

  /** Removes every pending send, handing each to `fn` with its id. */
  takeEach(fn: (p: T, id: number) => void): void {
    for (let id = this.head; id < this.tail; id++) {
      const p = this.take(id);
      if (p) fn(p, id);
    }
    this.head = this.tail;
  }

  private makeRoom(): void {
    while (this.head < this.tail && this.slots[this.head & this.mask] === undefined) this.head++;
    if (this.tail - this.head < this.slots.length) return;
    // The oldest pending send is a whole ring behind: grow, keeping each id at `id & mask`.
    const bigger: (T | undefined)[] = new Array(this.slots.length * 2).fill(undefined);
    const mask = bigger.length - 1;
    for (let id = this.head; id < this.tail; id++) bigger[id & mask] = this.slots[id & this.mask];
    this.slots = bigger;
    this.mask = mask;
  }
}

/** Reads delivery reports out of a DR event and settles the matching sends. */
export function settleDeliveries(ev: Pointer, pending: PendingSends<Pending>, scratch: Uint32Array): number {
  const lib = rdk();
  const scratchAddr = ptr(scratch);
  const max = scratch.length / 2;
  let settled = 0;
  for (;;) {
    const n = Number(lib.rd_kafka_event_message_array(ev, scratchAddr, max));
    for (let i = 0; i < n; i++) {
      // Message pointers as two 32-bit halves: no BigInt per delivery.
      const m = (scratch[2 * i]! + scratch[2 * i + 1]! * 4294967296) as unknown as Pointer;
      const id = read.ptr(m, MESSAGE.opaque) as number;
      const p = pending.take(id);
      if (!p) continue;
      settled++;
      const err = read.i32(m, MESSAGE.err);
      if (err === ERR.NO_ERROR) p.deliver(id, read.i32(m, MESSAGE.partition), readInt64(m, MESSAGE.offset));
      else p.fail(id, KafkaError.fromCode(err, `delivery to ${p.topicOf(id)} failed`));
    }
    if (n < max) return settled;
  }
}

export class Producer implements MessageSink {
  protected readonly client: NativeClient;
  protected readonly pending = new PendingSends<Pending>();
  private readonly encoder = new VuEncoder();
  private readonly batchEncoder = new BatchEncoder();
  /** Sends not yet handed to librdkafka: produced together at the end of the task (see module doc). */
  private staged: OutgoingMessage[] = [];
  private stagedIds: number[] = [];
  private stageScheduled = false;
  private readonly produceStagedNow = () => this.produceStaged();
  private readonly backlog: Blocked[] = [];
  /** Message pointers of one DR event, as 32-bit halves. */
  private readonly scratch = new Uint32Array(2 * 1024);
  /** Topic handles by name (null: librdkafka refused one; produce by name). */
  private readonly topics = new Map<string, Pointer | null>();
  private readonly queueFullTimeoutMs: number;
  private closing: Promise<void> | undefined;
  private idleWaiters: (() => void)[] = [];
  private backlogTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(config: KafkaConfig, options: ProducerOptions = {}, safety: KafkaConfig = PRODUCER_SAFETY) {
    this.queueFullTimeoutMs = options.queueFullTimeoutMs ?? 10_000;
    this.client = new NativeClient(
      RD_KAFKA_PRODUCER,
      { ...PRODUCER_DEFAULTS, ...config, ...safety },
      EVENT.DR,
      (ev, type) => {
        if (type === EVENT.DR) this.onDeliveries(ev);
      },
      (err) => {
        if (err.fatal) this.failAll(err);
      },
    );
    this.client.startEvents();
  }

  /** Latest librdkafka statistics, if enabled. */
  get stats(): Record<string, any> | undefined {
    return this.client.stats;
  }

  /** True when some broker connection is up, according to the latest statistics. */
  get connected(): boolean | undefined {
    const brokers = this.client.stats?.brokers as Record<string, { state: string; nodeid: number }> | undefined;
    if (!brokers) return undefined;
    return Object.values(brokers).some((b) => b.nodeid >= 0 && b.state === "UP");
  }

  /** Number of sends not yet settled. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends not yet handed to librdkafka: staged, or waiting for room in its queue. */
  protected get waitingForRoom(): number {
    return this.staged.length + this.backlog.length;
  }

  send(msg: OutgoingMessage): Promise<DeliveryReport> {
    if (this.closing || this.client.isDestroyed) return Promise.reject(closedError());
    return new Promise<DeliveryReport>((resolve, reject) => {
      this.enqueue(msg, this.pending.add(new OneSend(msg.topic, resolve, reject)));
    });
  }

  /** Sends every message; settles with their reports in order, or with the first failure. */
  sendAll(messages: OutgoingMessage[]): Promise<DeliveryReport[]> {
    if (this.closing || this.client.isDestroyed) return Promise.reject(closedError());
    if (messages.length === 0) return Promise.resolve([]);
    return new Promise<DeliveryReport[]>((resolve, reject) => {
      const batch = new SendBatch(messages, resolve, reject);
      // Ids are consecutive: nothing else adds to `pending` during this loop.
      for (let i = 0; i < messages.length; i++) {
        const id = this.pending.add(batch);
        if (i === 0) batch.firstId = id;
        this.enqueue(messages[i]!, id);
      }
      this.produceStaged();
    });
  }

  private enqueue(msg: OutgoingMessage, id: number): void {
    this.staged.push(msg);
    this.stagedIds.push(id);
    if (this.staged.length >= STAGE_MAX) this.produceStaged();
    else if (!this.stageScheduled) {
      this.stageScheduled = true;
      queueMicrotask(this.produceStagedNow);
    }
  }

  /**
   * Hands the staged sends to librdkafka, in order; from the first that finds its queue full on, they wait.
   * Runs at the end of the task by itself; a subclass calls it to produce at once.
   */
  protected produceStaged(): void {
    this.stageScheduled = false;
    const messages = this.staged;
    const ids = this.stagedIds;
    if (messages.length === 0) return;
    this.staged = [];
    this.stagedIds = [];
    if (this.client.isDestroyed) {
      const err = closedError();
      for (const id of ids) this.pending.take(id)?.fail(id, err);
      return;
    }
    for (let i = 0; i < messages.length; ) {
      const msg = messages[i]!;
      if (this.backlog.length > 0) {
        this.waitForRoom(msg, ids[i]!, performance.now());
        i++;
        continue;
      }
      const rkt = this.topicHandle(msg.topic);
      if (!rkt || hasHeaders(msg)) {
        this.produceOne(msg, ids[i]!);
        i++;
        continue;
      }
      let end = i + 1;
      while (end < messages.length && end - i < STAGE_MAX && messages[end]!.topic === msg.topic && !hasHeaders(messages[end]!)) end++;
      try {
        this.produceRun(rkt, messages, ids, i, end);
      } catch {
        // A message the encoder cannot take (not bytes, not text): nothing of the run was produced
        // yet; one by one, only that one fails.
        for (let j = i; j < end; j++) this.produceOne(messages[j]!, ids[j]!);
      }
      i = end;
    }
  }

  /** Like produce(), but a message that cannot be encoded rejects its send instead of throwing. */
  private produceOne(msg: OutgoingMessage, id: number): void {
    try {
      this.produce(msg, id, -1);
    } catch (e) {
      const err = new KafkaError(-186, `cannot produce to ${msg.topic}: ${(e as Error)?.message ?? e}`, { codeName: "_INVALID_ARG", retriable: false });
      this.pending.take(id)?.fail(id, err);
      this.notifyIdle();
    }
  }

  /** messages[from, to), all to `rkt`'s topic and without headers, in one rd_kafka_produce_batch call. */
  private produceRun(rkt: Pointer, messages: OutgoingMessage[], ids: number[], from: number, to: number): void {
    const structs = this.batchEncoder.encode(messages, ids, from, to);
    const good = rdk().rd_kafka_produce_batch(rkt, PARTITION_UA, MSG_F_COPY | MSG_F_PARTITION, structs, to - from);
    if (good === to - from) return;
    const topic = messages[from]!.topic;
    for (let i = from; i < to; i++) {
      const code = this.batchEncoder.errorAt(i - from);
      if (code === 0) continue;
      const id = ids[i]!;
      // NOTE: librdkafka fails every message after the first that found the queue full, so the
      // order of those that wait is kept.
      if (code === ERR.QUEUE_FULL && this.queueFullTimeoutMs > 0) {
        this.waitForRoom(messages[i]!, id, performance.now());
        continue;
      }
      this.pending.take(id)?.fail(id, KafkaError.fromCode(code, `cannot produce to ${topic}`));
    }
    this.notifyIdle();
  }

  /**
   * Hands one message to librdkafka; returns false if its queue is full (the message waits).
   * `since` is when the message first found the queue full, or -1.
   */
  private produce(msg: OutgoingMessage, id: number, since: number): boolean {
    const vus = this.encoder.encode(msg, id, this.topicHandle(msg.topic));
    const error = rdk().rd_kafka_produceva(this.client.rk, vus, this.encoder.count);
    if (!error) return true;
    const err = KafkaError.fromErrorPtr(error, `cannot produce to ${msg.topic}`);
    if (err.code === ERR.QUEUE_FULL) {
      const blockedSince = since < 0 ? performance.now() : since;
      if (performance.now() - blockedSince < this.queueFullTimeoutMs) {
        this.waitForRoom(msg, id, blockedSince);
        return false;
      }
    }
    this.pending.take(id)?.fail(id, err);
    this.notifyIdle();
    return true;
  }

  /** A cached `rd_kafka_topic_t *` for `topic`, freed in close(); a few topics is the norm. */
  private topicHandle(topic: string): Pointer | null {
    const known = this.topics.get(topic);
    if (known !== undefined) return known;
    if (this.topics.size >= 1000) return null;
    const rkt = rdk().rd_kafka_topic_new(this.client.rk, ptr(cstr(topic)), null);
    this.topics.set(topic, rkt);
    return rkt;
  }

  /** The message waits in the backlog (where the retried one already is, at its head) for room. */
  private waitForRoom(msg: OutgoingMessage, id: number, since: number): void {
    if (this.backlog[0]?.id !== id) this.backlog.push({ msg, id, since });
    this.scheduleBacklog();
  }

  private scheduleBacklog(): void {
    this.backlogTimer ??= setTimeout(() => {
      this.backlogTimer = undefined;
      this.retryBacklog();
    }, 5);
  }

  private retryBacklog(): void {
    while (this.backlog.length > 0) {
      const b = this.backlog[0]!;
      if (!this.pending.has(b.id)) {
        this.backlog.shift();
        continue;
      }
      if (!this.produce(b.msg, b.id, b.since)) return;
      this.backlog.shift();
    }
  }

  private onDeliveries(ev: Pointer): void {
    settleDeliveries(ev, this.pending, this.scratch);
    if (this.backlog.length > 0) this.retryBacklog();
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.pending.size > 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private failAll(err: KafkaError): void {
    this.backlog.length = 0;
    this.staged = [];
    this.stagedIds = [];
    this.pending.takeEach((p, id) => p.fail(id, err));
    this.notifyIdle();
  }

  /** Waits until every send has settled, or rejects after `timeoutMs`. */
  flush(timeoutMs = 30_000): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        reject(new KafkaError(ERR.TIMED_OUT, `flush: ${this.pending.size} message(s) still in flight`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.idleWaiters.push(done);
    });
  }

  /**
   * Flushes (up to `timeoutMs`), then frees the native handle. Sends still in flight reject with
   * `_DESTROY`. Idempotent; concurrent calls share one close.
   */
  close(timeoutMs = 10_000): Promise<void> {
    return (this.closing ??= (async () => {
      try {
        await this.flush(timeoutMs);
      } catch {}
      this.failAll(new KafkaError(ERR.DESTROY, "producer closed before delivery", { retriable: true }));
      if (this.backlogTimer) clearTimeout(this.backlogTimer);
      // Purge what librdkafka still queues so rd_kafka_destroy does not wait for it.
      rdk().rd_kafka_purge(this.client.rk, 0x1 | 0x2 | 0x4);
      for (const rkt of this.topics.values()) if (rkt) rdk().rd_kafka_topic_destroy(rkt);
      this.topics.clear();
      this.client.destroy();
    })());
  }
}
