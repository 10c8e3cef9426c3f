#!/usr/bin/env bun
/**
 * @module bench/lib/loadgen
 * The load generator, run as a child process (`load.ts` spawns it) so its CPU use is its own and
 * its timers are not delayed by the orchestrator.
 *
 * - Open loop (`rate > 0`): request `i` is due at `start + i / rate`, whatever the answers do
 *   (wrk2-style). Latency is measured from the due time, so a stalled server is charged for the
 *   requests it kept waiting (no coordinated omission). `concurrency` caps requests in flight;
 *   a request over the cap waits, and that wait counts in its latency.
 * - Closed loop (`rate = 0`): `concurrency` workers each send, await, repeat — the maximum rate.
 *
 * Every request is one line of the results file: `seq status dueMs sentMs doneMs id`
 * (milliseconds from `startEpochMs`; status 0 = no answer: refused connection or timeout).
 * Progress goes to the parent over IPC once a second.
 */
import { appendFileSync, writeFileSync } from "node:fs";

export interface LoadSpec {
  url: string;
  /** Requests per second; 0 = as fast as `concurrency` closed-loop workers go. */
  rate: number;
  /** Stop sending after this long (open loop: `rate * seconds` requests). */
  seconds?: number;
  /** Stop after this many requests (wins over `seconds` when both are given). */
  count?: number;
  concurrency: number;
  /** `create_user` (v1) or `chaos_append` (v1); both take name and email. */
  command: string;
  /** Unique per phase/run: emails are `<prefix>-<seq>@bench.test`, idempotency keys `<prefix>-<seq>`. */
  prefix: string;
  /** Results file (TSV, one line per request). */
  out: string;
  timeoutMs?: number;
}

export interface Progress {
  type: "progress";
  elapsedMs: number;
  sent: number;
  done: number;
  inFlight: number;
  byStatus: Record<string, number>;
}

export type LoadMessage = { type: "started"; startEpochMs: number } | Progress | { type: "finished"; sent: number; elapsedMs: number };

function body(spec: LoadSpec, seq: number): string {
  const key = `${spec.prefix}-${seq}`;
  return `{"command":"${spec.command}","version":"1","payload":{"name":"bench ${seq}","email":"${key}@bench.test"},"log":{"level":"INFO","message":"bench ${key}"},"metadata":{"idempotency_key":"${key}","source":"bench"}}`;
}

/** Stops sending when `stopped()` turns true (the parent's "stop" message); in-flight requests finish. */
export async function generate(spec: LoadSpec, send: (m: LoadMessage) => void, stopped: () => boolean = () => false): Promise<void> {
  const total = spec.count ?? (spec.rate > 0 ? Math.round(spec.rate * (spec.seconds ?? 10)) : Number.POSITIVE_INFINITY);
  const endMs = spec.count === undefined ? (spec.seconds ?? 10) * 1000 : Number.POSITIVE_INFINITY;
  const timeoutMs = spec.timeoutMs ?? 30_000;
  const url = `${spec.url}/execute`;
  const headers = { "content-type": "application/json" };
  const lines: string[] = [];
  const byStatus: Record<string, number> = {};
  let sent = 0;
  let done = 0;
  let inFlight = 0;
  const startEpochMs = Date.now();
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  writeFileSync(spec.out, "");
  send({ type: "started", startEpochMs });

  const flush = () => {
    if (lines.length) appendFileSync(spec.out, lines.join(""));
    lines.length = 0;
  };
  const progress = setInterval(() => {
    send({ type: "progress", elapsedMs: now(), sent, done, inFlight, byStatus: { ...byStatus } });
    flush();
  }, 1000);

  const one = async (seq: number, due: number): Promise<void> => {
    const sentMs = now();
    // The scheduler may send up to a millisecond early; latency never starts before the send.
    const dueMs = Math.min(due, sentMs);
    sent++;
    inFlight++;
    let status = 0;
    let id = "";
    try {
      const res = await fetch(url, { method: "POST", headers, body: body(spec, seq), signal: AbortSignal.timeout(timeoutMs) });
      status = res.status;
      const text = await res.text();
      if (status === 202) id = (JSON.parse(text) as { id: string }).id;
    } catch {
      status = 0;
    }
    const doneMs = now();
    inFlight--;
    done++;
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    lines.push(`${seq}\t${status}\t${dueMs.toFixed(2)}\t${sentMs.toFixed(2)}\t${doneMs.toFixed(2)}\t${id}\n`);
  };

  if (spec.rate > 0) {
    const interval = 1000 / spec.rate;
    const pending = new Set<Promise<void>>();
    let seq = 0;
    while (seq < total && !stopped()) {
      const dueMs = seq * interval;
      if (dueMs >= endMs) break;
      const wait = dueMs - now();
      if (wait > 1) await Bun.sleep(Math.min(wait, 5));
      else if (inFlight >= spec.concurrency) await Promise.race(pending);
      else {
        const p = one(seq++, dueMs);
        pending.add(p);
        void p.finally(() => pending.delete(p));
        // Yield now and then so answers are read while a backlog is being sent.
        if (seq % 64 === 0) await Bun.sleep(0);
      }
    }
    await Promise.all(pending);
  } else {
    let seq = 0;
    const worker = async () => {
      while (seq < total && now() < endMs && !stopped()) {
        const s = seq++;
        await one(s, now());
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, worker));
  }
  clearInterval(progress);
  flush();
  send({ type: "progress", elapsedMs: now(), sent, done, inFlight, byStatus: { ...byStatus } });
  send({ type: "finished", sent, elapsedMs: now() });
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2]!) as LoadSpec;
  const send = (m: LoadMessage) => process.send?.(m);
  let stop = false;
  process.on("message", (m: { type?: string }) => {
    if (m?.type === "stop") stop = true;
  });
  await generate(spec, send, () => stop);
  process.exit(0);
}
