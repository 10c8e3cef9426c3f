/**
 * @module test/fake-source
 * A `MessageSource` in memory for the consume loop's tests: the test assigns and revokes
 * partitions (running the loop's hooks as the Consumer would), feeds batches, and reads back what
 * was committed, sought and paused. Commits can be made to fail.
 */
import { tpKey } from "../src/kafka/offsets.ts";
import type { BatchOptions, Message, MessageSource, RebalanceHooks, TopicPartition, TopicPartitionOffset } from "../src/kafka/types.ts";

export class FakeSource implements MessageSource {
  readonly commits: TopicPartitionOffset[][] = [];
  readonly seeks: TopicPartitionOffset[][] = [];
  /** Errors the next commits reject with, in order. */
  readonly commitFailures: Error[] = [];
  private readonly assigned = new Map<string, TopicPartition>();
  private readonly pausedKeys = new Set<string>();
  private readonly queue: Message[][] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  constructor(private readonly hooks: RebalanceHooks) {}

  async assign(parts: TopicPartition[]): Promise<void> {
    for (const p of parts) this.assigned.set(tpKey(p), p);
    await this.hooks.onAssign?.(parts);
  }

  /** Runs the loop's onRevoke, then takes the partitions away. */
  async revoke(parts: TopicPartition[], lost = false): Promise<void> {
    await this.hooks.onRevoke?.(parts, { lost });
    for (const p of parts) {
      this.assigned.delete(tpKey(p));
      this.pausedKeys.delete(tpKey(p));
    }
  }

  /** The next batch `batches()` hands out. */
  feed(batch: Message[]): void {
    this.queue.push(batch);
    this.wake?.();
  }

  isPaused(p: TopicPartition): boolean {
    return this.pausedKeys.has(tpKey(p));
  }

  async *batches(_options?: BatchOptions): AsyncGenerator<Message[]> {
    while (!this.closed) {
      const next = this.queue.shift();
      if (next) {
        yield next;
        continue;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  assignment(): TopicPartition[] {
    return [...this.assigned.values()];
  }

  async commit(offsets: TopicPartitionOffset[]): Promise<void> {
    const failure = this.commitFailures.shift();
    if (failure) throw failure;
    if (offsets.length) this.commits.push(offsets);
  }

  seek(offsets: TopicPartitionOffset[]): void {
    this.seeks.push(offsets);
  }

  pause(parts: TopicPartition[] = this.assignment()): void {
    for (const p of parts) this.pausedKeys.add(tpKey(p));
  }

  resume(parts: TopicPartition[] = this.assignment()): void {
    for (const p of parts) this.pausedKeys.delete(tpKey(p));
  }

  get pausedCount(): number {
    return this.pausedKeys.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.hooks.onRevoke?.(this.assignment(), { lost: false });
    this.assigned.clear();
    this.closed = true;
    this.wake?.();
  }
}

/** Hand-built messages: `offsets` on one partition of `topic`. */
export function messages(partition: number, offsets: number[], topic = "t"): Message[] {
  return offsets.map((offset) => ({
    topic,
    partition,
    offset,
    key: null,
    value: new TextEncoder().encode(`m${offset}`),
    headers: {},
    timestamp: -1,
  }));
}
