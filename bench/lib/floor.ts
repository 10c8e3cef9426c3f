/**
 * @module bench/lib/floor
 * The benchmark's floor: the same users inserted by postgres.js straight into PostgreSQL, no Kafka,
 * no registry, no idempotency log. What the db-worker adds is measured against this.
 *
 * @example
 * const { ms } = await insertUsersDirect(sql, rows, 500);
 */
import type { Sql } from "postgres";

export interface UserRow {
  name: string;
  email: string;
}

export interface FloorResult {
  rows: number;
  transactions: number;
  ms: number;
}

/**
 * Inserts `rows` in transactions of `batchSize` rows.
 * - `"statements"` (default): one `INSERT … VALUES ($1, $2)` per row, pipelined, as the worker runs
 *   create_user: the floor for per-command work.
 * - `"multirow"`: one multi-row `INSERT` per transaction: the floor for raw insert throughput.
 */
export async function insertUsersDirect(
  sql: Sql,
  rows: UserRow[],
  batchSize: number,
  { mode = "statements" }: { mode?: "statements" | "multirow" } = {},
): Promise<FloorResult> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  const started = performance.now();
  let transactions = 0;
  for (let i = 0; i < rows.length; i += batchSize) {
    const chunk = rows.slice(i, i + batchSize);
    await sql.begin((tx) =>
      mode === "multirow"
        ? [tx`INSERT INTO users ${tx(chunk, "name", "email")}`]
        : chunk.map((r) => tx`INSERT INTO users (name, email) VALUES (${r.name}, ${r.email})`),
    );
    transactions++;
  }
  return { rows: rows.length, transactions, ms: performance.now() - started };
}
