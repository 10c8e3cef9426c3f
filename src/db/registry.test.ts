import { afterEach, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { SAMPLE_COMMANDS } from "../../test/fakes.ts";
import type { CommandDef } from "../contracts.ts";
import { createRegistry, loadRegistry, parseCommandFile, RegistryError } from "./registry.ts";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A temporary SQL_DIR with the given files under `commands/`. */
async function sqlDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kitsune-registry-"));
  dirs.push(dir);
  await mkdir(join(dir, "commands"));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, "commands", name)), { recursive: true });
    await writeFile(join(dir, "commands", name), text);
  }
  return dir;
}

const header = (command: string, version: string, extra = "") =>
  `-- command: ${command}\n-- version: ${version}\n${extra}-- description: Test command.\n`;

const CREATE_USER = `${header("create_user", "1", "-- key: email\n")}INSERT INTO users (name, email) VALUES (:name, :email);\n`;

async function refusal(files: Record<string, string>): Promise<RegistryError> {
  const dir = await sqlDir(files);
  const err = await loadRegistry(dir).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RegistryError);
  return err as RegistryError;
}

describe("loadRegistry", () => {
  test("loads the shipped sql/ directory", async () => {
    const registry = await loadRegistry("./sql");
    expect(registry.list().map((d) => `${d.command}.v${d.version}`)).toEqual([
      "create_user.v1",
      "create_user.v2",
      "delete_user.v1",
      "update_user.v1",
    ]);
    // The api's tests stand on this fake being the shipped file exactly.
    expect(registry.get("create_user", "1")).toEqual(SAMPLE_COMMANDS[0]!);
    expect(registry.get("create_user")?.version).toBe("2");
    expect(registry.get("create_user", "3")).toBeUndefined();
    expect(registry.get("nope")).toBeUndefined();
    expect(registry.get("delete_user")?.params).toEqual([{ name: "email", type: "scalar" }]);
  });

  test("newest version compares numerically, and subdirectories are read", async () => {
    const dir = await sqlDir({
      "a.v2.sql": `${header("a", "2")}SELECT :x`,
      "more/a.v10.sql": `${header("a", "10")}SELECT :x`,
    });
    const registry = await loadRegistry(dir);
    expect(registry.get("a")?.version).toBe("10");
    expect(registry.get("a")?.file).toBe(join(dir, "commands", "more", "a.v10.sql"));
  });

  test("ignores files that are not .sql", async () => {
    const dir = await sqlDir({ "create_user.v1.sql": CREATE_USER, "README.md": "# commands" });
    expect((await loadRegistry(dir)).list()).toHaveLength(1);
  });

  test("an empty directory is an empty registry", async () => {
    expect((await loadRegistry(await sqlDir({}))).list()).toEqual([]);
  });

  test("plain comments in the header and before the statement are fine", async () => {
    const dir = await sqlDir({
      "a.v1.sql": `-- Some words about a.\n${header("a", "1")}-- NOTE: why it is written so.\n\nSELECT :x -- trailing\n`,
    });
    expect((await loadRegistry(dir)).get("a")?.sql).toBe("SELECT $1 -- trailing");
  });
});

describe("loadRegistry refuses", () => {
  test("a duplicate command/version", async () => {
    const err = await refusal({ "create_user.v1.sql": CREATE_USER, "users/create_user.v1.sql": CREATE_USER });
    expect(err.problems).toEqual([
      {
        file: expect.stringContaining(join("users", "create_user.v1.sql")),
        reason: expect.stringContaining("duplicate of create_user version 1 in"),
      },
    ]);
  });

  test("a file without a header", async () => {
    const err = await refusal({ "create_user.v1.sql": "INSERT INTO users (name) VALUES (:name);\n" });
    expect(err.problems[0]!.file).toEndWith("create_user.v1.sql");
    expect(err.problems[0]!.reason).toBe('missing header "-- command:", "-- version:", "-- description:"');
  });

  test("a header without a description", async () => {
    const err = await refusal({ "a.v1.sql": "-- command: a\n-- version: 1\nSELECT 1" });
    expect(err.problems[0]!.reason).toBe('missing header "-- description:"');
  });

  test("several statements", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1")}DELETE FROM users; DELETE FROM orders;` });
    expect(err.message).toContain("a.v1.sql: more than one statement");
  });

  test("a key that names no parameter", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1", "-- key: mail\n")}SELECT :email` });
    expect(err.problems[0]!.reason).toBe('"-- key: mail" names no parameter of the statement (parameters: email)');
  });

  test("a key written only inside a string or comment", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1", "-- key: email\n")}SELECT ':email' -- :email` });
    expect(err.problems[0]!.reason).toContain("(parameters: none)");
  });

  test("a file name that is not <command>.v<version>.sql", async () => {
    const err = await refusal({ "create_user.sql": CREATE_USER });
    expect(err.problems[0]!.reason).toContain("file name must be <command>.v<version>.sql");
  });

  test("a file name that disagrees with the header", async () => {
    const err = await refusal({ "create_user.v2.sql": CREATE_USER });
    expect(err.problems[0]!.reason).toBe("header says command create_user version 1, file name says create_user version 2");
  });

  test("an unknown header field", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1", "-- kye: email\n")}SELECT :email` });
    expect(err.problems[0]!.reason).toContain('unknown header "-- kye:"');
  });

  test("a header field given twice", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1", "-- version: 2\n")}SELECT 1` });
    expect(err.problems[0]!.reason).toBe('header "-- version:" given twice');
  });

  test("a header and no statement", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1")}\n-- nothing here\n` });
    expect(err.problems[0]!.reason).toBe("no statement after the header");
  });

  test("a parameter cast to two types", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1")}SELECT :x::int, :x::text` });
    expect(err.problems[0]!.reason).toBe("parameter :x is cast to both integer and text");
  });

  test("a positional parameter", async () => {
    const err = await refusal({ "a.v1.sql": `${header("a", "1")}SELECT $1` });
    expect(err.problems[0]!.reason).toContain("positional parameter $1");
  });

  test("and lists every bad file at once", async () => {
    const err = await refusal({
      "a.v1.sql": "SELECT 1",
      "b.v1.sql": `${header("b", "1")}SELECT 1; SELECT 2`,
      "create_user.v1.sql": CREATE_USER,
    });
    expect(err.problems.map((p) => p.file.split("/").pop())).toEqual(["a.v1.sql", "b.v1.sql"]);
    expect(err.message).toStartWith("invalid SQL command registry:\n  - ");
  });
});

describe("parseCommandFile", () => {
  test("captures parameter types from casts", () => {
    const def = parseCommandFile("x/set_age.v1.sql", `${header("set_age", "1", "-- key: email\n")}UPDATE users SET age = :age::int WHERE email = :email`);
    expect(def.params).toEqual([
      { name: "age", type: "integer" },
      { name: "email", type: "scalar" },
    ]);
    expect(def.sql).toBe("UPDATE users SET age = $1::int WHERE email = $2");
    expect(def.key).toBe("email");
  });

  test("a byte-order mark and CRLF line ends are fine", () => {
    const def = parseCommandFile("a.v1.sql", `\uFEFF${header("a", "1")}SELECT :x;\r\n`.replaceAll("\n", "\r\n"));
    expect(def.sql).toBe("SELECT $1");
    expect(def.description).toBe("Test command.");
  });

  test("leaves key out when the header has none", () => {
    expect("key" in parseCommandFile("a.v1.sql", `${header("a", "1")}SELECT 1`)).toBe(false);
  });
});

describe("createRegistry", () => {
  const def = (command: string, version: string, file = `${command}.v${version}.sql`): CommandDef => ({
    command, version, description: "", params: [], sql: "SELECT 1", file,
  });

  test("refuses a duplicate command/version", () => {
    expect(() => createRegistry([def("a", "1"), def("a", "1", "other/a.v1.sql")])).toThrow(
      "other/a.v1.sql: duplicate of a version 1 in a.v1.sql",
    );
  });

  test("lists by command, then by version number", () => {
    const registry = createRegistry([def("b", "1"), def("a", "10"), def("a", "9")]);
    expect(registry.list().map((d) => `${d.command}.v${d.version}`)).toEqual(["a.v9", "a.v10", "b.v1"]);
  });
});
