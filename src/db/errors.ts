/**
 * @module db/errors
 * How the db-worker tells a command that can never succeed (dead-letter it) from a database that
 * cannot take it right now (retry the batch).
 */

export type SqlErrorClass = "permanent" | "transient";

/**
 * SQLSTATE classes that come from the command and its data, so retrying cannot help:
 * 21 cardinality, 22 data exception, 23 integrity constraint, 2F SQL routine, 42 syntax or access
 * rule, 44 WITH CHECK OPTION, 54 program limit (e.g. a value too large for an index), P0 PL/pgSQL
 * `RAISE`, 0A feature not supported.
 */
const PERMANENT_CLASSES = new Set(["21", "22", "23", "2F", "42", "44", "54", "P0", "0A"]);

/** SQLSTATE codes the synthetic failures use (no SQL is run for them). */
export const SYNTHETIC_SQLSTATE = {
  /** `undefined_object`: no such command/version in the registry. */
  unknownCommand: "42704",
  /** `invalid_parameter_value`: a parameter is missing from the payload or has the wrong type, or the idempotency key is unusable. */
  invalidPayload: "22023",
} as const;

/** The SQLSTATE of a PostgreSQL error (postgres.js `PostgresError`), or undefined for any other error. */
export function sqlstateOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const { name, code } = err as { name?: unknown; code?: unknown };
  return name === "PostgresError" && typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * "permanent" for errors caused by the command or its data (dead-letter it), "transient" for
 * everything else: connection loss (08, and postgres.js `CONNECTION_*`), serialization failures and
 * deadlocks (40001, 40P01), resources (53), shutdown or cancel (57), lock timeouts (55P03), internal
 * errors (XX). NOTE: unknown errors count as transient on purpose: a retry that keeps failing holds
 * the partition up and shows in lag, while a wrong dead-letter silently loses a good command.
 */
export function classifySqlError(err: unknown): SqlErrorClass {
  const sqlstate = sqlstateOf(err);
  return sqlstate !== undefined && PERMANENT_CLASSES.has(sqlstate.slice(0, 2)) ? "permanent" : "transient";
}

/** Error codes postgres.js and the socket layer give a connection that is gone or never came up. */
const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED", "CONNECTION_DESTROYED", "CONNECTION_ENDED", "CONNECT_TIMEOUT",
  "ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN",
]);

/**
 * The client has lost the connection: postgres.js (or the socket) failed the query itself. A server
 * that ends the session (FATAL 57P01 on shutdown or terminate) shows up this way too: the socket
 * closes before the error's ReadyForQuery, so postgres.js reports CONNECTION_CLOSED.
 * NOTE: postgres.js 3.4.9 has already taken such a connection back; writing to it or releasing it
 * again crashes the process from a timer (porsager/postgres#1208). A PostgresError, even a FATAL
 * one, is not this: the socket is still there (a FATAL error arriving on a live session is one left
 * over from the session before, a postgres.js bug noted in `withTransaction`).
 */
export function isConnectionLost(err: unknown): boolean {
  if (typeof err !== "object" || err === null || sqlstateOf(err) !== undefined) return false;
  const { code } = err as { code?: unknown };
  return typeof code === "string" && CONNECTION_CODES.has(code);
}

/**
 * A connection-level failure from either side: the client lost the socket, or the server ended
 * the session (57P01-57P03 shutdown/terminate, class 08). Used to recognise the errors postgres.js
 * 3.4.9 can throw outside any query after a connection closed (porsager/postgres#1208).
 */
export function isConnectionError(err: unknown): boolean {
  if (isConnectionLost(err)) return true;
  const sqlstate = sqlstateOf(err);
  return sqlstate !== undefined && (/^57P0[1-3]$/.test(sqlstate) || sqlstate.startsWith("08"));
}

/**
 * A batch was not applied (nothing committed) because of a transient error; retry the same batch.
 * When `connectionLost` is set, replace the pool before retrying: after a lost connection
 * postgres.js 3.4.9 can keep a broken one (a stale 57P01 on the next session, a pool slot that never
 * comes back: porsager/postgres#1208, #1215), and a fresh pool is the reliable way out.
 */
export class RetriableBatchError extends Error {
  readonly sqlstate: string | undefined;
  readonly connectionLost: boolean;
  constructor(override readonly cause: unknown) {
    super(`batch not applied, retry: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = "RetriableBatchError";
    this.sqlstate = sqlstateOf(cause);
    this.connectionLost = isConnectionLost(cause) || /^(08|57P0[1-3])/.test(this.sqlstate ?? "");
  }
}
