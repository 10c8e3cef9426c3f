/**
 * @module cli/sql
 * `kitsune sql "select …"`: one statement on `POSTGRES_DSN`, or, when it is unset, on the
 * PostgreSQL of the `kitsune dev` running from this directory (its URL is in `.kitsune/postgres.url`).
 * Rows print as an aligned table; `--json` prints them as JSON lines.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import postgres from "postgres";
import { POSTGRES_URL_FILE } from "../dev/embedded.ts";

const USAGE = `usage: kitsune sql [--json] "<statement>"

runs one statement on $POSTGRES_DSN, else on the running \`kitsune dev\`'s PostgreSQL
($KITSUNE_DEV_DIR/${POSTGRES_URL_FILE}, default ./.kitsune), and prints what it returns`;

export function devPostgresUrl(env: Record<string, string | undefined> = process.env): string | undefined {
  try {
    return readFileSync(resolve(env.KITSUNE_DEV_DIR || ".kitsune", POSTGRES_URL_FILE), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Rows as an aligned text table with a header and a row count. */
export function formatTable(columns: string[], rows: Record<string, unknown>[]): string {
  const cell = (v: unknown) => (v === null || v === undefined ? "" : v instanceof Date ? v.toISOString() : typeof v === "object" ? JSON.stringify(v) : String(v));
  const cells = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join(" | ").trimEnd();
  const out = [line(columns), widths.map((w) => "-".repeat(w)).join("-+-"), ...cells.map(line)];
  out.push(`(${rows.length} row${rows.length === 1 ? "" : "s"})`);
  return out.join("\n");
}

export async function sqlCommand(args: string[]): Promise<number> {
  const help = args.includes("--help") || args.includes("-h");
  const json = args.includes("--json");
  const words = args.filter((a) => !a.startsWith("-"));
  if (help || words.length !== 1 || args.length !== words.length + (json ? 1 : 0)) {
    (help ? console.log : console.error)(USAGE);
    return help ? 0 : 2;
  }
  const dsn = process.env.POSTGRES_DSN?.trim() || devPostgresUrl();
  if (!dsn) {
    console.error("kitsune sql: POSTGRES_DSN is unset and no kitsune dev runs here (start one with `bun run dev`)");
    return 2;
  }
  const sql = postgres(dsn, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    const result = await sql.unsafe(words[0]!);
    const columns = result.columns?.map((c) => c.name) ?? [];
    if (json) for (const row of result) console.log(JSON.stringify(row));
    else if (columns.length) console.log(formatTable(columns, [...result]));
    else console.log(`${result.command ?? "OK"} ${result.count ?? ""}`.trim());
    return 0;
  } finally {
    await sql.end({ timeout: 2 });
  }
}
