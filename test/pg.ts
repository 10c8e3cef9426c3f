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

/**
 * A test-only command that waits, inside its batch's transaction, until the test opens a `Gate`:
 * it holds the batch (and its idempotency claims) open for exactly as long as the test needs.
 */
export const HOLD_COMMAND = {
  file: "hold.v1.sql",
  text: "-- command: hold\n-- version: 1\n-- description: Wait for the test's gate.\nSELECT pg_advisory_xact_lock(:lock::bigint)",
};

export interface Gate {
  /** The payload of a `hold` command that waits for this gate. */
  hold: { lock: number };
  /** Sessions waiting for a lock of any kind (the gate's, a row's, a transaction's), by backend pid. */
  waiting(pid: number): Promise<boolean>;
  /** True once some session waits at this gate. */
  held(): Promise<boolean>;
  open(): Promise<void>;
}

/** Closes a gate on its own connection of `db`; `open()` lets every `hold` through. */
export async function closedGate(db: TestSchema): Promise<Gate> {
  const lock = 1 + Math.floor(Math.random() * 2 ** 30);
  const conn = db.connect({ max: 1 });
  await conn`SELECT pg_advisory_lock(${lock}::bigint)`;
  const locks = async (where: string, arg: number) =>
    ((await conn.unsafe(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND ${where}`, [arg]))[0]!.n as number) > 0;
  return {
    hold: { lock },
    waiting: (pid) => locks("pid = $1", pid),
    // NOTE: a bigint advisory key below 2^32 shows as objid with classid 0 and objsubid 1.
    held: () => locks("locktype = 'advisory' AND classid = 0 AND objsubid = 1 AND objid = $1::oid", lock),
    open: async () => {
      await conn`SELECT pg_advisory_unlock(${lock}::bigint)`;
    },
  };
}

/** The backend pid of a one-connection pool. */
export async function backendPid(sql: Sql): Promise<number> {
  const [{ pid }] = (await sql`SELECT pg_backend_pid() AS pid`) as unknown as [{ pid: number }];
  return pid;
}
