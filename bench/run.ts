#!/usr/bin/env bun
/**
 * @module bench/run
 * `bun run bench <name> [args]` imports `bench/<name>.ts` and awaits its exported `main(args)`.
 * A benchmark fails the run by throwing or by resolving to a non-zero exit code.
 *
 * @example
 * ```sh
 * bun run bench kafka --messages 100000
 * bun run bench soak
 * ```
 */
import { readdirSync } from "node:fs";

export type BenchMain = (args: string[]) => Promise<number | void> | number | void;

const here = import.meta.dir;
const available = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.endsWith(".test.ts"))
  .map((f) => f.slice(0, -3))
  .sort();

const [name, ...args] = process.argv.slice(2);
if (!name || !available.includes(name)) {
  console.error(`usage: bun run bench <name> [args]   (name: ${available.join(", ")})`);
  process.exit(2);
}

const mod = (await import(`./${name}.ts`)) as { main?: BenchMain };
if (typeof mod.main !== "function") {
  console.error(`bench/${name}.ts does not export main(args)`);
  process.exit(2);
}
const code = await mod.main(args);
// Native handles (librdkafka threads, sockets) must not keep a finished benchmark alive.
process.exit(typeof code === "number" ? code : 0);
