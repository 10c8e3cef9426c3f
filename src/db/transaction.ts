/**
 * @module db/transaction
 * A transaction on one reserved connection, with statements pipelined on it.
 *
 * Written by hand rather than with `sql.begin` for two reasons: `sql.begin` fails the whole
 * transaction as soon as any query in it fails, even one the caller rolled back to a savepoint and
 * handled; and the db-worker sends several statements per event without waiting for each answer.
 */
import type { PendingQuery, ReservedSql, Row, Sql } from "postgres";
import { isConnectionLost } from "./errors.ts";

export type Pending = PendingQuery<Row[]>;

const ignore = () => {};

/** Starts a query now (postgres.js queries are lazy) without waiting for it; a rejection surfaces when awaited. */
export function send(query: Pending): Pending {
  query.execute().catch(ignore); // handled where it is awaited; this only avoids an "unhandled rejection"
  return query;
}

/**
 * Awaits queries in the order they were sent and returns their results; throws the first error.
 * NOTE: in order on purpose: when the connection drops, postgres.js rejects the queries already
 * written but never settles those still queued (porsager/postgres#1186), so awaiting them all at once
 * could hang.
 */
export async function inOrder(queries: Pending[]): Promise<Row[][]> {
  const results: Row[][] = [];
  for (const q of queries) results.push(await q);
  return results;
}

/**
 * Runs `work` between BEGIN and COMMIT on a reserved connection. On an error it rolls back and
 * rethrows. When the client lost the connection it neither writes to it nor releases it: postgres.js
 * has already taken it back, and a write would crash the process (porsager/postgres#1208).
 *
 * NOTE: after a lost connection, postgres.js 3.4.9 fails the first query of the next session with
 * the old session's FATAL error (57P01) although that query ran. That lands here as `reserve()` or
 * BEGIN failing with a PostgresError; the ROLLBACK below closes whatever the BEGIN opened before the
 * connection goes back. The pool may still have lost that slot for good, which is why
 * `RetriableBatchError.connectionLost` tells the caller to replace the pool.
 */
export async function withTransaction<T>(sql: Sql, work: (tx: ReservedSql) => Promise<T>): Promise<T> {
  const tx = await sql.reserve();
  let usable = true;
  try {
    await tx.unsafe("BEGIN");
    const result = await work(tx);
    await tx.unsafe("COMMIT");
    return result;
  } catch (err) {
    usable = !isConnectionLost(err);
    if (usable) {
      await tx.unsafe("ROLLBACK").catch((rollbackErr: unknown) => {
        usable = !isConnectionLost(rollbackErr);
      });
    }
    throw err;
  } finally {
    if (usable) tx.release();
  }
}
