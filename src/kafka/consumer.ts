/**
 * @module kafka/consumer
 * A group consumer that hands out batches through an async iterator and commits only what the
 * caller says it processed. Rebalances arrive as events: before partitions are revoked the caller's
 * `onRevoke` runs (and may commit), then they are unassigned.
 *
 * @example
 * const consumer = new Consumer({ "bootstrap.servers": "localhost:9092", "group.id": "g" });
 * consumer.subscribe(["db-events"]);
 * for await (const batch of consumer.batches()) {
 *   await handle(batch);
 *   await consumer.commit(nextOffsets(batch));
 * }
 */
import { EVENTS_PER_TURN, NativeClient } from "./client.ts";
import { DESTROY_F_NO_CONSUMER_CLOSE, ERR, EVENT, ptr, rdk, read, RD_KAFKA_CONSUMER, type Pointer } from "./ffi.ts";
import { KafkaError } from "./errors.ts";
import { native, STATE, type Native } from "./native.ts";
import { readList, withList } from "./partitions.ts";
import { nextOffsets, tpKey } from "./offsets.ts";
import { CHUNK_SIZE, RecordDecoder, type Chunk } from "./records.ts";
import { FlowControl } from "./flow.ts";
import type { BatchOptions, KafkaConfig, Message, MessageSource, RebalanceHooks, RebalanceInfo, TopicPartition, TopicPartitionOffset } from "./types.ts";

export { nextOffsets };
export type { BatchOptions, RebalanceInfo };

export interface ConsumerOptions extends RebalanceHooks {
  /** Non-fatal client errors (broker down, …) — informational; librdkafka keeps retrying. */
  onError?(err: KafkaError): void;
  /** Messages held in memory before the binding stops draining librdkafka's queue. */
  maxBuffered?: number;
  /**
   * false: read messages through plain FFI calls, not native.c (for comparison and tests).
   * A `Native` (from `loadNative`): read through that build of native.c.
   */
  native?: boolean | Native;
  /** How long a full buffer leaves messages in librdkafka's queue before partitions are paused (default 5 s). */
  throttleHoldMs?: number;
}

export const CONSUMER_DEFAULTS: KafkaConfig = {
  "auto.offset.reset": "earliest",
  "statistics.interval.ms": 5000,
  "fetch.wait.max.ms": 100,
  // NOTE: librdkafka 2.0 stops fetching a partition whose local queue holds queued.min.messages
  // and only looks again when its broker thread next wakes (up to 1 s later): a consumer slower
  // than the fetcher got ~0.5 s gaps and lost a third of its throughput. Prefetch memory stays
  // bounded by queued.max.messages.kbytes (64 MB by default), which now binds first.
  "queued.min.messages": 1_000_000,
};

/**
 * Defaults of the classic group protocol: cooperative (incremental) rebalancing, and a session
 * short enough that a dead member's partitions move within seconds. Under KIP-848's
 * `group.protocol=consumer` (Kafka 4.x) the broker assigns, always incrementally, and owns the
 * session; librdkafka refuses these keys there.
 */
export const CLASSIC_GROUP_DEFAULTS: KafkaConfig = {
  "partition.assignment.strategy": "cooperative-sticky",
  "session.timeout.ms": 10000,
  "heartbeat.interval.ms": 1000,
};

/** Whether `config` asks for KIP-848's consumer group protocol. */
export function usesConsumerProtocol(config: KafkaConfig): boolean {
  return String(config["group.protocol"] ?? "classic").toLowerCase() === "consumer";
}

/** The consumer's librdkafka settings: Kitsune's defaults, then `config`, then the safety keys. */
export function consumerConfig(config: KafkaConfig): KafkaConfig {
  const group = usesConsumerProtocol(config) ? {} : CLASSIC_GROUP_DEFAULTS;
  return { ...group, ...CONSUMER_DEFAULTS, ...config, ...CONSUMER_SAFETY };
}

/** Keys applied last: Kitsune's at-least-once/exactly-once contract depends on them. */
export const CONSUMER_SAFETY: KafkaConfig = {
  "enable.auto.commit": false,
  "enable.auto.offset.store": false,
  "isolation.level": "read_committed",
  "enable.partition.eof": false,
};

export class Consumer implements MessageSource {
  private readonly client: NativeClient;
  private readonly consumerQueue: Pointer;
  /**
   * Commit results arrive here, not on the consumer queue. NOTE: behind messages held back by
   * backpressure, a result would never be served while the caller awaits it before reading on.
   */
  private readonly commitQueue: Pointer;
  private readonly opts: ConsumerOptions;
  private readonly flow: FlowControl;
  private waiter: (() => void) | undefined;
  private readonly commits = new Map<number, { resolve(): void; reject(e: KafkaError): void }>();
  private nextCommitId = 1;
  private assigned = new Map<string, TopicPartition>();
  private rebalancing: Promise<void> = Promise.resolve();
  private readonly cooperative: boolean;
  private closing: Promise<void> | undefined;
  private closed = false;
  private fatal: KafkaError | undefined;
  private readonly records = new RecordDecoder();
  private readonly keepOne = (message: Message) => this.flow.keep(message);
  /** The native fetch loop (native.c), when it could be built; see `pollFetched`. */
  private readonly native;
  /** native.c's `state_t` of this consumer (its u32 words), and its address. */
  private readonly fetchState = new Uint32Array(STATE.size / 4);
  private readonly fetchStateAddr: Pointer;

  constructor(config: KafkaConfig, options: ConsumerOptions = {}) {
    if (!config["group.id"]) throw new KafkaError(-186, "a consumer needs group.id", { codeName: "_INVALID_ARG" });
    this.opts = options;
    // NOTE: `.buffer` first: JSC moves a small typed array's bytes when its buffer is first asked
    // for, which would leave an earlier ptr() dangling.
    void this.fetchState.buffer;
    this.fetchStateAddr = ptr(this.fetchState);
    const fast = options.native === false ? null : options.native === true || options.native === undefined ? native() : options.native;
    this.native = fast;
    this.client = new NativeClient(
      RD_KAFKA_CONSUMER,
      consumerConfig(config),
      EVENT.FETCH | EVENT.REBALANCE | EVENT.OFFSET_COMMIT,
      (ev, type) => this.onEvent(ev, type),
      (err) => {
        if (err.fatal) {
          this.fatal = err;
          this.wake();
        }
        options.onError?.(err);
      },
      // The batch call of native.c serves rebalances through this callback, not as events.
      fast
        ? (conf) => {
            rdk().rd_kafka_conf_set_rebalance_cb(conf, fast.rebalanceCb);
            rdk().rd_kafka_conf_set_opaque(conf, this.fetchStateAddr);
          }
        : undefined,
    );
    const lib = rdk();
    // NOTE: the main queue (errors, statistics) is served apart, not forwarded to the consumer
    // queue by rd_kafka_poll_set_consumer(): native.c's batch call would log its events away.
    this.client.serveQueue(lib.rd_kafka_queue_get_main(this.client.rk)!);
    this.consumerQueue = lib.rd_kafka_queue_get_consumer(this.client.rk)!;
    this.commitQueue = lib.rd_kafka_queue_new(this.client.rk)!;
    this.client.serveQueue(this.commitQueue);
    this.cooperative =
      usesConsumerProtocol(config) || String(consumerConfig(config)["partition.assignment.strategy"]).includes("cooperative");
    const rk = this.client.rk;
    this.flow = new FlowControl(
      {
        pausePartitions: (parts) => withList(parts, (list) => lib.rd_kafka_pause_partitions(rk, list)),
        resumePartitions: (parts) => withList(parts, (list) => lib.rd_kafka_resume_partitions(rk, list)),
        assignment: () => this.assignment(),
        drain: () => this.client.drain(),
      },
      options.maxBuffered ?? 20_000,
      options.throttleHoldMs ?? THROTTLE_HOLD_MS,
    );
    // Backpressure: see FlowControl.
    this.client.poller = (queue) => {
      if (this.flow.holdsBack(this.closing !== undefined)) return "empty";
      return this.native ? this.pollFetched(queue) : (lib.rd_kafka_queue_poll(queue, 0) ?? "empty");
    };
    this.client.startEvents(this.consumerQueue);
  }

  get stats(): Record<string, any> | undefined {
    return this.client.stats;
  }

  /** How fetched messages are read: in bulk by native.c, or one by one through FFI. */
  get fetchPath(): "native" | "ffi" {
    return this.native ? "native" : "ffi";
  }

  subscribe(topics: string[]): void {
    const err = withList(topics.map((topic) => ({ topic, partition: -1 })), (list) =>
      rdk().rd_kafka_subscribe(this.client.rk, list),
    );
    if (err) throw KafkaError.fromCode(err, `subscribe to ${topics.join(", ")}`);
  }

  /** Partitions currently assigned to this member. */
  assignment(): TopicPartition[] {
    return [...this.assigned.values()];
  }

  /**
   * Batches of messages in partition order, until `close()`. A batch is handed out as soon as
   * `maxMessages` are there or `maxWaitMs` passed since its first message.
   */
  async *batches({ maxMessages = 1000, maxWaitMs = 50 }: BatchOptions = {}): AsyncGenerator<Message[]> {
    while (!this.closed && !this.closing) {
      if (this.fatal) throw this.fatal;
      if (this.flow.buffer.length === 0) {
        await this.waitForData(1000);
        continue;
      }
      if (this.flow.buffer.length < maxMessages && maxWaitMs > 0) await this.waitForData(maxWaitMs, maxMessages);
      if (this.closing) return;
      const batch = this.flow.take(maxMessages);
      if (batch.length > 0) yield batch;
    }
  }

  private waitForData(ms: number, until = 1): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.waiter === check) self.waiter = undefined;
        resolve();
      }
      function check() {
        if (self.flow.buffer.length >= until || self.closing || self.fatal) done();
      }
      this.waiter = check;
    });
  }

  private wake(): void {
    this.waiter?.();
  }

  /** Commits the given next-offsets; settles when the group coordinator answered. */
  commit(offsets: TopicPartitionOffset[]): Promise<void> {
    if (offsets.length === 0) return Promise.resolve();
    if (this.closed) return Promise.reject(new KafkaError(ERR.DESTROY, "consumer is closed", { retriable: false }));
    return new Promise((resolve, reject) => {
      const id = this.nextCommitId++;
      this.commits.set(id, { resolve, reject });
      const err = withList(offsets, (list) =>
        rdk().rd_kafka_commit_queue(this.client.rk, list, this.commitQueue, null, id as unknown as Pointer),
      );
      if (err) {
        this.commits.delete(id);
        reject(KafkaError.fromCode(err, "commit"));
      }
    });
  }

  /**
   * Hands out nothing more from these partitions (all assigned ones by default) until `resume`:
   * librdkafka stops fetching them, and what was already fetched waits here.
   */
  pause(parts: TopicPartition[] = this.assignment()): void {
    if (parts.length === 0) return;
    this.flow.pause(parts);
  }

  resume(parts: TopicPartition[] = this.assignment()): void {
    if (parts.length === 0) return;
    this.flow.resume(parts);
    this.wake();
  }

  get pausedCount(): number {
    return this.flow.pausedCount;
  }

  /** Moves the fetch position of assigned partitions; buffered messages of them are dropped. */
  seek(offsets: TopicPartitionOffset[]): void {
    this.flow.drop(new Set(offsets.map(tpKey)));
    const error = withList(offsets, (list) => rdk().rd_kafka_seek_partitions(this.client.rk, list, 0));
    if (error) throw KafkaError.fromErrorPtr(error, "seek");
  }

  /** Consumer lag per assigned partition from the latest statistics (committed offset vs high watermark). */
  lag(): { topic: string; partition: number; lag: number }[] {
    const topics = this.client.stats?.topics as Record<string, { partitions: Record<string, any> }> | undefined;
    if (!topics) return [];
    const out: { topic: string; partition: number; lag: number }[] = [];
    for (const [topic, t] of Object.entries(topics)) {
      for (const p of Object.values(t.partitions)) {
        if (p.partition < 0 || !this.assigned.has(tpKey({ topic, partition: p.partition }))) continue;
        if (p.consumer_lag >= 0) out.push({ topic, partition: p.partition, lag: p.consumer_lag });
      }
    }
    return out;
  }

  private onEvent(ev: Pointer, type: number): void {
    const lib = rdk();
    if (type === EVENT.FETCH) {
      const m = lib.rd_kafka_event_message_next(ev);
      if (m) this.onMessage(m);
      return;
    }
    if (type === EVENT.REBALANCE) {
      this.rebalance(lib.rd_kafka_event_error(ev), lib.rd_kafka_event_topic_partition_list(ev));
      return;
    }
    if (type === EVENT.OFFSET_COMMIT) {
      const id = lib.rd_kafka_event_opaque(ev) as unknown as number;
      const c = this.commits.get(id);
      if (!c) return;
      this.commits.delete(id);
      const code = lib.rd_kafka_event_error(ev);
      const failed = readList(lib.rd_kafka_event_topic_partition_list(ev)).find((p) => p.error !== 0);
      if (code !== 0 && code !== ERR.NO_OFFSET) c.reject(KafkaError.fromCode(code, "commit"));
      else if (failed) c.reject(KafkaError.fromCode(failed.error, `commit ${failed.topic}[${failed.partition}]`));
      else c.resolve();
    }
  }

  /** librdkafka asks for an assignment change: handled after those it asked for before. */
  private rebalance(code: number, list: Pointer | null): void {
    const parts = readList(list).map(({ topic, partition }) => ({ topic, partition }));
    const lost = rdk().rd_kafka_assignment_lost(this.client.rk) === 1;
    this.rebalancing = this.rebalancing.then(() =>
      code === ERR.ASSIGN_PARTITIONS ? this.assign(parts) : this.revoke(parts, { lost }),
    );
  }

  /**
   * Serves the consumer queue through native.c: fetched messages are copied in bulk into a chunk
   * and turned into Messages here, and the rebalances its callback recorded are handled. Returns
   * only once nothing it took from librdkafka is left pending in native.c.
   */
  private pollFetched(queue: Pointer): "empty" | "yield" {
    const st = this.fetchState;
    const lib = rdk();
    for (let served = 0; ; ) {
      const chunk = this.records.chunk;
      this.native!.fetch(queue, chunk.addr as unknown as Pointer, CHUNK_SIZE, FETCH_MAX, this.fetchStateAddr);
      const count = st[STATE.records / 4]!;
      if (count > 0) this.takeRecords(chunk, count);
      served += count;
      const left = st[STATE.left / 4]! + st[STATE.left / 4 + 1]! * 4294967296;
      if (left) {
        // An error, or a message bigger than a chunk: read through plain FFI.
        try {
          this.onMessage(left as unknown as Pointer);
        } finally {
          lib.rd_kafka_message_destroy(left as unknown as Pointer);
        }
        served++;
      }
      if (st[STATE.rebalances / 4]) this.takeRebalances();
      if (st[STATE.start / 4]! < st[STATE.count / 4]!) continue;
      if (st[STATE.empty / 4] || this.flow.holding(this.closing !== undefined)) return "empty";
      if (served >= EVENTS_PER_TURN) return "yield";
    }
  }

  /** The rebalances native.c's callback recorded during the last fetch, in order. */
  private takeRebalances(): void {
    const st = this.fetchState;
    const lib = rdk();
    const errs = new Int32Array(st.buffer, STATE.rebalanceErr, STATE.rebalanceSlots * 2);
    for (let i = 0; i < st[STATE.rebalances / 4]!; i++) {
      const at = STATE.rebalanceList / 4 + 2 * i;
      const list = (st[at]! + st[at + 1]! * 4294967296) as unknown as Pointer;
      this.rebalance(errs[2 * i]!, list);
      if (list) lib.rd_kafka_topic_partition_list_destroy(list);
    }
    st[STATE.rebalances / 4] = 0;
    if (st[STATE.overflow / 4]) {
      st[STATE.overflow / 4] = 0;
      // Cannot happen (librdkafka waits for each assign call); if it did, the group would hang.
      this.fatal = new KafkaError(-1, "rebalances were lost: native.c's table of them overflowed", { fatal: true });
      this.opts.onError?.(this.fatal);
      this.wake();
    }
  }

  /** Turns `count` records of native.c into Messages (see RecordDecoder.decodeChunk). */
  private takeRecords(chunk: Chunk, count: number): void {
    if (this.closing) return;
    this.records.decodeChunk(chunk, count, this.keepOne);
    this.afterKeeping();
  }

  /** After messages were kept: throttle a full buffer, wake a waiting reader. */
  private afterKeeping(): void {
    this.flow.afterKeeping();
    if (this.waiter) this.wake();
  }

  private onMessage(m: Pointer): void {
    // Closing: nothing more is handed out; the events behind these messages must be served.
    if (this.closing) return;
    const message = this.records.decodeMessage(m);
    if (message instanceof KafkaError) {
      this.opts.onError?.(message);
      return;
    }
    if (!message) return;
    this.flow.keep(message);
    this.afterKeeping();
  }

  private async assign(parts: TopicPartition[]): Promise<void> {
    const lib = rdk();
    if (this.closed) return;
    if (this.cooperative) {
      const error = withList(parts, (list) => lib.rd_kafka_incremental_assign(this.client.rk, list));
      if (error) this.opts.onError?.(KafkaError.fromErrorPtr(error, "incremental_assign"));
    } else {
      const all = [...this.assigned.values(), ...parts];
      const err = withList(all, (list) => lib.rd_kafka_assign(this.client.rk, list));
      if (err) this.opts.onError?.(KafkaError.fromCode(err, "assign"));
    }
    for (const p of parts) this.assigned.set(tpKey(p), p);
    this.flow.assigned(parts);
    // NOTE: a throwing hook must not break the rebalance chain: every later rebalance (and close)
    // awaits it.
    try {
      await this.opts.onAssign?.(parts);
    } catch (err) {
      this.opts.onError?.(new KafkaError(-1, `onAssign failed: ${(err as Error)?.message ?? err}`));
    }
  }

  private async revoke(parts: TopicPartition[], info: RebalanceInfo): Promise<void> {
    const lib = rdk();
    // Messages of revoked partitions that were not handed out yet belong to the next owner.
    const gone = new Set(parts.map(tpKey));
    this.flow.discard(gone);
    try {
      await this.opts.onRevoke?.(parts, info);
    } catch (err) {
      this.opts.onError?.(new KafkaError(-1, `onRevoke failed: ${(err as Error)?.message ?? err}`));
    }
    for (const k of gone) this.assigned.delete(k);
    this.flow.forget(gone);
    if (this.client.isDestroyed) return;
    if (this.cooperative) {
      const error = withList(parts, (list) => lib.rd_kafka_incremental_unassign(this.client.rk, list));
      if (error) this.opts.onError?.(KafkaError.fromErrorPtr(error, "incremental_unassign"));
    } else {
      lib.rd_kafka_assign(this.client.rk, null);
      this.assigned.clear();
    }
    // Messages of these partitions drained while onRevoke ran are not ours either.
    this.flow.discard(gone);
  }

  /**
   * Leaves the group: the caller's `onRevoke` runs for the current assignment, the group is left,
   * the handle freed. Idempotent; iterators end.
   */
  close(timeoutMs = 10_000): Promise<void> {
    if (this.closing) return this.closing;
    // Nothing more is handed out.
    this.flow.clear();
    this.closing = this.leave(timeoutMs);
    // Only now that `closing` is set does a waiting iterator see it.
    this.wake();
    return this.closing;
  }

  private async leave(timeoutMs: number): Promise<void> {
    const lib = rdk();
    await this.rebalancing;
    const error = lib.rd_kafka_consumer_close_queue(this.client.rk, this.consumerQueue);
    if (error) this.opts.onError?.(KafkaError.fromErrorPtr(error, "close"));
    const deadline = performance.now() + timeoutMs;
    while (lib.rd_kafka_consumer_closed(this.client.rk) !== 1 && performance.now() < deadline) {
      this.client.drain();
      await this.rebalancing;
      await Bun.sleep(5);
    }
    this.closed = true;
    for (const c of this.commits.values()) c.reject(new KafkaError(ERR.DESTROY, "consumer closed before commit result"));
    this.commits.clear();
    // Messages native.c took but did not hand out (none, unless a turn was cut short) go first.
    this.native?.release(this.fetchStateAddr);
    // NOTE: rd_kafka_destroy() purges the main queue but only disables the consumer queue. Ops left
    // there (a fetched message keeps its Fetch response, which keeps the broker) held the broker
    // with 4 references: its thread never ended and destroy() waited for it forever (about one
    // SIGTERM test in five hung). With the main queue forwarded into it, that purge empties both.
    lib.rd_kafka_poll_set_consumer(this.client.rk);
    // NOTE: the close above may have run out of time. Plain rd_kafka_destroy() would then start a
    // consumer close of its own and block the event loop until it finished, with nobody left to
    // serve its rebalance events.
    this.client.destroy(DESTROY_F_NO_CONSUMER_CLOSE);
    this.flow.buffer = [];
  }
}

/** How long a full buffer may keep messages waiting in librdkafka's queue before partitions are paused. */
const THROTTLE_HOLD_MS = 5000;

/** Most messages one native fetch call takes (it runs again while more are waiting). */
const FETCH_MAX = 1000;

