import { afterEach, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SHIPPED_MIGRATIONS } from "../../test/shipped.ts";
import { checkNumbering, loadMigrations, MigrationError, type Migration } from "./migrations.ts";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function sqlDir(files: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kitsune-migrations-"));
  dirs.push(dir);
  await mkdir(join(dir, "migrations"));
  for (const f of files) await writeFile(join(dir, "migrations", f), `-- ${f}\nSELECT 1;\n`);
  return dir;
}

const m = (version: number, name = `m${version}`): Migration => ({ version, name, file: `${version}_${name}.sql`, sql: "" });

describe("loadMigrations", () => {
  test("reads the shipped migrations in order", async () => {
    const list = await loadMigrations("./sql");
    expect(list.map((x) => [x.version, x.name])).toEqual(SHIPPED_MIGRATIONS);
    expect(list[0]!.file).toBe("sql/migrations/0001_init.sql");
    expect(list[0]!.sql).toContain("CREATE TABLE idempotency_log");
  });

  test("orders by number and ignores other files", async () => {
    const dir = await sqlDir(["0002_b.sql", "0001_a.sql", "0003_c.sql"]);
    await writeFile(join(dir, "migrations", "README.md"), "notes");
    expect((await loadMigrations(dir)).map((x) => x.name)).toEqual(["a", "b", "c"]);
  });

  test("refuses a gap", async () => {
    const dir = await sqlDir(["0001_a.sql", "0003_c.sql"]);
    await expect(loadMigrations(dir)).rejects.toThrow("migration numbering has a gap: expected 0002_… before 0003_c.sql");
  });

  test("refuses a duplicate number", async () => {
    const dir = await sqlDir(["0001_a.sql", "0002_b.sql", "0002_other.sql"]);
    await expect(loadMigrations(dir)).rejects.toThrow("duplicate migration number 2: 0002_b.sql and 0002_other.sql");
  });

  test("refuses a list that does not start at 0001", async () => {
    const dir = await sqlDir(["0002_b.sql"]);
    await expect(loadMigrations(dir)).rejects.toThrow(MigrationError);
  });

  test("refuses a badly named file", async () => {
    const dir = await sqlDir(["0001_a.sql", "2_b.sql"]);
    await expect(loadMigrations(dir)).rejects.toThrow("2_b.sql: migration file names must be NNNN_name.sql");
  });
});

describe("checkNumbering", () => {
  test("accepts 1…n in any order, and nothing", () => {
    expect(() => checkNumbering([m(2), m(1), m(3)])).not.toThrow();
    expect(() => checkNumbering([])).not.toThrow();
  });

  test("refuses gaps and duplicates", () => {
    expect(() => checkNumbering([m(1), m(3)])).toThrow(MigrationError);
    expect(() => checkNumbering([m(1), m(1, "again")])).toThrow(MigrationError);
  });
});
