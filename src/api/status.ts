/**
 * @module api/status
 * `GET /commands/:id`: what became of a command accepted earlier, by the id its 202 returned.
 * The answer comes from the db-worker's `idempotency_log` in PostgreSQL: `applied` or `failed`
 * with the row count or error once the worker has the command, `pending` until then. PostgreSQL is
 * optional for the api: when it does not answer, this route answers 503 and nothing else changes.
 *
 * @example
 * ```ts
 * const status = statusHandler({ statuses: pgCommandStatuses(sql), authorize, metrics, logger, retryAfterSeconds: 1 });
 * app.get("/commands/:id", (c) => status(c.req.raw, c.req.param("id"), requestId));
 * // → 200 { "id": "0190c0de-…", "status": "applied", "rows_affected": 1, … }
 * ```
 */
import type { Sql } from "postgres";
import type { CommandStatus } from "../contracts.ts";
import type { Logger } from "../logger.ts";
import { jsonResponse } from "./execute.ts";
import type { ApiMetrics } from "./metrics.ts";
import { ApiError } from "./problems.ts";
import { withTimeout } from "../timeout.ts";

/** The port: a command's status by its id (`idempotency_log.event_id`). */
export interface CommandStatuses {
  /** Rejects when PostgreSQL cannot answer. */
  find(id: string): Promise<CommandStatus>;
}

export interface CommandsDeps {
  /** Undefined when the api runs without PostgreSQL: the route then answers 503. */
  statuses?: CommandStatuses;
  /** Throws the 401 `ApiError` unless the `Authorization` header carries a valid token. */
  authorize: (header: string | null) => void;
  /** Longest wait for PostgreSQL before answering 503 (default 2000). */
  timeoutMs?: number;
  retryAfterSeconds: number;
  metrics: ApiMetrics;
  logger: Logger;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const FOUND = Object.freeze({ outcome: "found" });
const PENDING = Object.freeze({ outcome: "pending" });
const UNAVAILABLE = Object.freeze({ outcome: "unavailable" });

/** Answers `GET /commands/:id` for the id in the path. */
export function statusHandler(deps: CommandsDeps): (req: Request, id: string, requestId: string) => Promise<Response> {
  const timeoutMs = deps.timeoutMs ?? 2000;
  const unavailable = (detail: string, cause?: unknown) =>
    new ApiError("database_unavailable", detail, { headers: { "retry-after": String(deps.retryAfterSeconds) }, cause });

  return async (req, id, requestId) => {
    deps.authorize(req.headers.get("authorization"));
    if (!UUID.test(id)) throw new ApiError("not_found", "no command has this id: command ids are UUIDs, as in the 202 answer of POST /execute");
    if (!deps.statuses) {
      deps.metrics.statusLookups.inc(UNAVAILABLE);
      throw unavailable("command status needs PostgreSQL, which this api process has no connection to");
    }
    let status: CommandStatus;
    try {
      status = await withTimeout(deps.statuses.find(id.toLowerCase()), timeoutMs, `PostgreSQL did not answer within ${timeoutMs} ms`);
    } catch (err) {
      deps.metrics.statusLookups.inc(UNAVAILABLE);
      deps.logger.warn({ err, request_id: requestId, id }, "command status lookup failed");
      throw unavailable("PostgreSQL did not answer the status lookup; retry later", err);
    }
    deps.metrics.statusLookups.inc(status.status === "pending" ? PENDING : FOUND);
    return jsonResponse(status, 200, requestId);
  };
}

interface LogRow {
  key: string;
  event_id: string;
  command: string | null;
  version: string | null;
  status: "applied" | "failed";
  rows_affected: number | null;
  error: { sqlstate?: string; message: string } | null;
  processed_at: Date;
}

/**
 * `CommandStatuses` over the db-worker's `idempotency_log`. The table is the db-worker's (its
 * migrations create it); the api only reads it. A missing table (worker not migrated yet) rejects
 * like a connection failure: 503.
 */
export function pgCommandStatuses(sql: Sql): CommandStatuses {
  return {
    async find(id) {
      const rows = await sql<LogRow[]>`
        SELECT key, event_id, command, version, status, rows_affected, error, processed_at
        FROM idempotency_log WHERE event_id = ${id} LIMIT 1`;
      const row = rows[0];
      if (!row) {
        const [dup] = await sql<{ key: string; original_id: string | null; processed_at: Date }[]>`
          SELECT d.key, l.event_id AS original_id, d.processed_at
          FROM idempotency_duplicates d LEFT JOIN idempotency_log l ON l.key = d.key WHERE d.event_id = ${id} LIMIT 1`;
        if (!dup) return { id, status: "pending" };
        return { id, status: "duplicate", idempotency_key: dup.key, original_id: dup.original_id, processed_at: new Date(dup.processed_at).toISOString() };
      }
      return {
        id: row.event_id,
        status: row.status,
        idempotency_key: row.key,
        command: row.command,
        version: row.version,
        rows_affected: row.rows_affected,
        error: row.error,
        processed_at: new Date(row.processed_at).toISOString(),
      };
    },
  };
}
