/**
 * @module api/results
 * Waiting for a command's outcome (`POST /execute?wait=<ms>`). A request registers its id here
 * *before* it produces, so a result that arrives early is kept; one shared consumer of
 * `db-results` hands every batch to `handleBatch`, which settles the waiters whose ids it carries.
 * Results for ids nobody waits for are skipped without parsing (the `kitsune-id` header names them).
 *
 * @example
 * ```ts
 * const waiters = new ResultWaiters();
 * const expected = waiters.expect(id);           // before producing
 * // … produce, answer 202 …
 * const result = await expected?.wait(5_000);    // CommandResult, or undefined on timeout
 * // elsewhere: for await (const batch of consumer.batches()) waiters.handleBatch(batch);
 * ```
 */
import * as v from "valibot";
import { CommandResultSchema, type CommandResult } from "../contracts.ts";
import type { Consumer } from "../kafka/consumer.ts";
import type { Message } from "../kafka/types.ts";
import type { Logger } from "../logger.ts";
import { unwrap } from "../schema/wire.ts";

/** The longest `?wait=` a request may ask for. */
export const MAX_WAIT_MS = 30_000;

export interface Expectation {
  /** The result, or undefined when none arrived within `ms` (or `cancel` was called). Call once. */
  wait(ms: number): Promise<CommandResult | undefined>;
  /** Stops waiting (e.g. the produce failed). */
  cancel(): void;
}

interface Waiter {
  result?: CommandResult;
  settle?: (result: CommandResult | undefined) => void;
}

const decoder = new TextDecoder();

export class ResultWaiters {
  private readonly waiting = new Map<string, Waiter>();

  /** `max`: most requests waiting at once; beyond it `expect` returns undefined and they answer 202 at once. */
  constructor(
    private readonly max = 10_000,
    private readonly logger?: Logger,
  ) {}

  /** Requests waiting now. */
  get size(): number {
    return this.waiting.size;
  }

  expect(id: string): Expectation | undefined {
    if (this.waiting.size >= this.max || this.waiting.has(id)) return undefined;
    const waiter: Waiter = {};
    this.waiting.set(id, waiter);
    const done = () => {
      if (this.waiting.get(id) === waiter) this.waiting.delete(id);
    };
    return {
      wait: (ms) => {
        if (waiter.result || ms <= 0) {
          done();
          return Promise.resolve(waiter.result);
        }
        return new Promise((resolve) => {
          const timer = setTimeout(() => waiter.settle?.(undefined), ms);
          waiter.settle = (result) => {
            clearTimeout(timer);
            waiter.settle = undefined;
            done();
            resolve(result);
          };
        });
      },
      cancel: () => {
        waiter.settle?.(undefined);
        done();
      },
    };
  }

  /** Settles the waiters whose results are in `messages`; returns how many. */
  handleBatch(messages: Message[]): number {
    let settled = 0;
    for (const m of messages) {
      if (this.waiting.size === 0) break;
      const result = this.resultFor(m);
      if (!result) continue;
      const waiter = this.waiting.get(result.id);
      if (!waiter || waiter.result) continue;
      waiter.result = result;
      waiter.settle?.(result);
      settled++;
    }
    return settled;
  }

  /** The message's result when someone waits for its id; undefined otherwise or when it is not a CommandResult. */
  private resultFor(m: Message): CommandResult | undefined {
    const id = m.headers["kitsune-id"];
    if (id !== undefined && !this.waiting.has(id)) return undefined;
    if (!m.value) return undefined;
    let parsed: v.SafeParseResult<typeof CommandResultSchema>;
    try {
      parsed = v.safeParse(CommandResultSchema, JSON.parse(decoder.decode(unwrap(m.value))));
    } catch {
      this.logger?.warn({ topic: m.topic, partition: m.partition, offset: m.offset }, "db-results message is not JSON; skipped");
      return undefined;
    }
    if (!parsed.success) {
      this.logger?.warn({ topic: m.topic, partition: m.partition, offset: m.offset }, "db-results message is not a CommandResult; skipped");
      return undefined;
    }
    return parsed.output;
  }
}

/**
 * Feeds `consumer`'s batches to `waiters` until the consumer closes. The consumer belongs to a
 * group of its own and never commits: every api process reads every result from the latest offset on.
 */
export function feedResults(consumer: Consumer, waiters: ResultWaiters, logger: Logger): Promise<void> {
  return (async () => {
    try {
      for await (const batch of consumer.batches({ maxMessages: 1000, maxWaitMs: 0 })) waiters.handleBatch(batch);
    } catch (err) {
      // NOTE: only a fatal consumer error ends the loop; ?wait then answers 202 after its wait, as if no result came.
      logger.error({ err }, "db-results consumer failed; POST /execute?wait no longer sees results");
    }
  })();
}
