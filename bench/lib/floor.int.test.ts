// Needs PostgreSQL (POSTGRES_DSN, default the local kitsune database); works in a schema of its own.
import { afterAll, beforeAll, beforeEach, expect, setDefaultTimeout, test } from "bun:test";
import { withSchema, type TestSchema } from "../../test/pg.ts";
import { insertUsersDirect } from "./floor.ts";
import { migrate } from "../../src/db/migrations.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

let db: TestSchema;
beforeAll(async () => {
  db = await withSchema();
  await migrate(db.sql, "./sql");
});
afterAll(() => db?.drop());
beforeEach(async () => {
  await db.sql`TRUNCATE users`;
});

const rows = Array.from({ length: 250 }, (_, i) => ({ name: `user ${i}`, email: `user${i}@example.com` }));

test.each(["statements", "multirow"] as const)("inserts every row in transactions of the batch size (%s)", async (mode) => {
  const result = await insertUsersDirect(db.sql, rows, 100, { mode });
  expect(result).toEqual({ rows: 250, transactions: 3, ms: expect.any(Number) });
  const [{ n }] = (await db.sql`SELECT count(*)::int AS n FROM users`) as unknown as [{ n: number }];
  expect(n).toBe(250);
});

test("a failing batch rolls back only that transaction", async () => {
  const clash = [...rows.slice(0, 150), rows[0]!]; // the duplicate lands in the second batch
  await expect(insertUsersDirect(db.sql, clash, 100)).rejects.toThrow("users_email_key");
  const [{ n }] = (await db.sql`SELECT count(*)::int AS n FROM users`) as unknown as [{ n: number }];
  expect(n).toBe(100);
});

test("refuses a batch size that is not a positive integer", async () => {
  await expect(insertUsersDirect(db.sql, rows, 0)).rejects.toThrow(RangeError);
});
