// Needs PostgreSQL (POSTGRES_DSN, default the local kitsune database); works in a schema of its own.
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { withSchema, type TestSchema } from "../../test/pg.ts";
import { SHIPPED_MIGRATIONS } from "../../test/shipped.ts";
import { migrate, MigrationError, type Migration } from "./migrations.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

const schemas: TestSchema[] = [];
afterEach(async () => {
  await Promise.all(schemas.splice(0).map((s) => s.drop()));
});
async function schema(): Promise<TestSchema> {
  const s = await withSchema();
  schemas.push(s);
  return s;
}

const m = (version: number, name: string, sql: string): Migration => ({ version, name, sql, file: `${String(version).padStart(4, "0")}_${name}.sql` });

describe("migrate", () => {
  test("applies the shipped migrations once, in the connection's schema", async () => {
    const { sql, schema: name } = await schema();
    const first = await migrate(sql, "./sql");
    const versions = SHIPPED_MIGRATIONS.map(([version]) => version);
    expect(first.applied.map((x) => x.version)).toEqual(versions);
    expect(first.current).toBe(versions.at(-1)!);

    const again = await migrate(sql, "./sql");
    expect(again).toEqual({ applied: [], current: versions.at(-1)! });

    const rows = await sql`SELECT version, name FROM kitsune_migrations ORDER BY version`;
    expect(rows.map((r) => [r.version, r.name])).toEqual(SHIPPED_MIGRATIONS);
    const tables = await sql`SELECT table_name FROM information_schema.tables WHERE table_schema = ${name} ORDER BY 1`;
    expect(tables.map((t) => t.table_name)).toEqual(["idempotency_duplicates", "idempotency_log", "kitsune_migrations", "users"]);
    const [index] = await sql`SELECT indexdef FROM pg_indexes WHERE schemaname = ${name} AND indexname = 'idempotency_log_processed_at'`;
    expect(index?.indexdef).toContain("USING brin (processed_at)");
    const [byId] = await sql`SELECT indexdef FROM pg_indexes WHERE schemaname = ${name} AND indexname = 'idempotency_log_event_id'`;
    expect(byId?.indexdef).toContain("USING hash (event_id)");
  });

  test("applies only what is new", async () => {
    const { sql } = await schema();
    await migrate(sql, [m(1, "a", "CREATE TABLE a (x int)")]);
    const next = await migrate(sql, [m(1, "a", "CREATE TABLE a (x int)"), m(2, "b", "CREATE TABLE b (y int)")]);
    expect(next.applied.map((x) => x.name)).toEqual(["b"]);
    expect(next.current).toBe(2);
  });

  test("two processes starting together apply each migration once", async () => {
    const s = await schema();
    const one = s.connect({ max: 1 });
    const two = s.connect({ max: 1 });
    // pg_sleep keeps the first holder inside its transaction while the other waits for the lock.
    const slow = [m(1, "init", "SELECT pg_sleep(0.3); CREATE TABLE t (x int)"), m(2, "more", "INSERT INTO t VALUES (1)")];
    const [a, b] = await Promise.all([migrate(one, slow), migrate(two, slow)]);
    expect([a.applied.length, b.applied.length].sort()).toEqual([0, 2]);
    expect(a.current).toBe(2);
    expect(b.current).toBe(2);
    expect((await s.sql`SELECT count(*)::int AS n FROM t`)[0]!.n).toBe(1);
  });

  test("all pending migrations commit together or not at all", async () => {
    const { sql } = await schema();
    const err = await migrate(sql, [m(1, "a", "CREATE TABLE a (x int)"), m(2, "b", "CREATE TABLE broken (")]).catch((e) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect(err.message).toStartWith("0002_b.sql: syntax error");
    expect((await sql`SELECT to_regclass('a') AS a, to_regclass('kitsune_migrations') AS k`)[0]).toEqual({ a: null, k: null });
  });

  test("refuses gaps and duplicates before touching the database", async () => {
    const { sql } = await schema();
    await expect(migrate(sql, [m(1, "a", "SELECT 1"), m(3, "c", "SELECT 1")])).rejects.toThrow("gap");
    await expect(migrate(sql, [m(1, "a", "SELECT 1"), m(1, "b", "SELECT 1")])).rejects.toThrow("duplicate migration number 1");
    expect((await sql`SELECT to_regclass('kitsune_migrations') AS k`)[0]!.k).toBeNull();
  });

  test("refuses a version recorded under another name", async () => {
    const { sql } = await schema();
    await migrate(sql, [m(1, "a", "SELECT 1")]);
    await expect(migrate(sql, [m(1, "other", "SELECT 1")])).rejects.toThrow('version 1 was applied as "a", not "other"');
  });
});
