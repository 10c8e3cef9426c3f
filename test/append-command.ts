/**
 * @module test/append-command
 * A registry for tests that must see an effect applied twice: a copy of the shipped `sql/` plus
 * `chaos_append` (bench/lib/sandbox.ts), an INSERT into `chaos_effects` that no constraint stops
 * from running twice. With `create_user` the UNIQUE email turns a second apply into a failure
 * and hides it.
 *
 * @example
 * const registry = appendRegistry();
 * await db.sql.unsafe(APPEND_COMMAND.table);      // before the db-worker prepares the command
 * // … run the worker with SQL_DIR: registry.dir, send chaos_append { name, email } …
 * registry.remove();
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { APPEND_COMMAND } from "../bench/lib/sandbox.ts";

export { APPEND_COMMAND };

/** Writes the copy into a fresh temporary directory; `dir` is the SQL_DIR to use. */
export function appendRegistry(): { dir: string; remove(): void } {
  const root = mkdtempSync(join(tmpdir(), "kitsune-append-registry-"));
  const dir = join(root, "sql");
  cpSync(new URL("../sql", import.meta.url).pathname, dir, { recursive: true });
  writeFileSync(join(dir, "commands", APPEND_COMMAND.file), APPEND_COMMAND.text);
  return { dir, remove: () => rmSync(root, { recursive: true, force: true }) };
}
