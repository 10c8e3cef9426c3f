/**
 * @module db/migrations
 * Schema migrations: `<SQL_DIR>/migrations/NNNN_name.sql`, numbered from 0001 without gaps.
 * Pending files are applied in order, all in one transaction, under an advisory lock (so several
 * workers starting together apply them once), and recorded in `kitsune_migrations`.
 *
 * Everything happens in the connection's current schema (the first of its `search_path`), so tests
 * can migrate a schema of their own.
 *
 * @example
 * const { applied, current } = await migrate(sql, "./sql");
 */
import { basename, join } from "node:path";
import type { Sql } from "postgres";

export interface Migration {
  version: number;
  name: string;
  file: string;
  sql: string;
}

export class MigrationError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MigrationError";
  }
}

const FILE_NAME = /^(\d{4,})_([A-Za-z0-9_-]+)\.sql$/;
/** First key of `pg_advisory_xact_lock(int, int)`: "KTSN"; the second is a hash of the schema. */
const LOCK_CLASS = 0x4b54534e;

/** Reads and checks `<sqlDir>/migrations/*.sql`: names, no duplicate numbers, no gaps, starting at 1. */
export async function loadMigrations(sqlDir: string): Promise<Migration[]> {
  const dir = join(sqlDir, "migrations");
  const files = [...new Bun.Glob("*.sql").scanSync({ cwd: dir, onlyFiles: true })].sort();
  const migrations: Migration[] = [];
  for (const base of files) {
    const file = join(dir, base);
    const m = FILE_NAME.exec(base);
    if (!m) throw new MigrationError(`${file}: migration file names must be NNNN_name.sql, e.g. 0001_init.sql`);
    migrations.push({ version: Number(m[1]), name: m[2]!, file, sql: await Bun.file(file).text() });
  }
  checkNumbering(migrations);
  return migrations;
}

/** Throws on a duplicate number or a gap; the list must read 1, 2, 3, … */
export function checkNumbering(migrations: Migration[]): void {
  const sorted = [...migrations].sort((a, b) => a.version - b.version);
  sorted.forEach((m, i) => {
    const prev = sorted[i - 1];
    if (prev && prev.version === m.version) {
      throw new MigrationError(`duplicate migration number ${m.version}: ${basename(prev.file)} and ${basename(m.file)}`);
    }
    const expected = i + 1;
    if (m.version !== expected) {
      throw new MigrationError(
        `migration numbering has a gap: expected ${String(expected).padStart(4, "0")}_… before ${basename(m.file)}`,
      );
    }
  });
}

export interface MigrateResult {
  /** What this call applied (empty when the schema was up to date). */
  applied: Migration[];
  /** The newest version now applied. */
  current: number;
}

/**
 * Applies the pending migrations of `<sqlDir>/migrations` (or the given list) in one transaction.
 * Refuses when the database records a version under another name than the file has: two branches
 * numbered a migration alike.
 */
export async function migrate(sql: Sql, source: string | Migration[]): Promise<MigrateResult> {
  const migrations = typeof source === "string" ? await loadMigrations(source) : source;
  if (typeof source !== "string") checkNumbering(migrations);
  const ordered = [...migrations].sort((a, b) => a.version - b.version);

  return sql.begin(async (tx) => {
    // NOTE: a transaction-scoped lock: released by COMMIT/ROLLBACK even if this process dies.
    await tx`SELECT pg_advisory_xact_lock(${LOCK_CLASS}::int, hashtext(current_schema()))`;
    // Checked after taking the lock, so a concurrent first run has finished creating it.
    const [found] = await tx<{ exists: boolean }[]>`SELECT to_regclass('kitsune_migrations') IS NOT NULL AS exists`;
    if (!found?.exists) {
      await tx`CREATE TABLE kitsune_migrations (
        version    int         PRIMARY KEY,
        name       text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`;
    }
    const done = new Map<number, string>();
    for (const row of await tx<{ version: number; name: string }[]>`SELECT version, name FROM kitsune_migrations`) {
      done.set(row.version, row.name);
    }

    const applied: Migration[] = [];
    for (const m of ordered) {
      const recorded = done.get(m.version);
      if (recorded !== undefined) {
        if (recorded !== m.name) {
          throw new MigrationError(`${m.file}: version ${m.version} was applied as "${recorded}", not "${m.name}"`);
        }
        continue;
      }
      try {
        await tx.unsafe(m.sql);
      } catch (err) {
        throw new MigrationError(`${m.file}: ${(err as Error).message}`, { cause: err });
      }
      await tx`INSERT INTO kitsune_migrations (version, name) VALUES (${m.version}, ${m.name})`;
      applied.push(m);
    }
    return { applied, current: Math.max(0, ...done.keys(), ...applied.map((m) => m.version)) };
  }) as Promise<MigrateResult>;
}
