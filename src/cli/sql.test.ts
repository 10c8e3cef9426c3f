import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devPostgresUrl, formatTable } from "./sql.ts";

test("rows print as an aligned table with a count; null as empty, dates as ISO, objects as JSON", () => {
  const rows = [
    { name: "Sahil", email: "sahil@example.com", at: new Date("2026-12-03T14:55:01.123Z"), extra: null },
    { name: "Al", email: "al@example.com", at: null, extra: { a: 1 } },
  ];
  expect(formatTable(["name", "email", "at", "extra"], rows).split("\n")).toEqual([
    "name  | email             | at                       | extra",
    "------+-------------------+--------------------------+--------",
    "Sahil | sahil@example.com | 2026-12-03T14:55:01.123Z |",
    'Al    | al@example.com    |                          | {"a":1}',
    "(2 rows)",
  ]);
});

test("the running dev mode's URL comes from $KITSUNE_DEV_DIR/postgres.url, else nothing", () => {
  const dir = mkdtempSync(join(tmpdir(), "kitsune-sql-"));
  try {
    expect(devPostgresUrl({ KITSUNE_DEV_DIR: dir })).toBeUndefined();
    writeFileSync(join(dir, "postgres.url"), "postgres://postgres@127.0.0.1:5999/postgres\n");
    expect(devPostgresUrl({ KITSUNE_DEV_DIR: dir })).toBe("postgres://postgres@127.0.0.1:5999/postgres");
  } finally {
    rmSync(dir, { recursive: true });
  }
});
