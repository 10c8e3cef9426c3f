/**
 * @module log/ship
 * The log-worker's batch handler. The consume loop only polls, calls `shipBatch`, and commits;
 * batching by count and time is the consumer's batch iterator's job (`LOG_BATCH` holds the
 * limits), and `shipBatch` cuts a batch into pushes of at most ~1 MiB of JSON itself:
 *
 * @example
 * for await (const batch of consumer.batches(LOG_BATCH)) {
 *   await shipBatch(batch, { sink, dlq: producer, dlqTopic: "app-logs.dlq", logger, metrics, signal });
 *   await consumer.commit(nextOffsets(batch));
 * }
 *
 * `shipBatch` settles every message before it resolves: delivered to Loki (2xx) or written to the
 * DLQ. Unavailable Loki (429, 5xx, network, timeout) is waited out with capped exponential backoff
 * and no limit on attempts. `onRetry` tells the caller when that starts (the log-worker pauses its
 * partitions, so nothing piles up in memory) and `onRecovered` when the retried request was
 * answered (it resumes them); `signal` lets shutdown interrupt the wait (the batch is then not
 * committed and is read again after restart).
 */
import * as v from "valibot";
import { LOG_LEVELS, LogEventSchema, type LogEvent } from "../contracts.ts";
import type { Message, MessageSink } from "../kafka/types.ts";
import { deadLetter } from "../pipeline/dead-letter.ts";
import { abortableSleep, backoffDelay, type BackoffOptions } from "../backoff.ts";
import type { Logger } from "../logger.ts";
import { toLokiEntry, type LokiEntry } from "./loki-format.ts";
import type { LokiSink, PushResult } from "./loki-sink.ts";
import type { LogMetrics } from "./metrics.ts";
import { unwrap } from "../schema/wire.ts";

/** Batch limits of the log-worker: for the consumer's batch iterator, and per push to Loki. */
export const LOG_BATCH = {
  /** Messages per batch handed to `shipBatch`. */
  maxMessages: 20_000,
  /** How long a batch waits for more messages once its first one is there. */
  maxWaitMs: 1000,
  /** Approximate JSON bytes per push request (before compression). */
  maxPushBytes: 1024 * 1024,
  /**
   * Push requests of a batch on their way at once. NOTE: Loki takes a stream's lines out of order
   * (`unordered_writes`, the default since 2.4) — which the worker needs anyway, since the
   * partitions of `app-logs` interleave the lines of one stream.
   */
  maxInFlight: 2,
} as const;

/** Shipping's defaults: 200 ms first delay, 30 s cap (which also caps a `Retry-After`). */
export { abortableSleep, backoffDelay, type BackoffOptions };

export interface ShipDeps {
  sink: Pick<LokiSink, "push">;
  dlq: MessageSink;
  /** Usually `<TOPIC_LOGS>.dlq`. */
  dlqTopic: string;
  logger: Logger;
  metrics?: LogMetrics;
  /** Aborting rejects `shipBatch` with the signal's reason as soon as the current request ends. */
  signal?: AbortSignal;
  backoff?: Partial<BackoffOptions>;
  /** Must reject with `signal.reason` when `signal` aborts. Tests pass a fast one. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Jitter source in [0, 1). */
  random?: () => number;
  /** Default `LOG_BATCH.maxPushBytes`. */
  maxPushBytes?: number;
  /** Default `LOG_BATCH.maxInFlight`. */
  maxInFlight?: number;
  /** Before every wait for a retry (Loki unavailable, or the DLQ write failing). */
  onRetry?(info: RetryInfo): void;
  /** Once a request that had to be retried got an answer (2xx, or a refusal to split on). */
  onRecovered?(): void;
}

export interface RetryInfo {
  /** 1 for the first retry of a request. */
  attempt: number;
  /** HTTP status, `network`, `timeout`, or `dlq`. */
  cause: string;
  delayMs: number;
}

/** A message the shipper gives up on, with why. */
export interface DeadLetter {
  message: Message;
  reason: "decode" | "rejected";
  error: string;
}

interface Shippable {
  message: Message;
  entry: LokiEntry;
  /** UTF-8 bytes of the line. */
  bytes: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

const LEVELS = new Set<string>(LOG_LEVELS);

/**
 * A shortcut past `LogEventSchema` for the usual event: every field a string and the level one
 * of LOG_LEVELS as written (the schema also takes other cases). Whatever it turns down goes
 * through the schema, which says what is wrong. It only accepts what the schema accepts (a test
 * checks both on generated values), and skips the schema's per-field work for the usual line.
 */
export function isPlainLogEvent(x: unknown): x is LogEvent {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false;
  const e = x as Record<string, unknown>;
  return (
    typeof e.id === "string" &&
    typeof e.level === "string" &&
    LEVELS.has(e.level) &&
    typeof e.message === "string" &&
    typeof e.command === "string" &&
    typeof e.source === "string" &&
    typeof e.timestamp === "string" &&
    typeof e.idempotency_key === "string"
  );
}

/** A Kafka message → the Loki entry of its `LogEvent`, or why it is not one. Pure. */
export function decodeLogMessage(message: Message): { ok: true; entry: LokiEntry } | { ok: false; error: string } {
  if (message.value === null) return { ok: false, error: "empty value (tombstone), expected a LogEvent" };
  let json: unknown;
  try {
    json = JSON.parse(utf8.decode(unwrap(message.value)));
  } catch (err) {
    return { ok: false, error: `value is not JSON: ${(err as Error).message}` };
  }
  let event: LogEvent;
  if (isPlainLogEvent(json)) event = json;
  else {
    const parsed = v.safeParse(LogEventSchema, json);
    if (!parsed.success) return { ok: false, error: `value is not a LogEvent: ${v.summarize(parsed.issues).replaceAll("\n", "; ")}` };
    event = parsed.output;
  }
  try {
    return { ok: true, entry: toLokiEntry(event) };
  } catch (err) {
    return { ok: false, error: `value is not a LogEvent: ${(err as Error).message}` };
  }
}

/**
 * Delivers a batch of `app-logs` messages to Loki. Resolves once every message is in Loki or in
 * the DLQ, so the caller can commit the batch's next offsets (`nextOffsets` of the consumer);
 * rejects only when `deps.signal` aborts.
 *
 * Messages are decoded as the pushes fill up, and up to `maxInFlight` pushes are on their way at
 * once: the next push is decoded and compressed while Loki takes the previous one. Each push is
 * retried, split and dead-lettered on its own.
 */
export async function shipBatch(messages: readonly Message[], deps: ShipDeps): Promise<void> {
  const ctx = context(deps);
  const dead: DeadLetter[] = [];
  const maxBytes = deps.maxPushBytes ?? LOG_BATCH.maxPushBytes;
  const maxInFlight = Math.max(1, deps.maxInFlight ?? LOG_BATCH.maxInFlight);
  const pushes = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;

  const launch = async (items: Shippable[]) => {
    while (pushes.size >= maxInFlight) await Promise.race(pushes);
    if (failure) return;
    const push: Promise<void> = deliver(items, ctx).then(
      (refused) => {
        dead.push(...refused);
        pushes.delete(push);
      },
      (error: unknown) => {
        // The first failure (an abort, in practice) ends the batch; the other pushes stop too.
        failure ??= { error };
        ctx.stop.abort(error);
        pushes.delete(push);
      },
    );
    pushes.add(push);
  };

  try {
    let current: Shippable[] = [];
    let size = 0;
    for (const message of messages) {
      const decoded = decodeLogMessage(message);
      if (!decoded.ok) {
        dead.push({ message, reason: "decode", error: decoded.error });
        continue;
      }
      const item = { message, entry: decoded.entry, bytes: Buffer.byteLength(decoded.entry.line) };
      const cost = pushCost(item);
      if (current.length > 0 && size + cost > maxBytes) {
        await launch(current);
        if (failure) break;
        current = [];
        size = 0;
      }
      current.push(item);
      size += cost;
    }
    if (current.length > 0 && !failure) await launch(current);
    await Promise.all(pushes);
    if (failure) throw failure.error;
    if (dead.length > 0) await sendDeadLetters(dead, ctx);
  } finally {
    ctx.release();
  }
  deps.metrics?.batches.inc();
}

/** JSON bytes an entry adds to a push: the line, its timestamp and the punctuation around them. */
function pushCost(item: { entry: LokiEntry; bytes: number }): number {
  return item.bytes + item.entry.ts.length + 8;
}

/**
 * The pushes of a batch: consecutive runs of at most `maxBytes` of JSON (a single larger entry gets
 * a push of its own). `bytes` is the UTF-8 length of the entry's line. `shipBatch` cuts its pushes
 * the same way as it goes; the benchmark's floor uses this.
 */
export function splitPushes<T extends { entry: LokiEntry; bytes: number }>(items: readonly T[], maxBytes: number = LOG_BATCH.maxPushBytes): T[][] {
  const out: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const item of items) {
    const cost = pushCost(item);
    if (current.length > 0 && size + cost > maxBytes) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += cost;
  }
  if (current.length > 0) out.push(current);
  return out;
}

interface Ctx extends ShipDeps {
  sleep: NonNullable<ShipDeps["sleep"]>;
  random: () => number;
  backoffOptions: BackoffOptions;
  /** Aborted by the caller's signal, or by the batch itself when one of its pushes failed. */
  stop: AbortController;
  signal: AbortSignal;
  /** Requests of this batch currently waiting to be retried. */
  retrying: number;
  /** Detaches from the caller's signal. */
  release(): void;
}

function context(deps: ShipDeps): Ctx {
  const stop = new AbortController();
  const onAbort = () => stop.abort(deps.signal!.reason);
  if (deps.signal?.aborted) onAbort();
  else deps.signal?.addEventListener("abort", onAbort, { once: true });
  return {
    ...deps,
    sleep: deps.sleep ?? abortableSleep,
    random: deps.random ?? Math.random,
    backoffOptions: { initialMs: 200, maxMs: 30_000, ...deps.backoff },
    stop,
    signal: stop.signal,
    retrying: 0,
    release: () => deps.signal?.removeEventListener("abort", onAbort),
  };
}

/**
 * Pushes `items`; on a rejection splits them in halves until the refused entries are isolated.
 * Returns the entries Loki refuses on their own.
 */
async function deliver(items: Shippable[], ctx: Ctx): Promise<DeadLetter[]> {
  if (items.length === 0) return [];
  const result = await pushUntilAnswered(items, ctx);
  if (result.kind === "ok") {
    ctx.metrics?.linesShipped.inc(items.length);
    ctx.metrics?.bytesShipped.inc(items.reduce((sum, i) => sum + i.bytes, 0));
    return [];
  }
  if (items.length === 1) return [{ message: items[0]!.message, reason: "rejected", error: `Loki refused the entry: ${result.reason}` }];
  ctx.logger.debug({ lines: items.length, reason: result.reason }, "loki refused part of a push; splitting it");
  const half = Math.ceil(items.length / 2);
  // Sequential on purpose: the halves of a refused push are a rare path, and order keeps logs tidy.
  const first = await deliver(items.slice(0, half), ctx);
  const second = await deliver(items.slice(half), ctx);
  return [...first, ...second];
}

async function pushUntilAnswered(items: Shippable[], ctx: Ctx): Promise<Exclude<PushResult, { kind: "retriable" }>> {
  const entries = items.map((i) => i.entry);
  for (let attempt = 0; ; attempt++) {
    ctx.signal?.throwIfAborted();
    const started = performance.now();
    const result = await ctx.sink.push(entries, { signal: ctx.signal });
    ctx.metrics?.pushDuration.observe({ result: result.kind }, (performance.now() - started) / 1000);
    if (result.kind !== "retriable") {
      if (attempt > 0 && --ctx.retrying === 0) ctx.onRecovered?.();
      return result;
    }
    if (attempt === 0) ctx.retrying++;
    const delayMs = Math.min(
      ctx.backoffOptions.maxMs,
      Math.max(backoffDelay(attempt, ctx.backoffOptions, ctx.random), result.retryAfterMs ?? 0),
    );
    ctx.metrics?.retries.inc({ cause: result.cause });
    ctx.logger.warn(
      { attempt: attempt + 1, delayMs, cause: result.cause, reason: result.reason, lines: items.length },
      "loki push failed; retrying",
    );
    ctx.onRetry?.({ attempt: attempt + 1, cause: result.cause, delayMs });
    await ctx.sleep(delayMs, ctx.signal);
  }
}

async function sendDeadLetters(dead: DeadLetter[], ctx: Ctx): Promise<void> {
  const now = new Date();
  const records = dead.map((d) => deadLetter(d.message, ctx.dlqTopic, { error: d.error, attempts: 1, firstFailure: now, lastFailure: now }));
  for (const d of dead) {
    ctx.logger.warn(
      { topic: d.message.topic, partition: d.message.partition, offset: d.message.offset, reason: d.reason, error: d.error },
      "log message dead-lettered",
    );
  }
  // The batch may only be committed once the DLQ holds these: retry like Loki, without a limit.
  for (let attempt = 0; ; attempt++) {
    ctx.signal?.throwIfAborted();
    try {
      await ctx.dlq.sendAll(records);
      if (attempt > 0 && --ctx.retrying === 0) ctx.onRecovered?.();
      break;
    } catch (err) {
      const delayMs = backoffDelay(attempt, ctx.backoffOptions, ctx.random);
      ctx.logger.error({ err, attempt: attempt + 1, delayMs, topic: ctx.dlqTopic, messages: records.length }, "DLQ write failed; retrying");
      if (attempt === 0) ctx.retrying++;
      ctx.onRetry?.({ attempt: attempt + 1, cause: "dlq", delayMs });
      await ctx.sleep(delayMs, ctx.signal);
    }
  }
  for (const d of dead) ctx.metrics?.deadLetters.inc({ reason: d.reason });
}
