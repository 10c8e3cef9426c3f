/**
 * @module db/registry
 * The command registry: one `.sql` file per command version under `<SQL_DIR>/commands/` (any depth),
 * named `<command>.v<version>.sql`, with a header and exactly one statement.
 *
 * @example
 * // sql/commands/create_user.v1.sql
 * // -- command: create_user
 * // -- version: 1
 * // -- key: email
 * // -- description: Register a user.
 * // INSERT INTO users (name, email) VALUES (:name, :email);
 * const registry = await loadRegistry("./sql");
 * registry.get("create_user");        // newest version
 * await verifyRegistry(registry, sql); // after migrations: PostgreSQL can prepare every statement
 */
import { join } from "node:path";
import type { Sql } from "postgres";
import type { CommandDef, CommandLookup } from "../contracts.ts";
import { classifySqlError, sqlstateOf } from "./errors.ts";
import { parseNamedParams } from "./sql-params.ts";

export interface RegistryProblem {
  file: string;
  reason: string;
}

/** Every problem found, each naming its file; the process refuses to start on it. */
export class RegistryError extends Error {
  constructor(readonly problems: RegistryProblem[]) {
    super(`invalid SQL command registry:\n${problems.map((p) => `  - ${p.file}: ${p.reason}`).join("\n")}`);
    this.name = "RegistryError";
  }
}

const FILE_NAME = /^([a-z][a-z0-9_]*)\.v([1-9][0-9]{0,8})\.sql$/;
const HEADER_FIELD = /^--\s*([a-z_]+)\s*:\s*(.*?)\s*$/;
const FIELDS = ["command", "version", "key", "description"] as const;
const REQUIRED = ["command", "version", "description"] as const;
type Field = (typeof FIELDS)[number];

/**
 * Parses one command file. `file` is the path shown in errors; its base name must be
 * `<command>.v<version>.sql` and agree with the header. Throws `RegistryError`.
 */
export function parseCommandFile(file: string, source: string): CommandDef {
  const text = source.replace(/^\uFEFF/, ""); // editors on Windows may save a byte-order mark
  const refuse = (reason: string): never => {
    throw new RegistryError([{ file, reason }]);
  };
  const base = file.split(/[\\/]/).pop()!;
  const named = FILE_NAME.exec(base);
  if (!named) refuse(`file name must be <command>.v<version>.sql, e.g. create_user.v1.sql`);

  const header = parseHeader(text, refuse);
  const missing = REQUIRED.filter((f) => !header[f]);
  if (missing.length) refuse(`missing header ${missing.map((f) => `"-- ${f}:"`).join(", ")}`);
  const { command, version, description, key } = header as Record<Field, string>;
  if (command !== named![1] || version !== named![2]) {
    refuse(`header says command ${command} version ${version}, file name says ${named![1]} version ${named![2]}`);
  }

  const parsed = parseNamedParams(text);
  if (parsed.multipleStatements) refuse("more than one statement (a command file holds exactly one)");
  if (parsed.problems.length) refuse(parsed.problems.join("; "));
  // The header and any comment lines before the statement are not sent to PostgreSQL.
  const statement = parsed.sql.replace(/^(\s*--[^\n]*(\n|$))*\s*/, "");
  if (!/[^\s]/.test(stripComments(statement))) refuse("no statement after the header");
  if (key !== undefined && !parsed.params.some((p) => p.name === key)) {
    refuse(`"-- key: ${key}" names no parameter of the statement (parameters: ${parsed.params.map((p) => p.name).join(", ") || "none"})`);
  }

  return { command, version, description, ...(key !== undefined && { key }), params: parsed.params, sql: statement, file };
}

/** The `-- field: value` lines before the statement. */
function parseHeader(text: string, refuse: (reason: string) => never): Partial<Record<Field, string>> {
  const header: Partial<Record<Field, string>> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    if (!line.startsWith("--")) break;
    const m = HEADER_FIELD.exec(line);
    if (!m) continue; // a plain comment
    const [, field, value] = m as unknown as [string, string, string];
    if (!(FIELDS as readonly string[]).includes(field)) {
      refuse(`unknown header "-- ${field}:" (expected ${FIELDS.map((f) => `-- ${f}:`).join(", ")})`);
    }
    if (header[field as Field] !== undefined) refuse(`header "-- ${field}:" given twice`);
    if (value === "") refuse(`header "-- ${field}:" is empty`);
    header[field as Field] = value;
  }
  return header;
}

function stripComments(sql: string): string {
  return sql.replace(/--[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
}

/** A registry over already-parsed definitions; throws `RegistryError` on a duplicate command/version. */
export function createRegistry(defs: CommandDef[]): CommandLookup {
  const byCommand = new Map<string, Map<string, CommandDef>>();
  const problems: RegistryProblem[] = [];
  for (const def of defs) {
    const versions = byCommand.get(def.command) ?? new Map<string, CommandDef>();
    byCommand.set(def.command, versions);
    const other = versions.get(def.version);
    if (other) problems.push({ file: def.file, reason: `duplicate of ${def.command} version ${def.version} in ${other.file}` });
    else versions.set(def.version, def);
  }
  if (problems.length) throw new RegistryError(problems);

  const sorted = [...byCommand.keys()].sort().flatMap((command) =>
    [...byCommand.get(command)!.values()].sort((a, b) => Number(a.version) - Number(b.version)),
  );
  return {
    get(command, version) {
      const versions = byCommand.get(command);
      if (!versions) return undefined;
      if (version !== undefined) return versions.get(version);
      let newest: CommandDef | undefined;
      for (const def of versions.values()) if (!newest || Number(def.version) > Number(newest.version)) newest = def;
      return newest;
    },
    list: () => [...sorted],
  };
}

/**
 * Loads every `*.sql` under `<sqlDir>/commands`. Throws `RegistryError` listing every bad file
 * (bad name, missing header, several statements, unknown key, duplicate command/version).
 */
export async function loadRegistry(sqlDir: string): Promise<CommandLookup> {
  const dir = join(sqlDir, "commands");
  const files = [...new Bun.Glob("**/*.sql").scanSync({ cwd: dir, onlyFiles: true })].sort();
  const defs: CommandDef[] = [];
  const problems: RegistryProblem[] = [];
  for (const rel of files) {
    const file = join(dir, rel);
    try {
      defs.push(parseCommandFile(file, await Bun.file(file).text()));
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      problems.push(...err.problems);
    }
  }
  if (problems.length) throw new RegistryError(problems);
  return createRegistry(defs);
}

/**
 * Asks PostgreSQL to prepare (describe) every statement, so a typo in a table or column name stops
 * start-up instead of dead-lettering every command. Run it after migrations. Throws `RegistryError`
 * naming each file with PostgreSQL's message.
 */
export async function verifyRegistry(registry: CommandLookup, sql: Sql): Promise<void> {
  const problems: RegistryProblem[] = [];
  for (const def of registry.list()) {
    try {
      await sql.unsafe(def.sql).describe();
    } catch (err) {
      const sqlstate = sqlstateOf(err);
      // Not the statement's fault: connection lost, server shutting down, …
      if (sqlstate === undefined || classifySqlError(err) === "transient") throw err;
      problems.push({ file: def.file, reason: `PostgreSQL cannot prepare the statement: ${(err as Error).message} (SQLSTATE ${sqlstate})` });
    }
  }
  if (problems.length) throw new RegistryError(problems);
}
