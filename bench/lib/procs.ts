/**
 * @module bench/lib/procs
 * Kitsune roles as child processes (`bun src/main.ts` with an environment of their own), each
 * with its stdout/stderr in a log file, a fresh HTTP port, and a wait for `/readyz`.
 *
 * @example
 * const api = await spawnRole("api", env, { dir: run.dir });
 * api.kill("SIGKILL");                 // chaos
 * await api.stop();                    // SIGTERM, then SIGKILL after the grace period
 */
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";

export type RoleName = "api" | "log-worker" | "db-worker";

const REPO = join(import.meta.dir, "../..");

export interface RoleProcess {
  role: RoleName;
  /** `db-worker-2`: role plus incarnation, names the log file. */
  name: string;
  port: number;
  url: string;
  pid: number;
  log: string;
  proc: Subprocess;
  /** Resolves with the exit code (or signal number + 128). */
  exited: Promise<number>;
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM and wait; SIGKILL after `graceMs` (default 15 s). Resolves with the exit code. */
  stop(graceMs?: number): Promise<number>;
  /** `/readyz` JSON, or undefined when the process does not answer. */
  readiness(): Promise<{ status: number; body: unknown } | undefined>;
  /** `/metrics` text, or "" when the process does not answer. */
  metrics(): Promise<string>;
}

/** A TCP port nothing listens on right now (the OS picks it). */
export function freePort(): number {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

const incarnations = new Map<string, number>();

export interface SpawnOptions {
  /** Directory for the log file. */
  dir: string;
  /** Wait for `/readyz` 200 before resolving (default true). */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  port?: number;
}

export async function spawnRole(
  role: RoleName,
  env: Record<string, string>,
  { dir, waitReady = true, readyTimeoutMs = 60_000, port = freePort() }: SpawnOptions,
): Promise<RoleProcess> {
  const n = (incarnations.get(`${dir}:${role}`) ?? 0) + 1;
  incarnations.set(`${dir}:${role}`, n);
  const name = `${role}-${n}`;
  const log = join(dir, `${name}.log`);
  // One descriptor in append mode for both streams: two opens of the file would overwrite each other.
  const fd = openSync(log, "a");
  const proc = Bun.spawn(["bun", "src/main.ts"], {
    cwd: REPO,
    env: { ...process.env, ...env, ROLE: role, HTTP_PORT: String(port) },
    stdin: "ignore",
    stdout: fd,
    stderr: fd,
  });
  closeSync(fd);
  const url = `http://127.0.0.1:${port}`;
  const exited = proc.exited.then((code) => code ?? 128 + (proc.signalCode ? signalNumber(String(proc.signalCode)) : 0));
  const handle: RoleProcess = {
    role,
    name,
    port,
    url,
    pid: proc.pid,
    log,
    proc,
    exited,
    kill: (signal = "SIGKILL") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
    stop: async (graceMs = 15_000) => {
      handle.kill("SIGTERM");
      const timer = setTimeout(() => handle.kill("SIGKILL"), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    readiness: async () => {
      try {
        const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
        return { status: res.status, body: await res.json().catch(() => undefined) };
      } catch {
        return undefined;
      }
    },
    metrics: async () => {
      try {
        const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
        return res.ok ? await res.text() : "";
      } catch {
        return "";
      }
    },
  };
  if (waitReady) {
    try {
      await waitUntilReady(handle, readyTimeoutMs);
    } catch (err) {
      handle.kill("SIGKILL");
      throw err;
    }
  }
  return handle;
}

/** Polls `/readyz` until 200; throws with the tail of the log when the process exits or time runs out. */
export async function waitUntilReady(p: RoleProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | undefined;
  void p.exited.then((c) => (exited = c));
  let last: unknown;
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new Error(`${p.name} exited with ${exited} before it was ready\n${await tail(p.log)}`);
    const r = await p.readiness();
    if (r?.status === 200) return;
    last = r?.body;
    await Bun.sleep(200);
  }
  throw new Error(`${p.name} not ready within ${timeoutMs} ms (last /readyz: ${JSON.stringify(last)})\n${await tail(p.log)}`);
}

/** Last `lines` lines of a file, for error messages. */
export async function tail(path: string, lines = 20): Promise<string> {
  try {
    const text = await Bun.file(path).text();
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** `kitsune_consumer_lag` samples of a Prometheus text: `topic:partition` → lag. */
export function partitionLags(metricsText: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of metricsText.split("\n")) {
    if (!line.startsWith("kitsune_consumer_lag{")) continue;
    const topic = /topic="([^"]*)"/.exec(line)?.[1];
    const partition = /partition="([^"]*)"/.exec(line)?.[1];
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (topic !== undefined && partition !== undefined && Number.isFinite(value)) out.set(`${topic}:${partition}`, value);
  }
  return out;
}

/**
 * True when the live members of a group together have every partition of `topic` assigned (each
 * reports a `kitsune_consumer_lag` sample for it): no rebalance is pending.
 *
 * NOTE: the lag values themselves cannot say "caught up": the workers commit "last offset + 1",
 * which stops short of the transaction markers the transactional api leaves after its messages,
 * so a fully consumed partition shows a lag of 1, 2, … (reported as a src/ problem). Callers
 * combine this with counts that stopped moving and a quiet period after the last disruption.
 */
export async function allAssigned(members: RoleProcess[], topic: string, partitions: number): Promise<boolean> {
  const seen = new Set<string>();
  for (const m of members) for (const k of partitionLags(await m.metrics()).keys()) if (k.startsWith(`${topic}:`)) seen.add(k);
  return seen.size >= partitions;
}

/** Sum of `kitsune_consumer_lag` samples in a Prometheus text, or undefined when there are none. */
export function consumerLag(metricsText: string): number | undefined {
  const lags = partitionLags(metricsText);
  if (lags.size === 0) return undefined;
  let sum = 0;
  for (const v of lags.values()) sum += v;
  return sum;
}

function signalNumber(signal: string): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGSTOP: 19 } as Record<string, number>)[signal] ?? 0;
}
