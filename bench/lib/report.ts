/**
 * @module bench/lib/report
 * Where results go: `bench/results/<date>.<kind>.{json,md,svg}` (UTC date, sortable).
 *
 * @example
 * const paths = writeReport("e2e", { json: result, markdown, svg });
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const RESULTS_DIR = join(import.meta.dir, "..", "results");

/** `2025-11-21T17-30-05Z`: an ISO date usable in a file name. */
export function stamp(date = new Date()): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");
}

export function writeReport(
  kind: string,
  { json, markdown, svg }: { json: unknown; markdown: string; svg?: string },
  { dir = RESULTS_DIR, date = new Date() }: { dir?: string; date?: Date } = {},
): { json: string; markdown: string; svg?: string } {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `${stamp(date)}.${kind}`);
  const paths = { json: `${base}.json`, markdown: `${base}.md`, svg: svg ? `${base}.svg` : undefined };
  // Three decimals are plenty for milliseconds and rates, and keep the file readable.
  const round = (_: string, v: unknown) => (typeof v === "number" && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v);
  writeFileSync(paths.json, `${JSON.stringify(json, round, 2)}\n`);
  writeFileSync(paths.markdown, markdown);
  if (svg && paths.svg) writeFileSync(paths.svg, svg);
  return paths;
}

/** A Markdown table. */
export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/**
 * A benchmark's printed lines as a report: `<kind>.md` (the lines as printed, after `title`) and
 * `<kind>.json` (`json` with the lines). For the benchmarks whose output is their report.
 */
export function writeLines(kind: string, title: string, lines: string[], json: Record<string, unknown> = {}, options?: { dir?: string; date?: Date }) {
  const markdown = `# ${title}\n\n\`\`\`\n${lines.join("\n")}\n\`\`\`\n`;
  return writeReport(kind, { json: { ...json, lines }, markdown }, options);
}

/** A `print` that also keeps what it printed. */
export function recorder(print: (line: string) => void = console.log): { print: (line: string) => void; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    print: (line) => {
      lines.push(line);
      print(line);
    },
  };
}
