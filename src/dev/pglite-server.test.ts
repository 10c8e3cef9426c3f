/**
 * The PGlite wire-protocol server: connections stay apart although PGlite is one backend.
 * (Against @electric-sql/pglite-socket 0.2.17 the first test fails with `portal "" does not exist`.)
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";
import { startPgliteServer, type PgliteServer } from "./pglite-server.ts";

setDefaultTimeout(120_000);

let db: PGlite;
let server: PgliteServer;
beforeAll(async () => {
  db = await PGlite.create("memory://");
  server = await startPgliteServer(db);
  await db.exec("CREATE TABLE k (id int PRIMARY KEY, v text)");
});
afterAll(async () => {
  await server?.stop();
  await db?.close();
});

test("pipelined transactions on one pool and queries on another: every answer is its own", async () => {
  const a = postgres(server.url, { max: 4, max_pipeline: 1000, onnotice: () => {} } as postgres.Options<{}>);
  const b = postgres(server.url, { max: 4, onnotice: () => {} });
  try {
    const wrong: string[] = [];
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < 100; i++) {
      runs.push(
        a.begin(async (tx) => {
          await Promise.all(Array.from({ length: 20 }, (_, j) => tx`INSERT INTO k VALUES (${i * 100 + j}, ${`v${j}`})`));
        }),
      );
      runs.push(b`SELECT ${`s${i}`}::text AS s, count(*) FROM k`.then(([r]) => void (r!.s !== `s${i}` && wrong.push(r!.s))));
      runs.push(b.unsafe("SELECT $1::int AS x", [i]).then(([r]) => void (r!.x !== i && wrong.push(String(r!.x)))));
    }
    await Promise.all(runs);
    expect(wrong).toEqual([]);
    expect((await b`SELECT count(*)::int AS n FROM k`)[0]!.n).toBe(2000);
  } finally {
    await Promise.all([a.end(), b.end()]);
  }
});

test("a connection that goes away inside a transaction is rolled back, and the others go on", async () => {
  const a = postgres(server.url, { max: 1, onnotice: () => {} });
  const b = postgres(server.url, { max: 1, onnotice: () => {} });
  try {
    const reserved = await a.reserve();
    await reserved`BEGIN`;
    await reserved`INSERT INTO k VALUES (-1, 'uncommitted')`;
    // b waits while a's transaction is open…
    const waiting = b`SELECT count(*)::int AS n FROM k WHERE id = -1`;
    await a.end({ timeout: 0 }); // …and a's connection closes without COMMIT.
    expect((await waiting)[0]!.n).toBe(0);
  } finally {
    await b.end();
  }
});
