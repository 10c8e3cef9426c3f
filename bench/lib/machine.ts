/**
 * @module bench/lib/machine
 * What a result was measured on, printed next to every number: cores, memory, CPU model, load,
 * kernel, Bun, and the commit of the code under test.
 */
import { cpus, loadavg, totalmem, freemem, release } from "node:os";

export interface Machine {
  cores: number;
  cpu: string;
  memoryGiB: number;
  freeMemoryGiB: number;
  /** 1-minute load average when the run started (other work on the machine shows here). */
  load1: number;
  kernel: string;
  bun: string;
  commit: string;
  /** Uncommitted changes in the working tree at the time of the run. */
  dirty: boolean;
}

export function machine(): Machine {
  const list = cpus();
  const git = (args: string[]) => {
    try {
      const r = Bun.spawnSync(["git", ...args], { cwd: `${import.meta.dir}/../..`, stdout: "pipe", stderr: "ignore" });
      return r.success ? r.stdout.toString().trim() : "";
    } catch {
      return "";
    }
  };
  return {
    cores: list.length,
    cpu: list[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    freeMemoryGiB: Math.round((freemem() / 2 ** 30) * 10) / 10,
    load1: Math.round(loadavg()[0]! * 100) / 100,
    kernel: release(),
    bun: Bun.version,
    commit: git(["rev-parse", "--short", "HEAD"]) || "unknown",
    dirty: git(["status", "--porcelain", "--untracked-files=no"]) !== "",
  };
}

export function describeMachine(m: Machine): string {
  return `${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB RAM (${m.freeMemoryGiB} free), load ${m.load1} at start, Linux ${m.kernel}, Bun ${m.bun}, commit ${m.commit}${m.dirty ? " + uncommitted changes" : ""}`;
}
