/**
 * @module bench/lib/db
 * What the database says happened: commit latency from its own timestamps, and the chaos
 * accounting (applied, duplicate effects, failed) of the commands the api accepted.
 *
 * Commit latency = `idempotency_log.processed_at` − the timestamp inside the command's UUIDv7 id.
 * The id is made when the api receives the request (millisecond precision), and `processed_at`
 * defaults to `now()`, the start of the db-worker's batch transaction — so the figure is "request
 * received → batch transaction began", short of the true commit by the batch's own duration
 * (`kitsune_db_batch_duration_seconds`, a few ms to tens of ms). `track_commit_timestamp` would
 * give the commit itself, but it needs a server restart and is off on the shared server.
 */
import type { Sql } from "postgres";
import { batchRate } from "./rate.ts";

/** Milliseconds since 1970 in a UUIDv7 (its first 48 bits), in SQL. */
const UUID7_MS = `('x' || substr(replace(event_id, '-', ''), 1, 12))::bit(48)::bigint`;

/** Commit latencies (ms) of the applied commands whose idempotency key starts with `<prefix>-`. */
export async function commitLatencies(sql: Sql, prefix: string): Promise<Float64Array> {
  const rows = await sql.unsafe<{ ms: number }[]>(
    `SELECT (extract(epoch FROM processed_at) * 1000 - ${UUID7_MS})::float8 AS ms
       FROM idempotency_log WHERE key LIKE $1 AND status = 'applied'`,
    [`${prefix}-%`],
  );
  return Float64Array.from(rows, (r) => r.ms);
}

export interface AppliedRate {
  /** Every applied row of the phase. */
  rows: number;
  /** The rows in the window: all but the last batch's. */
  counted: number;
  seconds: number;
  perSecond: number;
}

/**
 * Rows applied per second by the db-worker for a phase, from its transactions' `processed_at`
 * (each batch's start): `batchRate` — the last batch's rows are left out, since its duration is not known.
 */
export async function appliedRate(sql: Sql, prefix: string): Promise<AppliedRate> {
  const batches = await sql.unsafe<{ rows: number; at: number }[]>(
    `SELECT count(*)::int AS rows, (extract(epoch FROM processed_at) * 1000)::float8 AS at
       FROM idempotency_log WHERE key LIKE $1 AND status = 'applied' GROUP BY processed_at`,
    [`${prefix}-%`],
  );
  const r = batchRate(batches);
  return { rows: batches.reduce((n, b) => n + b.rows, 0), counted: r.count, seconds: r.seconds, perSecond: r.perSecond };
}

/** `processed_at` of the newest row with keys `<prefix>-…`, in ms since 1970 (0 when none). */
export async function lastProcessedMs(sql: Sql, prefix: string): Promise<number> {
  const [r] = await sql.unsafe<{ t: number | null }[]>(
    `SELECT (extract(epoch FROM max(processed_at)) * 1000)::float8 AS t FROM idempotency_log WHERE key LIKE $1`,
    [`${prefix}-%`],
  );
  return r?.t ?? 0;
}

/** Processed (applied or failed) rows with keys `<prefix>-…`. */
export async function processedCount(sql: Sql, prefix: string): Promise<number> {
  const [r] = await sql.unsafe<{ n: number }[]>(`SELECT count(*)::int AS n FROM idempotency_log WHERE key LIKE $1`, [`${prefix}-%`]);
  return r?.n ?? 0;
}

export interface DrainOptions {
  /** Done once this many are processed and `settled()` holds. */
  expected: number;
  count: () => Promise<number>;
  /** The consumers have caught up (checked twice, `recheckMs` apart, since their statistics lag). */
  settled?: () => Promise<boolean>;
  recheckMs?: number;
  /** Otherwise done once the count has not moved for this long and `settled()` holds. */
  stableMs?: number;
  /** Give up after this long. */
  timeoutMs?: number;
  log?: (line: string) => void;
}

/**
 * Waits until the system has drained: `expected` reached (or nothing moves any more) and the
 * consumers say they have caught up, so that late redeliveries are in before anything is counted.
 */
export async function drain({
  expected,
  count,
  settled = async () => true,
  recheckMs = 3000,
  stableMs = 15_000,
  timeoutMs = 180_000,
  log,
}: DrainOptions): Promise<{ count: number; ms: number; complete: boolean; settled: boolean }> {
  const started = Date.now();
  let last = -1;
  let lastChange = Date.now();
  let lastLog = 0;
  let settledSince = 0;
  for (;;) {
    const n = await count().catch(() => last);
    const now = Date.now();
    if (n !== last) {
      last = n;
      lastChange = now;
    }
    const done = n >= expected || now - lastChange >= stableMs;
    if (done) {
      if (await settled().catch(() => false)) {
        settledSince ||= now;
        if (now - settledSince >= recheckMs) return { count: n, ms: now - started, complete: n >= expected, settled: true };
      } else settledSince = 0;
    }
    if (now - lastLog > 5000) {
      log?.(`  draining: ${n.toLocaleString("en-US")} of ${expected.toLocaleString("en-US")} processed${done ? ", waiting for the consumers to catch up" : ""}`);
      lastLog = now;
    }
    if (now - started > timeoutMs) return { count: n, ms: now - started, complete: n >= expected, settled: false };
    await Bun.sleep(250);
  }
}

export interface Accounting {
  /** Accepted ids with an `applied` row in idempotency_log (joined on event_id). */
  applied: number;
  /** Accepted ids with a `failed` row (the db-worker dead-lettered them). */
  failed: number;
  /** Accepted ids with no row at all. */
  missing: number;
  /** Extra effect rows: Σ (rows per email − 1) over the run's effect table. */
  duplicateEffects: number;
  /** Emails with more than one effect row. */
  duplicateEmails: number;
  /** Effect rows / idempotency rows for commands that were not accepted (503 or no answer, but the write landed). */
  appliedNotAccepted: number;
  /** Idempotency rows whose event_id is not the id the api answered with for that key. */
  idMismatches: number;
}

/**
 * Loads the accepted (id, key) pairs into `bench_accepted` and counts what became of them.
 * `effectTable` holds one row per effect with an `email` column (`chaos_effects` or `users`).
 */
export async function account(
  sql: Sql,
  accepted: { id: string; key: string }[],
  prefix: string,
  effectTable = "chaos_effects",
): Promise<Accounting> {
  await sql.unsafe(`DROP TABLE IF EXISTS bench_accepted; CREATE TABLE bench_accepted (id text PRIMARY KEY, key text NOT NULL)`);
  for (let i = 0; i < accepted.length; i += 5000) {
    const chunk = accepted.slice(i, i + 5000);
    await sql`INSERT INTO bench_accepted (id, key) SELECT * FROM unnest(${chunk.map((a) => a.id)}::text[], ${chunk.map((a) => a.key)}::text[])`;
  }
  const [r] = await sql.unsafe<Record<keyof Accounting, number>[]>(
    `SELECT
       (SELECT count(*) FROM bench_accepted a JOIN idempotency_log l ON l.event_id = a.id AND l.status = 'applied')::int AS applied,
       (SELECT count(*) FROM bench_accepted a JOIN idempotency_log l ON l.event_id = a.id AND l.status = 'failed')::int AS failed,
       (SELECT count(*) FROM bench_accepted a WHERE NOT EXISTS (SELECT 1 FROM idempotency_log l WHERE l.event_id = a.id))::int AS missing,
       (SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM ${effectTable} WHERE email LIKE $1 GROUP BY email HAVING count(*) > 1) d)::int AS "duplicateEffects",
       (SELECT count(*) FROM (SELECT 1 FROM ${effectTable} WHERE email LIKE $1 GROUP BY email HAVING count(*) > 1) d)::int AS "duplicateEmails",
       (SELECT count(*) FROM idempotency_log l WHERE l.key LIKE $1 AND NOT EXISTS (SELECT 1 FROM bench_accepted a WHERE a.key = l.key))::int AS "appliedNotAccepted",
       (SELECT count(*) FROM bench_accepted a JOIN idempotency_log l ON l.key = a.key WHERE l.event_id <> a.id)::int AS "idMismatches"`,
    [`${prefix}-%`],
  );
  return r as Accounting;
}
