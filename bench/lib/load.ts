/**
 * @module bench/lib/load
 * Runs the load generator (`loadgen.ts`) in a child Bun process and reads its per-request results.
 *
 * @example
 * const run = startLoad({ url: api.url, rate: 1000, seconds: 30, concurrency: 2000, command: "create_user", prefix: "r1000", out });
 * await run.started;                        // wall-clock start, for timing chaos against the load
 * const result = await run.done;            // every request: status, latency, 202 id
 */
import { join } from "node:path";
import type { LoadMessage, LoadSpec, Progress } from "./loadgen.ts";
import { summarize, type Summary } from "./stats.ts";

export type { LoadSpec } from "./loadgen.ts";

export interface RequestRecord {
  seq: number;
  status: number;
  /** Milliseconds from the start: when it was due, sent, answered. */
  dueMs: number;
  sentMs: number;
  doneMs: number;
  /** The command id of a 202 (UUIDv7), else "". */
  id: string;
}

export interface LoadResult {
  spec: LoadSpec;
  startEpochMs: number;
  /** From the first due time to the last answer. */
  elapsedMs: number;
  records: RequestRecord[];
  byStatus: Record<string, number>;
}

export interface LoadRun {
  started: Promise<number>;
  done: Promise<LoadResult>;
  /** Latest progress report (about once a second). */
  readonly progress: Progress | undefined;
  /** Stop sending; requests in flight still finish and are recorded. */
  stop(): void;
  kill(): void;
}

export function startLoad(spec: LoadSpec, onProgress?: (p: Progress) => void): LoadRun {
  let resolveStarted!: (t: number) => void;
  const started = new Promise<number>((r) => (resolveStarted = r));
  let startEpochMs = 0;
  let progress: Progress | undefined;
  const proc = Bun.spawn(["bun", join(import.meta.dir, "loadgen.ts"), JSON.stringify(spec)], {
    // NOTE: Bun's fetch runs at most 256 requests at once by default and queues the rest inside
    // the client, where they would wait unseen by the server; let every request in flight be sent.
    env: { ...process.env, BUN_CONFIG_MAX_HTTP_REQUESTS: String(Math.min(65_000, Math.max(256, spec.concurrency))) },
    stdin: "ignore",
    stdout: "inherit",
    stderr: "inherit",
    ipc(message: LoadMessage) {
      if (message.type === "started") {
        startEpochMs = message.startEpochMs;
        resolveStarted(startEpochMs);
      } else if (message.type === "progress") {
        progress = message;
        onProgress?.(message);
      }
    },
  });
  const done = proc.exited.then(async (code) => {
    if (code !== 0) throw new Error(`load generator exited with ${code}`);
    const records = await readRecords(spec.out);
    const byStatus: Record<string, number> = {};
    let elapsedMs = 0;
    for (const r of records) {
      byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
      if (r.doneMs > elapsedMs) elapsedMs = r.doneMs;
    }
    return { spec, startEpochMs, elapsedMs, records, byStatus };
  });
  return {
    started,
    done,
    get progress() {
      return progress;
    },
    stop: () => {
      try {
        proc.send({ type: "stop" });
      } catch {}
    },
    kill: () => proc.kill("SIGKILL"),
  };
}

async function readRecords(path: string): Promise<RequestRecord[]> {
  const text = await Bun.file(path).text();
  const out: RequestRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [seq, status, due, sent, done, id] = line.split("\t");
    out.push({ seq: Number(seq), status: Number(status), dueMs: Number(due), sentMs: Number(sent), doneMs: Number(done), id: id ?? "" });
  }
  return out.sort((a, b) => a.seq - b.seq);
}

export interface HttpFigures {
  requests: number;
  accepted: number;
  /** Answers per status ("0" = no answer). */
  byStatus: Record<string, number>;
  /** Answered requests per second over the phase (202s per second in `acceptedPerSecond`). */
  reqPerSecond: number;
  acceptedPerSecond: number;
  /** Latency from the due time (open loop; includes waiting for a connection) — the figure to quote. */
  latencyMs: Summary;
  /** Latency from the moment the request was actually sent. */
  serviceMs: Summary;
}

export function httpFigures(result: LoadResult): HttpFigures {
  const answered = result.records.filter((r) => r.status !== 0);
  const accepted = result.records.filter((r) => r.status === 202);
  const first = result.records.reduce((m, r) => Math.min(m, r.sentMs), Number.POSITIVE_INFINITY);
  const seconds = Math.max(1e-3, (result.elapsedMs - (Number.isFinite(first) ? first : 0)) / 1000);
  return {
    requests: result.records.length,
    accepted: accepted.length,
    byStatus: result.byStatus,
    reqPerSecond: answered.length / seconds,
    acceptedPerSecond: accepted.length / seconds,
    latencyMs: summarize(accepted.map((r) => r.doneMs - r.dueMs)),
    serviceMs: summarize(accepted.map((r) => r.doneMs - r.sentMs)),
  };
}
