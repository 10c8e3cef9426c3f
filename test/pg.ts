/**
 * @module test/pg
 * Integration-test harness for PostgreSQL: every test file works in a schema of its own (random
 * name), reached through the `search_path` connection option, and drops it afterwards.
 *
 * @example
 * let db: TestSchema;
 * beforeAll(async () => { db = await withSchema(); await migrate(db.sql, "./sql"); });
 * afterAll(() => db.drop());
 */
import postgres, { type Options, type Sql } from "postgres";

/** `POSTGRES_DSN` as the services use it, else the local development database. */
export const TEST_DSN = process.env.POSTGRES_DSN ?? "postgres://kitsune:kitsune@127.0.0.1:5432/kitsune";

export interface TestSchema {
  /** The schema's name, e.g. `test_3f9a1c2b`. */
  schema: string;
  /** A pool whose connections all use this schema. */
  sql: Sql;
  /** Another, independent pool on the same schema (e.g. to race two "processes"); closed by `drop()`. */
  connect(options?: Options<{}>): Sql;
  /** Closes every pool and drops the schema with everything in it. */
  drop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Creates a fresh schema and a postgres.js pool bound to it. */
export async function withSchema(options: Options<{}> = {}): Promise<TestSchema> {
  const schema = `test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(TEST_DSN, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE SCHEMA ${schema}`);
  } finally {
    await admin.end();
  }

  const pools: Sql[] = [];
  const connect = (extra: Options<{}> = {}) => {
    const sql = postgres(TEST_DSN, {
      onnotice: () => {},
      ...options,
      ...extra,
      connection: { ...options.connection, ...extra.connection, search_path: schema },
    });
    pools.push(sql);
    return sql;
  };

  let dropped: Promise<void> | undefined;
  const drop = () =>
    (dropped ??= (async () => {
      // NOTE: a short timeout: after a lost connection postgres.js can leave a query that never settles (porsager/postgres#1186).
      await Promise.allSettled(pools.map((p) => p.end({ timeout: 1 })));
      const admin = postgres(TEST_DSN, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await admin.end();
      }
    })());

  return { schema, sql: connect(), connect, drop, [Symbol.asyncDispose]: drop };
}
