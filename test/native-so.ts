/**
 * @module test/native-so
 * src/kafka/native.c compiled ahead of time by gcc, with the flags of the Dockerfile's native
 * stage, for the tests of the AOT loading path.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Whether gcc is on PATH (tests of the AOT path are skipped without it). */
export const HAVE_GCC = Bun.which("gcc") !== null;

const built = new Map<string, string>();

/**
 * Path of native.c compiled by `gcc -O2 -shared -fPIC` (once per test process, and once per
 * `sha256`: the source hash the object claims, the file's own by default); throws on a compile error.
 */
export function nativeSharedObject(sha256?: string): string {
  const src = join(import.meta.dir, "..", "src", "kafka", "native.c");
  const claim = sha256 ?? new Bun.CryptoHasher("sha256").update(readFileSync(src)).digest("hex");
  const cached = built.get(claim);
  if (cached) return cached;
  const out = join(mkdtempSync(join(tmpdir(), "kitsune-native-so-")), "native.so");
  const flags = ["-O2", "-shared", "-fPIC", "-s", "-Wall", "-Werror", "-Wno-unused-parameter", `-DKITSUNE_SOURCE_SHA256="${claim}"`];
  const gcc = Bun.spawnSync(["gcc", ...flags, "-o", out, src], { stderr: "pipe" });
  if (gcc.exitCode !== 0) throw new Error(`gcc failed on native.c:\n${gcc.stderr.toString()}`);
  built.set(claim, out);
  return out;
}
