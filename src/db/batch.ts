/**
 * @module db/batch
 * The db-worker's decisions about a batch, without I/O of their own: decode each message into a
 * `CommandEvent` (what does not parse becomes a dead letter at once), apply the events through
 * the `apply` port (src/db/apply.ts in production), and turn each outcome into its result message
 * and, for a failed command, a dead letter. Tests feed hand-built messages and a fake `apply`.
 */
import type { Counter } from "prom-client";
import * as v from "valibot";
import { CommandEventSchema, type CommandEvent } from "../contracts.ts";
import type { Message, OutgoingMessage } from "../kafka/types.ts";
import { deadLetter } from "../pipeline/dead-letter.ts";
import { unwrap, type ValueSchema } from "../schema/wire.ts";
import type { Outcome } from "./apply.ts";
import { resultMessage } from "./results.ts";

// NOTE: fatal: bytes that are not UTF-8 are dead-lettered rather than applied with U+FFFD in place.
const decoder = new TextDecoder("utf-8", { fatal: true });

/** What one batch produced: the messages to publish before its offsets may be committed. */
export interface BatchOutcome {
  outcomes: Outcome[];
  publish: OutgoingMessage[];
  deadLettered: number;
}

export interface BatchDeps {
  /** `sent`: called once PostgreSQL has the batch's statements (maybe never, e.g. on a failure). */
  apply(events: CommandEvent[], sent?: () => void): Promise<Outcome[]>;
  topics: { results: string; dlq: string };
  /** The db-results schema id (`SCHEMA_REGISTRY_URL`); results carry none without it. */
  resultSchema?: ValueSchema;
  now?: () => Date;
}

/** A batch decoded: its events (and the messages they came from) and the dead letters of what did not parse. */
export interface DecodedBatch {
  messages: Message[];
  events: CommandEvent[];
  sources: Message[];
  deadLetters: OutgoingMessage[];
}

/**
 * Decodes a batch, without I/O: events that do not parse become dead letters at once. NOTE: the
 * db-worker decodes the next batch while PostgreSQL runs the one before (`bench db-worker` shows its share).
 */
export function decodeBatch(messages: Message[], dlqTopic: string, now = new Date()): DecodedBatch {
  const events: CommandEvent[] = [];
  const sources: Message[] = [];
  const deadLetters: OutgoingMessage[] = [];
  for (const m of messages) {
    const parsed = parseEvent(m);
    if (parsed.ok) {
      events.push(parsed.event);
      sources.push(m);
    } else {
      deadLetters.push(deadLetter(m, dlqTopic, { error: parsed.error, attempts: 1, firstFailure: now, lastFailure: now }));
    }
  }
  return { messages, events, sources, deadLetters };
}

/**
 * Applies a decoded batch; each event gets a result (and a dead letter when it failed for good).
 * Throws `RetriableBatchError` when nothing was committed and the batch must be retried.
 */
export async function applyDecoded(decoded: DecodedBatch, deps: BatchDeps, sent?: () => void): Promise<BatchOutcome> {
  const now = deps.now?.() ?? new Date();
  const { events, sources } = decoded;
  const publish = [...decoded.deadLetters];
  let deadLettered = publish.length;
  const outcomes = events.length ? await deps.apply(events, sent) : [];
  outcomes.forEach((o, i) => {
    const source = sources[i]!;
    publish.push(resultMessage(o.result, source.key, deps.topics.results, deps.resultSchema));
    // NOTE: a duplicate of a failed command is dead-lettered again: the first delivery may have
    // crashed after committing its `failed` row but before its dead letter reached the broker.
    const failed = o.result.status === "failed" || (o.result.status === "duplicate" && o.original?.status === "failed");
    if (failed) {
      const error = o.result.error ?? o.original?.error ?? { sqlstate: "", message: "failed" };
      publish.push(
        deadLetter(source, deps.topics.dlq, {
          error: error.message,
          sqlstate: error.sqlstate || undefined,
          attempts: 1,
          firstFailure: now,
          lastFailure: now,
        }),
      );
      deadLettered++;
    }
  });
  return { outcomes, publish, deadLettered };
}

/**
 * A shortcut past `CommandEventSchema` for the usual event: the fields the schema names, of the
 * types it asks, and a payload with none of the keys valibot's `record` leaves out. It returns what
 * the schema would (those fields, in its order), or undefined: the schema then says what is wrong.
 * A test checks both on generated values; it skips the schema's per-field work on the hot path.
 */
export function plainCommandEvent(x: unknown): CommandEvent | undefined {
  if (typeof x !== "object" || x === null) return undefined;
  const { id, command, version, payload, metadata } = x as Record<string, unknown>;
  if (typeof id !== "string" || typeof command !== "string" || typeof version !== "string") return undefined;
  if (typeof payload !== "object" || payload === null || Array.isArray(payload) || Object.getPrototypeOf(payload) !== Object.prototype) return undefined;
  if (Object.hasOwn(payload, "__proto__") || Object.hasOwn(payload, "constructor") || Object.hasOwn(payload, "prototype")) return undefined;
  if (typeof metadata !== "object" || metadata === null) return undefined;
  const { idempotency_key, timestamp, source } = metadata as Record<string, unknown>;
  if (typeof idempotency_key !== "string" || idempotency_key === "" || typeof timestamp !== "string" || typeof source !== "string") return undefined;
  return { id, command, version, payload: payload as Record<string, unknown>, metadata: { idempotency_key, timestamp, source } };
}

function parseEvent(m: Message): { ok: true; event: CommandEvent } | { ok: false; error: string } {
  if (!m.value) return { ok: false, error: "empty message value" };
  let text: string;
  try {
    text = decoder.decode(unwrap(m.value));
  } catch {
    return { ok: false, error: "not UTF-8 text" };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not JSON: ${(err as Error).message}` };
  }
  const plain = plainCommandEvent(json);
  if (plain) return { ok: true, event: plain };
  const r = v.safeParse(CommandEventSchema, json);
  if (!r.success) {
    const issues = r.issues.map((i) => `${i.path?.map((p) => String(p.key)).join(".") || "(root)"}: ${i.message}`);
    return { ok: false, error: `not a CommandEvent: ${issues.join("; ")}` };
  }
  return { ok: true, event: r.output };
}

/** Adds a batch's outcomes to the per-command, per-status counter. */
export function countOutcomes(outcomes: Outcome[], counter: Counter<"command" | "status">): void {
  // Runs of the same command and status (the usual batch is one run) count as one increment.
  let run: { command: string; status: string; n: number } | undefined;
  for (const { result } of outcomes) {
    if (run && run.command === result.command && run.status === result.status) {
      run.n++;
      continue;
    }
    if (run) counter.inc({ command: run.command, status: run.status }, run.n);
    run = { command: result.command, status: result.status, n: 1 };
  }
  if (run) counter.inc({ command: run.command, status: run.status }, run.n);
}
