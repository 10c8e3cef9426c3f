/**
 * @module cli/db
 * `kitsune migrate` and `kitsune commands`: the SQL side, from the same files the roles load.
 */
import postgres from "postgres";
import { migrate } from "../db/migrations.ts";
import { loadRegistry } from "../db/registry.ts";
import { toolConfig } from "./tool-config.ts";

export async function migrateCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log("usage: kitsune migrate\n\napplies the pending migrations of $SQL_DIR/migrations to $POSTGRES_DSN, under an advisory lock");
    return 0;
  }
  const config = toolConfig();
  const sql = postgres(config.postgresDsn, { max: 1, onnotice: () => {} });
  try {
    const { applied, current } = await migrate(sql, config.sqlDir);
    for (const m of applied) console.log(`applied  ${String(m.version).padStart(4, "0")}_${m.name}`);
    console.log(applied.length ? `schema is at version ${current}` : `schema is up to date (version ${current})`);
    return 0;
  } finally {
    await sql.end({ timeout: 2 });
  }
}

export async function commandsCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log("usage: kitsune commands [--json]\n\nlists the commands of $SQL_DIR/commands with their parameters");
    return 0;
  }
  const config = toolConfig();
  const registry = await loadRegistry(config.sqlDir);
  const defs = registry.list();
  if (args.includes("--json")) {
    console.log(JSON.stringify(defs, null, 2));
    return 0;
  }
  for (const d of defs) {
    console.log(`${d.command} v${d.version}  ${d.description}`);
    console.log(`  params: ${d.params.map((p) => `${p.name}:${p.type}`).join(", ") || "(none)"}`);
    console.log(`  key:    ${d.key ?? "(idempotency key)"}`);
    console.log(`  file:   ${d.file}`);
  }
  return 0;
}
