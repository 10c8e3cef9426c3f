/**
 * @module db/event-pipeline
 * Runs resolved command events inside the batch transaction, pipelined, two ways.
 *
 * **Together** (first, for every batch): behind one `SAVEPOINT kitsune_batch`, one multi-row
 * `INSERT … ON CONFLICT DO NOTHING` claims every key not processed before, and the statements of
 * those events follow at once (then one `UPDATE` corrects the row counts that are not the one
 * assumed, see `ASSUMED_ROWS`). A clean batch costs one query per event, as if the
 * statements were run by hand. When an event fails for good, the batch savepoint is rolled back:
 * the events before it run together again, and the rest one by one.
 *
 * **One by one**: the statements of up to `PIPELINE_WINDOW` events are sent before the first answer
 * is read, each event in its own savepoint:
 *
 *   INSERT INTO idempotency_log (key, …) VALUES (…)      -- claim the key; 23505 if it was processed
 *   <the command's statement, parameters bound>
 *   RELEASE SAVEPOINT kitsune_event; SAVEPOINT kitsune_event   -- keep it, open the next event's
 *
 * (one `SAVEPOINT kitsune_event` opens the run; COMMIT releases the last one). Savepoint and
 * release travel as one query because each query has a client-side cost that dominates here; that
 * cost, three queries per event, is why this is the fallback rather than the rule. The window
 * shrinks to one event after a failure and doubles back while events apply.
 *
 * When event k fails, PostgreSQL refuses everything after it in the window (25P02, transaction
 * aborted) until `ROLLBACK TO SAVEPOINT kitsune_event` undoes event k alone: events before k stay,
 * event k is recorded as a duplicate or a failure, and sending resumes at k + 1.
 */
import type { ReservedSql, Row } from "postgres";
import type { CommandDef, CommandEvent } from "../contracts.ts";
import { classifySqlError, isConnectionLost, sqlstateOf } from "./errors.ts";
import { inOrder, send, type Pending } from "./transaction.ts";

export interface SqlFailure {
  sqlstate: string;
  message: string;
}

/** The `idempotency_log` row of a key processed before. */
export interface StoredResult {
  event_id: string;
  status: "applied" | "failed";
  rows_affected: number | null;
  error: SqlFailure | null;
  processed_at: Date;
}

/** An event resolved against the registry, its parameters bound. */
export interface RunnableEvent {
  event: CommandEvent;
  def: CommandDef;
  values: (string | null)[];
}

export type Decision =
  | { status: "applied"; rows: number }
  | { status: "duplicate"; original: StoredResult | null }
  | { status: "failed"; error: SqlFailure; cause: unknown };

/**
 * Most events sent before reading answers. After a failure the window restarts at one event and
 * doubles while events apply: the statements sent after a failed event are refused and re-sent.
 */
export const PIPELINE_WINDOW = 64;

/**
 * The row count a claim records before the statement has run: one, as for most commands, which
 * address one row by key. Only the events whose count differs are corrected (`RECORD_ROWS`), since
 * updating every claimed row cost as much as the commands' own statements.
 */
const ASSUMED_ROWS = 1;

/** PostgreSQL's `unknown` type: the parameter's type is inferred from the statement, as for a literal. */
const UNKNOWN_OID = 705;
const SAVEPOINT = "SAVEPOINT kitsune_event";
const ROLLBACK_TO = "ROLLBACK TO SAVEPOINT kitsune_event";
/** Keeps the event just run and opens a savepoint for the next one. */
const NEXT = "RELEASE SAVEPOINT kitsune_event; SAVEPOINT kitsune_event";
// NOTE: no ON CONFLICT: a taken key must fail the claim, so that PostgreSQL refuses the command's
// statement pipelined right behind it. The insert also waits for a concurrent, uncommitted claim
// of the same key and fails only if that one commits.
const CLAIM = `INSERT INTO idempotency_log (key, event_id, command, version, status, rows_affected)
VALUES ($1, $2, $3, $4, 'applied', ${ASSUMED_ROWS})`;
const RECORD_FAILURE = `INSERT INTO idempotency_log (key, event_id, command, version, status, rows_affected, error)
VALUES ($1, $2, $3, $4, 'failed', 0, $5) ON CONFLICT (key) DO NOTHING RETURNING 1 AS recorded`;
const RECORD_ROWS = `UPDATE idempotency_log AS l SET rows_affected = v.rows
FROM jsonb_to_recordset($1::jsonb) AS v(key text, rows int) WHERE l.key = v.key`;
const STORED = "SELECT event_id, status, rows_affected, error, processed_at FROM idempotency_log WHERE key = $1";
const STORED_MANY = `SELECT key, event_id, status, rows_affected, error, processed_at FROM idempotency_log
WHERE key IN (SELECT jsonb_array_elements_text($1::jsonb))`;
const BATCH_SAVEPOINT = "SAVEPOINT kitsune_batch";
const BATCH_RELEASE = "RELEASE SAVEPOINT kitsune_batch";
const BATCH_ROLLBACK = "ROLLBACK TO SAVEPOINT kitsune_batch; RELEASE SAVEPOINT kitsune_batch";
// Claims the keys not processed before and returns those it claimed; the others are taken (usually
// none). Like CLAIM it waits for a concurrent, uncommitted claim of a key, and finds the key taken
// only if that one commits. NOTE: in key order, so two batches claiming the same keys wait for each
// other instead of deadlocking. NOTE: the taken keys are worked out here, not with `EXCEPT` in SQL,
// which cost PostgreSQL ~1.7 µs a key more than reading the claimed keys costs the client. The
// order only has to be the same for every worker: byte order ("C") sorts in half the time of a
// locale's (measured with C.UTF-8; other locales cost more).
const CLAIM_MANY_COUNTED = `INSERT INTO idempotency_log (key, event_id, command, version, status, rows_affected)
SELECT key, event_id, command, version, 'applied', ${ASSUMED_ROWS}
FROM jsonb_to_recordset($1::jsonb) AS v(key text, event_id text, command text, version text)
ORDER BY key COLLATE "C" ON CONFLICT (key) DO NOTHING`;
/** The same, naming the keys it claimed. */
const CLAIM_MANY = `${CLAIM_MANY_COUNTED} RETURNING key`;
/** Tries with the taken keys guessed wrong before a batch goes one by one. */
const GUESSES = 3;

interface InFlight {
  claim: Pending;
  effect: Pending;
  next: Pending;
}

type Settled = { kind: "applied"; rows: number } | { kind: "taken" } | { kind: "failed"; cause: unknown };

/**
 * Runs `events` in the open transaction `tx` and decides each one. Throws on anything that must
 * fail the whole batch: a transient or connection error, or a failure of the bookkeeping itself.
 * `sent` is called once the statements of a clean batch are on their way (the caller may do other
 * work while PostgreSQL runs them).
 */
export async function runEvents(tx: ReservedSql, events: RunnableEvent[], sent: () => void = () => {}): Promise<Decision[]> {
  // A key twice in the batch: the second must see the first's claim, which only one by one does.
  const distinct = new Set(events.map((e) => e.event.metadata.idempotency_key)).size === events.length;
  if (!distinct) return lookUpThenOneByOne(tx, events);
  const all = await runTogether(tx, events, sent);
  if (all.ok) return all.decisions;
  const k = all.failedAt;
  if (k > 0) {
    // Events before k went through a moment ago; together again they will (unless something changed meanwhile).
    const head = await runTogether(tx, events.slice(0, k));
    if (head.ok) return [...head.decisions, ...(await lookUpThenOneByOne(tx, events.slice(k)))];
  }
  return lookUpThenOneByOne(tx, events);
}

type Together = { ok: true; decisions: Decision[] } | { ok: false; failedAt: number };

/**
 * Claims every key not processed before and runs the statements of those events, all sent at
 * once behind one savepoint; then corrects the row counts. On a permanent failure of event k it
 * rolls back to the savepoint, leaving the transaction as it found it, and answers `failedAt: k`.
 * Throws what fails the whole batch.
 */
async function runTogether(tx: ReservedSql, events: RunnableEvent[], sent: () => void = () => {}): Promise<Together> {
  const keys = events.map(({ event, def }) => ({
    key: event.metadata.idempotency_key,
    event_id: event.id,
    command: def.command,
    version: def.version,
  }));
  // NOTE: which keys are taken is guessed (none at first, as in a steady stream) rather than asked
  // first, so the statements travel right behind the claim instead of a round trip later. A wrong
  // guess is rolled back and tried again with the keys found taken.
  let guess = new Set<string>();
  for (let i = 0; i < GUESSES; i++) {
    const tried = await tryTogether(tx, events, keys, guess, sent);
    if (!("taken" in tried)) return tried;
    guess = tried.taken;
  }
  return { ok: false, failedAt: 0 }; // keys keep being claimed under us: one by one settles it
}

async function tryTogether(
  tx: ReservedSql,
  events: RunnableEvent[],
  keys: { key: string }[],
  guess: Set<string>,
  sent: () => void,
): Promise<Together | { taken: Set<string> }> {
  send(tx.unsafe(BATCH_SAVEPOINT)); // its error, if any, fails the claim
  // NOTE: guessing none taken, the claim's row count tells whether the guess was right; reading
  // back 2,000 claimed keys cost more than the lookup a wrong guess then needs (see `takenKeys`).
  const counted = guess.size === 0;
  const claim = send(tx.unsafe(counted ? CLAIM_MANY_COUNTED : CLAIM_MANY, [tx.json(keys)], { prepare: true }));
  const stored = guess.size > 0 ? send(tx.unsafe(STORED_MANY, [tx.json([...guess])], { prepare: true })) : undefined;
  const effects = events.map((e, i) => (guess.has(keys[i]!.key) ? undefined : sendEffect(tx, e)));
  sent();
  // NOTE: after a failure PostgreSQL refuses the statements sent behind it (25P02); `send` has
  // handled their rejections, and a rollback queues behind them.

  const claimResult = await claim;
  if (counted) {
    if (claimResult.count !== keys.length) {
      await tx.unsafe(BATCH_ROLLBACK);
      return { taken: await takenKeys(tx, keys) };
    }
  } else {
    const claimed = new Set(claimResult.map((row) => row.key as string));
    const taken = new Set<string>();
    for (const { key } of keys) if (!claimed.has(key)) taken.add(key);
    if (taken.size !== guess.size || [...taken].some((k) => !guess.has(k))) {
      await tx.unsafe(BATCH_ROLLBACK);
      return { taken };
    }
  }
  const originals = new Map<string, StoredResult>();
  if (stored) for (const row of await stored) originals.set(row.key, toStored([row])!);
  const decisions: Decision[] = [];
  const recount: { key: string; rows: number }[] = [];
  for (let i = 0; i < effects.length; i++) {
    const effect = effects[i];
    const { key } = keys[i]!;
    if (!effect) {
      decisions.push({ status: "duplicate", original: originals.get(key) ?? null });
      continue;
    }
    try {
      const result: Row[] & { count?: number } = await effect;
      const rows = result.count ?? 0;
      decisions.push({ status: "applied", rows });
      if (rows !== ASSUMED_ROWS) recount.push({ key, rows });
    } catch (err) {
      if (isConnectionLost(err) || classifySqlError(err) === "transient") throw err;
      await tx.unsafe(BATCH_ROLLBACK);
      return { ok: false, failedAt: i };
    }
  }
  const record = recount.length > 0 ? [send(tx.unsafe(RECORD_ROWS, [tx.json(recount)], { prepare: true }))] : [];
  await inOrder([...record, send(tx.unsafe(BATCH_RELEASE))]);
  return { ok: true, decisions };
}

/** Those of `keys` processed before (committed, or claimed by a transaction that committed meanwhile). */
async function takenKeys(tx: ReservedSql, keys: { key: string }[]): Promise<Set<string>> {
  const rows = await tx.unsafe(STORED_MANY, [tx.json(keys.map((k) => k.key))], { prepare: true });
  return new Set(rows.map((row) => row.key as string));
}

/**
 * The fallback: keys processed before are looked up at once (a batch replayed after a crash is all
 * duplicates, and each would otherwise cost a failed claim and a rollback), the rest go one by one.
 * Keys claimed meanwhile by another worker, or twice in this batch, are caught by each claim.
 */
async function lookUpThenOneByOne(tx: ReservedSql, events: RunnableEvent[]): Promise<Decision[]> {
  const keys = [...new Set(events.map((e) => e.event.metadata.idempotency_key))];
  const seen = new Map<string, StoredResult>();
  for (const row of await tx.unsafe(STORED_MANY, [tx.json(keys)], { prepare: true })) seen.set(row.key, toStored([row])!);

  const fresh = events.filter((e) => !seen.has(e.event.metadata.idempotency_key));
  const decided = fresh.length > 0 ? await runOneByOne(tx, fresh) : [];
  let i = 0;
  return events.map((e) => {
    const original = seen.get(e.event.metadata.idempotency_key);
    return original ? { status: "duplicate", original } : decided[i++]!;
  });
}

/** Each event in its own savepoint, its key claimed before its statement runs (see the module comment). */
async function runOneByOne(tx: ReservedSql, events: RunnableEvent[]): Promise<Decision[]> {
  const decisions: Decision[] = [];
  const counted: { key: string; rows: number }[] = [];
  let next = 0;
  let size = PIPELINE_WINDOW;
  send(tx.unsafe(SAVEPOINT)); // its error, if any, fails the first claim
  while (next < events.length) {
    const window = events.slice(next, next + size);
    const inFlight = window.map((e) => sendEvent(tx, e));
    let k = 0;
    let settled: Settled | undefined;
    // In order: after a failure the rest of the window is refused, and a lost connection may leave
    // later queries unsettled (see `inOrder`).
    for (; k < inFlight.length; k++) {
      settled = await settle(inFlight[k]!);
      if (settled.kind !== "applied") break;
      decisions.push({ status: "applied", rows: settled.rows });
      if (settled.rows !== ASSUMED_ROWS) counted.push({ key: window[k]!.event.metadata.idempotency_key, rows: settled.rows });
    }
    if (k < inFlight.length) {
      decisions.push(await recover(tx, window[k]!, settled as Exclude<Settled, { kind: "applied" }>));
      // Failures come in runs (a bad producer, a replayed partition): go one by one, then double
      // again while events apply, so a run of failures does not re-send a whole window each time.
      size = 1;
      next += k + 1;
    } else {
      size = Math.min(size * 2, PIPELINE_WINDOW);
      next += k;
    }
  }
  if (counted.length > 0) await tx.unsafe(RECORD_ROWS, [tx.json(counted)], { prepare: true });
  if (decisions.length !== events.length) throw new Error(`bug: ${decisions.length} decisions for ${events.length} events`);
  return decisions;
}

function keyOf(event: CommandEvent, def: CommandDef): string[] {
  return [event.metadata.idempotency_key, event.id, def.command, def.version];
}

function sendEvent(tx: ReservedSql, e: RunnableEvent): InFlight {
  return {
    claim: send(tx.unsafe(CLAIM, keyOf(e.event, e.def), { prepare: true })),
    effect: sendEffect(tx, e),
    next: send(tx.unsafe(NEXT)),
  };
}

/** The command's own statement. */
function sendEffect(tx: ReservedSql, { def, values }: RunnableEvent): Pending {
  // NOTE: typed "unknown" rather than left to postgres.js, which would re-serialize each text value
  // by the type PostgreSQL infers ("true" for a boolean becomes 'f', JSON gets encoded twice, dates
  // go through JavaScript's Date). As "unknown", PostgreSQL reads the text exactly as a literal.
  return send(tx.unsafe(def.sql, values.map((v) => tx.typed(v, UNKNOWN_OID)), { prepare: true }));
}

/** Reads one event's answers in order; throws what fails the whole batch. */
async function settle({ claim, effect, next }: InFlight): Promise<Settled> {
  try {
    await claim;
  } catch (err) {
    if (sqlstateOf(err) === "23505") return { kind: "taken" };
    throw err;
  }
  let result: Row[] & { count?: number };
  try {
    result = await effect;
  } catch (err) {
    if (isConnectionLost(err) || classifySqlError(err) === "transient") throw err;
    return { kind: "failed", cause: err };
  }
  await next;
  return { kind: "applied", rows: result.count ?? 0 };
}

/** Undoes the event that failed (and so unblocks the transaction), then records what became of it. */
async function recover(
  tx: ReservedSql,
  { event, def }: RunnableEvent,
  settled: Exclude<Settled, { kind: "applied" }>,
): Promise<Decision> {
  const key = event.metadata.idempotency_key;
  if (settled.kind === "failed") {
    const error = { sqlstate: sqlstateOf(settled.cause)!, message: (settled.cause as Error).message };
    const [, recorded] = await inOrder([
      send(tx.unsafe(ROLLBACK_TO)),
      send(tx.unsafe(RECORD_FAILURE, [...keyOf(event, def), tx.json(error)], { prepare: true })),
      send(tx.unsafe(NEXT)),
    ]);
    if (recorded!.length > 0) return { status: "failed", error, cause: settled.cause };
    // Another worker committed this key between our rollback and our insert: it is theirs.
    const [stored] = await inOrder([send(tx.unsafe(STORED, [key], { prepare: true }))]);
    return { status: "duplicate", original: toStored(stored!) };
  }
  const [, stored] = await inOrder([
    send(tx.unsafe(ROLLBACK_TO)),
    send(tx.unsafe(STORED, [key], { prepare: true })),
    send(tx.unsafe(NEXT)),
  ]);
  return { status: "duplicate", original: toStored(stored!) };
}

/** `null` when the row is gone (pruned since). */
function toStored(rows: Row[]): StoredResult | null {
  const row = rows[0];
  if (!row) return null;
  const { event_id, status, rows_affected, error, processed_at } = row;
  return { event_id, status, rows_affected, error, processed_at };
}
