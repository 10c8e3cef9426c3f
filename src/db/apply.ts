/**
 * @module db/apply
 * The db-worker's core, without Kafka: apply a batch of `CommandEvent`s to PostgreSQL exactly once
 * in effect, and say what became of each.
 *
 * One transaction per batch, one savepoint per event (see `event-pipeline.ts`):
 * - the idempotency key was processed before → no effect, outcome `duplicate` with what was stored;
 * - the statement failed permanently (SQLSTATE class 22, 23, 42, …) → that event alone is rolled
 *   back and recorded as `failed`; the caller dead-letters it, later events still apply;
 * - anything transient (connection, deadlock, serialization, shutdown, …) → nothing is committed
 *   and `applyBatch` throws `RetriableBatchError`: retry the same batch.
 *
 * Events that cannot run at all (unknown command/version, missing or mistyped parameter) become
 * `failed` outcomes without touching the database.
 *
 * @example
 * const outcomes = await applyBatch(sql, registry, events);
 * for (const o of outcomes) {
 *   await publish(o.result);                 // db-results
 *   if (o.result.status === "failed") await deadLetter(o.event, o.result.error);
 * }
 */
import type { ReservedSql, Sql } from "postgres";
import type { CommandDef, CommandEvent, CommandLookup, CommandResult } from "../contracts.ts";
import { classifySqlError, isConnectionLost, RetriableBatchError, sqlstateOf, SYNTHETIC_SQLSTATE } from "./errors.ts";
import { runEvents, type Decision, type RunnableEvent, type SqlFailure, type StoredResult } from "./event-pipeline.ts";
import { bindParams } from "./payload.ts";
import { withTransaction } from "./transaction.ts";

export type { SqlFailure, StoredResult } from "./event-pipeline.ts";

export interface Outcome {
  event: CommandEvent;
  /** The registry entry the event resolved to; absent for an unknown command/version. */
  def?: CommandDef;
  /** What to publish on `db-results`. */
  result: CommandResult;
  /**
   * For `duplicate`: what the first delivery recorded, so a caller that crashed after committing but
   * before publishing can publish (or dead-letter) it now. `null` when the row is gone (pruned).
   */
  original?: StoredResult | null;
  /** For `failed`: the error itself (a postgres.js `PostgresError` with detail, hint, … or a synthetic `Error`). */
  cause?: unknown;
}

type Plan = ({ kind: "run" } & RunnableEvent) | { kind: "refuse"; event: CommandEvent; def?: CommandDef; error: SqlFailure };

/**
 * Applies `events` in one transaction and returns one outcome per event, in order.
 * Throws `RetriableBatchError` when nothing was committed for a transient reason; any other error
 * (a bug, a schema without `idempotency_log`) is thrown as it is. `sent`: see `runEvents`.
 */
export async function applyBatch(sql: Sql, registry: CommandLookup, events: CommandEvent[], sent?: () => void): Promise<Outcome[]> {
  const plans = events.map((event) => planEvent(registry, event));
  const runnable = plans.filter((p): p is Extract<Plan, { kind: "run" }> => p.kind === "run");
  let decisions: Decision[] = [];
  if (runnable.length > 0) {
    try {
      decisions = await withTransaction(sql, async (tx) => {
        const decided = await runEvents(tx, runnable, sent);
        await recordDuplicates(tx, runnable, decided);
        return decided;
      });
    } catch (err) {
      if (isRetriable(err)) throw new RetriableBatchError(err);
      throw err;
    }
  }
  const finished_at = new Date().toISOString();
  // The runnable plans' decisions come in their order.
  let next = 0;
  return plans.map((plan) => toOutcome(plan, plan.kind === "run" ? decisions[next++] : undefined, finished_at));
}

/** Longest idempotency key taken, as the api's; a longer one could not be indexed (> 2704 bytes). */
const MAX_KEY_LENGTH = 256;

/** Resolves the command and binds its parameters; no I/O. */
function planEvent(registry: CommandLookup, event: CommandEvent): Plan {
  const key = event.metadata.idempotency_key;
  // Checked here: the key goes into idempotency_log, and a key PostgreSQL refuses would fail
  // the bookkeeping, and with it the whole batch, on every retry.
  if (key.length > MAX_KEY_LENGTH || key.includes("\0") || event.id.includes("\0")) {
    const message = `unusable idempotency key or event id (at most ${MAX_KEY_LENGTH} characters, no NUL)`;
    return { kind: "refuse", event, error: { sqlstate: SYNTHETIC_SQLSTATE.invalidPayload, message } };
  }
  const def = registry.get(event.command, event.version);
  if (!def) {
    const message = `unknown command ${event.command} version ${event.version}`;
    return { kind: "refuse", event, error: { sqlstate: SYNTHETIC_SQLSTATE.unknownCommand, message } };
  }
  let bound: ReturnType<typeof bindParams>;
  try {
    bound = bindParams(def, event.payload);
  } catch (err) {
    // e.g. a json parameter nested too deeply for JSON.stringify: refuse the event, do not retry it forever.
    const message = `invalid payload for ${def.command} version ${def.version}: ${(err as Error).message}`;
    return { kind: "refuse", event, def, error: { sqlstate: SYNTHETIC_SQLSTATE.invalidPayload, message } };
  }
  if (!bound.ok) {
    const message = `invalid payload for ${def.command} version ${def.version}: ${bound.issues.map((i) => i.message).join("; ")}`;
    return { kind: "refuse", event, def, error: { sqlstate: SYNTHETIC_SQLSTATE.invalidPayload, message } };
  }
  return { kind: "run", event, def, values: bound.values };
}

const RECORD_DUPLICATES = `INSERT INTO idempotency_duplicates (event_id, key)
SELECT event_id, key FROM jsonb_to_recordset($1::jsonb) AS v(event_id text, key text)
ON CONFLICT (event_id) DO NOTHING`;

/**
 * Records the ids of the events found to be duplicates (`idempotency_duplicates`), so that
 * GET /commands/<their id> can say so. A redelivered duplicate keeps its first row.
 */
async function recordDuplicates(tx: ReservedSql, events: RunnableEvent[], decisions: Decision[]): Promise<void> {
  const rows: { event_id: string; key: string }[] = [];
  for (let i = 0; i < events.length; i++) {
    const d = decisions[i];
    const { event } = events[i]!;
    // The same event delivered again is found under its own id already.
    if (d?.status === "duplicate" && d.original?.event_id !== event.id) rows.push({ event_id: event.id, key: event.metadata.idempotency_key });
  }
  if (rows.length === 0) return;
  await tx.unsafe(RECORD_DUPLICATES, [tx.json(rows)], { prepare: true });
}

function isRetriable(err: unknown): boolean {
  return isConnectionLost(err) || (sqlstateOf(err) !== undefined && classifySqlError(err) === "transient");
}

function toOutcome(plan: Plan, decision: Decision | undefined, finished_at: string): Outcome {
  const { event, def } = plan;
  if (plan.kind === "refuse") return { event, def, result: toResult(event, "failed", 0, finished_at, plan.error), cause: new Error(plan.error.message) };
  const d = decision!;
  switch (d.status) {
    case "applied":
      return { event, def, result: toResult(event, "applied", d.rows, finished_at) };
    case "duplicate":
      return { event, def, result: toResult(event, "duplicate", 0, finished_at), original: d.original };
    case "failed":
      return { event, def, result: toResult(event, "failed", 0, finished_at, d.error), cause: d.cause };
  }
}

/** The event's `CommandResult`, fields in DESIGN.md's order. */
function toResult(event: CommandEvent, status: CommandResult["status"], rows_affected: number, finished_at: string, error?: SqlFailure): CommandResult {
  const { id, command, version } = event;
  const { idempotency_key } = event.metadata;
  return error
    ? { id, idempotency_key, command, version, status, rows_affected, error, finished_at }
    : { id, idempotency_key, command, version, status, rows_affected, finished_at };
}
