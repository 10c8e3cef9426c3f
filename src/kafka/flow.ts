/**
 * @module kafka/flow
 * The consumer's flow control: fetched messages waiting to be handed out, the partitions the
 * caller paused (and what was fetched of them before the pause), and the throttle that keeps a
 * slow reader's memory bounded. librdkafka is reached only through the small `FlowPort`.
 */
import { tpKey } from "./offsets.ts";
import type { Message, TopicPartition } from "./types.ts";

/** What flow control asks of the client. */
export interface FlowPort {
  /** librdkafka stops (or starts again) fetching these partitions. */
  pausePartitions(parts: TopicPartition[]): void;
  resumePartitions(parts: TopicPartition[]): void;
  assignment(): TopicPartition[];
  /** Serves librdkafka's queue again: messages already waiting there get no wake-up of their own. */
  drain(): void;
}

export class FlowControl {
  /** Fetched messages not handed out yet, in partition order. */
  buffer: Message[] = [];
  private readonly paused = new Set<string>();
  /**
   * Messages of paused partitions that were fetched before the pause, handed out after `resume`.
   * NOTE: librdkafka counts them as consumed (it resumes fetching after them), so dropping them
   * would lose them.
   */
  private readonly held = new Map<string, Message[]>();
  /**
   * The buffer reached `maxBuffered`: messages stay in librdkafka's queue (whose prefetch limit
   * then stops fetching) until the caller has taken most of the buffer. Only if that takes longer
   * than `holdMs` are the partitions paused (`throttlePaused`), so the queue can be served
   * again: rebalances and errors wait behind messages, and librdkafka's max.poll.interval.ms counts.
   * NOTE: pausing throws away what librdkafka prefetched and fetching restarts slowly after a
   * resume; pausing at every full buffer cost a fast reader most of its throughput.
   */
  private throttled = false;
  private throttledAt = 0;
  private throttlePaused = false;

  constructor(
    private readonly port: FlowPort,
    private readonly maxBuffered: number,
    private readonly holdMs: number,
  ) {}

  get pausedCount(): number {
    return this.paused.size;
  }

  /** Into the buffer, or held back when its partition is paused. */
  keep(message: Message): void {
    if (this.paused.size > 0 && this.paused.has(tpKey(message))) this.holdBack(message);
    else this.buffer.push(message);
  }

  /** After messages were kept: a full buffer starts the throttle. */
  afterKeeping(): void {
    if (!this.throttled && this.buffer.length >= this.maxBuffered) {
      this.throttled = true;
      this.throttledAt = performance.now();
    }
  }

  /** Takes up to `maxMessages` from the buffer. */
  take(maxMessages: number): Message[] {
    const batch = this.buffer.length <= maxMessages ? this.buffer : this.buffer.slice(0, maxMessages);
    this.buffer = this.buffer.length <= maxMessages ? [] : this.buffer.slice(maxMessages);
    // NOTE: only once the buffer is mostly drained: fewer, longer turns of the throttle.
    if (this.throttled && this.buffer.length <= this.maxBuffered / 4) this.unthrottle();
    return batch;
  }

  /** Messages are left in librdkafka's queue for now (see `throttled`); closing drains regardless. */
  holding(closing: boolean): boolean {
    return this.throttled && !this.throttlePaused && !closing;
  }

  /**
   * Whether the poller leaves librdkafka's queue alone this turn: while throttled, for `holdMs`;
   * after that the partitions are paused for the throttle and the queue is served again.
   */
  holdsBack(closing: boolean): boolean {
    if (!this.holding(closing)) return false;
    if (performance.now() - this.throttledAt < this.holdMs) return true;
    this.throttlePaused = true;
    const parts = this.port.assignment().filter((p) => !this.paused.has(tpKey(p)));
    if (parts.length) this.port.pausePartitions(parts);
    return false;
  }

  pause(parts: TopicPartition[]): void {
    for (const p of parts) this.paused.add(tpKey(p));
    this.port.pausePartitions(parts);
    const keep: Message[] = [];
    for (const m of this.buffer) {
      if (this.paused.has(tpKey(m))) this.holdBack(m);
      else keep.push(m);
    }
    this.buffer = keep;
  }

  resume(parts: TopicPartition[]): void {
    for (const p of parts) {
      const k = tpKey(p);
      this.paused.delete(k);
      // The buffer holds nothing of a paused partition, so appending keeps partition order.
      const waiting = this.held.get(k);
      if (waiting) for (const m of waiting) this.buffer.push(m);
      this.held.delete(k);
    }
    // While paused for the throttle they stay paused in librdkafka; unthrottle() resumes them.
    if (!this.throttlePaused) this.port.resumePartitions(parts);
  }

  /** Newly assigned partitions wait with the others while the throttle has them paused. */
  assigned(parts: TopicPartition[]): void {
    if (this.throttlePaused) this.port.pausePartitions(parts);
  }

  /** Drops the buffered messages of these partitions (by `tpKey`): they go to another member. */
  discard(keys: Set<string>): void {
    this.buffer = this.buffer.filter((m) => !keys.has(tpKey(m)));
  }

  /** Drops everything fetched of these partitions (by `tpKey`), held back or not: they were sought. */
  drop(keys: Set<string>): void {
    this.discard(keys);
    for (const k of keys) this.held.delete(k);
  }

  /** The partitions are no longer assigned: forget that they were paused. */
  forget(keys: Set<string>): void {
    for (const k of keys) {
      this.paused.delete(k);
      this.held.delete(k);
    }
  }

  clear(): void {
    this.buffer = [];
    this.held.clear();
  }

  private unthrottle(): void {
    this.throttled = false;
    if (this.throttlePaused) {
      this.throttlePaused = false;
      const parts = this.port.assignment().filter((p) => !this.paused.has(tpKey(p)));
      if (parts.length) this.port.resumePartitions(parts);
    }
    // No wake-up comes for messages that were already waiting.
    setImmediate(() => this.port.drain());
  }

  private holdBack(m: Message): void {
    const k = tpKey(m);
    const list = this.held.get(k);
    if (list) list.push(m);
    else this.held.set(k, [m]);
  }
}
