/**
 * @module test/native-so
 * src/kafka/native.c compiled ahead of time by gcc, with the flags of the Dockerfile's native
 * stage, for the tests of the AOT loading path.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Whether gcc is on PATH (tests of the AOT path are skipped without it). */
export const HAVE_GCC = Bun.which("gcc") !== null;

let built: string | undefined;

/** Path of native.c compiled by `gcc -O2 -shared -fPIC` (once per test process); throws on a compile error. */
export function nativeSharedObject(): string {
  if (built) return built;
  const out = join(mkdtempSync(join(tmpdir(), "kitsune-native-so-")), "native.so");
  const src = join(import.meta.dir, "..", "src", "kafka", "native.c");
  const gcc = Bun.spawnSync(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-Wno-unused-parameter", "-o", out, src], { stderr: "pipe" });
  if (gcc.exitCode !== 0) throw new Error(`gcc failed on native.c:\n${gcc.stderr.toString()}`);
  return (built = out);
}
