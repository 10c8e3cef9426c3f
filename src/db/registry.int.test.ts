// Needs PostgreSQL (POSTGRES_DSN, default the local kitsune database); works in a schema of its own.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { withSchema, type TestSchema } from "../../test/pg.ts";
import { migrate } from "./migrations.ts";
import { createRegistry, loadRegistry, parseCommandFile, RegistryError, verifyRegistry } from "./registry.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

let db: TestSchema;
beforeAll(async () => {
  db = await withSchema();
});
afterAll(() => db?.drop());

const command = (file: string, statement: string) => {
  const [, name, version] = /^(\w+)\.v(\d+)\.sql$/.exec(file.split("/").pop()!)!;
  return parseCommandFile(file, `-- command: ${name}\n-- version: ${version}\n-- description: Test.\n${statement}`);
};

describe("verifyRegistry", () => {
  test("before migrations no statement can be prepared, and each file is named", async () => {
    const err = await verifyRegistry(await loadRegistry("./sql"), db.sql).catch((e) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).problems.map((p) => p.file)).toEqual([
      "sql/commands/create_user.v1.sql",
      "sql/commands/create_user.v2.sql",
      "sql/commands/delete_user.v1.sql",
      "sql/commands/update_user.v1.sql",
    ]);
    expect((err as RegistryError).problems[0]!.reason).toBe(
      'PostgreSQL cannot prepare the statement: relation "users" does not exist (SQLSTATE 42P01)',
    );
  });

  test("after migrations the shipped registry prepares", async () => {
    await migrate(db.sql, "./sql");
    await verifyRegistry(await loadRegistry("./sql"), db.sql);
  });

  test("a statement PostgreSQL cannot prepare stops start-up, naming the file and the reason", async () => {
    await migrate(db.sql, "./sql");
    const registry = createRegistry([
      ...(await loadRegistry("./sql")).list(),
      command("sql/commands/rename_user.v1.sql", "UPDATE users SET nmae = :name WHERE email = :email"),
      command("sql/commands/count_users.v1.sql", "SELECT count(*) FROM users WHERE age > :age::int"),
      command("sql/commands/typo.v1.sql", "SELEC 1"),
      command("sql/commands/ambiguous.v1.sql", "SELECT :x + :y"),
    ]);
    const err = (await verifyRegistry(registry, db.sql).catch((e) => e)) as RegistryError;
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.problems).toEqual([
      { file: "sql/commands/ambiguous.v1.sql", reason: expect.stringMatching(/^PostgreSQL cannot prepare the statement: operator is not unique: unknown \+ unknown \(SQLSTATE 42725\)$/) },
      { file: "sql/commands/count_users.v1.sql", reason: 'PostgreSQL cannot prepare the statement: column "age" does not exist (SQLSTATE 42703)' },
      { file: "sql/commands/rename_user.v1.sql", reason: 'PostgreSQL cannot prepare the statement: column "nmae" of relation "users" does not exist (SQLSTATE 42703)' },
      { file: "sql/commands/typo.v1.sql", reason: 'PostgreSQL cannot prepare the statement: syntax error at or near "SELEC" (SQLSTATE 42601)' },
    ]);
    expect(err.message).toContain("sql/commands/rename_user.v1.sql: PostgreSQL cannot prepare the statement");
  });

  test("a lost database is not blamed on a statement", async () => {
    const gone = db.connect({ port: 1, connect_timeout: 1 } as never);
    const err = await verifyRegistry(await loadRegistry("./sql"), gone).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(RegistryError);
    expect((err as { code?: string }).code).toBe("ECONNREFUSED");
  });
});
