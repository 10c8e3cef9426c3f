#!/usr/bin/env bun
/**
 * @module bench/txn
 * The transactional api against its *transaction floor*: a minimal program on the same binding
 * and settings (a `TransactionalProducer` built from the api's own `kafkaConfig`, on the api's
 * topics) that commits the same two-message units (`buildMessages` of the bench body) with the
 * same grouping — only without HTTP. Whatever the api adds over the floor is HTTP, validation and
 * the rest of the request; whatever the floor costs is Kafka's transaction path on this machine.
 *
 * Three loads, each measured on both sides in every round (the side that went second goes first
 * in the next round; medians over `--rounds`):
 * - `closed:8`    8 connections, closed loop (wrk when installed): light-load latency;
 * - `open:1000`   1,000 req/s open loop (bench/lib/loadgen.ts; latency from each request's due
 *                 time, so a stall is charged to every request it held up);
 * - `closed:200`  200 connections: saturation, ratio = api 202/s ÷ floor units/s.
 * The floor runs in this process with the same loads (closed: N callers awaiting `sendAll` in a
 * loop; open: one `sendAll` due every 1/rate s). Only 202s count on the api side.
 *
 * Goals (issue 16): closed:8 and open:1000 api p50 ≤ 5 ms and p99 ≤ 20 ms; closed:200 ratio ≥ 0.8.
 *
 * @example
 * ```sh
 * bun run bench txn                                   # the three loads, 3 rounds, 10 s each
 * bun run bench txn --loads closed:8,open:1000 --seconds 5 --rounds 5
 * bun run bench txn --lanes 3                         # TransactionalProducer lanes on both sides
 * ```
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { buildMessages } from "../src/api/events.ts";
import { kafkaConfig, topicSpecs } from "../src/broker.ts";
import type { CommandDef, ExecuteRequest } from "../src/contracts.ts";
import type { Config } from "../src/config.ts";
import { buildApp } from "../src/http.ts";
import { Admin } from "../src/kafka/admin.ts";
import { TransactionalProducer } from "../src/kafka/txn-producer.ts";
import type { OutgoingMessage } from "../src/kafka/types.ts";
import { silentLogger } from "../src/logger.ts";
import { createRegistry } from "../src/metrics.ts";
import { start } from "../src/roles/api.ts";
import { parseArgs } from "./lib/args.ts";
import { startLoad } from "./lib/load.ts";
import { percentile, sorted } from "./lib/stats.ts";

export interface Load {
  kind: "closed" | "open";
  /** Connections (closed) or requests per second (open). */
  n: number;
}

export interface Measured {
  /** 202s (api) or committed units (floor) per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Api: answers other than 202 (and socket errors); floor: rejected units. */
  failed: number;
  /** Api: time inside the server (handler called → Response returned) of its 202s, p50 / p99. */
  serverP50Ms?: number;
  serverP99Ms?: number;
}

export interface LoadRound {
  load: string;
  round: number;
  floor: Measured;
  api: Measured;
}

const GOAL = { p50Ms: 5, p99Ms: 20, saturationRatio: 0.8 };

/** The body every request sends, the email (the db-events key) different per request. */
const body = (email: string) =>
  `{"command":"create_user","version":"1","payload":{"name":"Sahil","email":"${email}"},"log":{"level":"INFO","message":"User registration triggered"},"metadata":{"source":"bench"}}`;

/** The registry's create_user as far as `buildMessages` reads it. */
const CREATE_USER: CommandDef = { command: "create_user", version: "1", description: "", key: "email", params: [], sql: "", file: "" };

export function parseLoad(s: string): Load {
  const m = /^(closed|open):(\d+)$/.exec(s.trim());
  if (!m) throw new Error(`a load is closed:<connections> or open:<req/s>, not ${JSON.stringify(s)}`);
  return { kind: m[1] as Load["kind"], n: Number(m[2]) };
}

const label = (l: Load) => `${l.kind}:${l.n}`;

export async function benchTxn({
  loads = ["closed:8", "open:1000", "closed:200"].map(parseLoad),
  seconds = 10,
  warmupSeconds = 2,
  rounds = 3,
  lanes,
  brokers = (process.env.KAFKA_BROKERS ?? "127.0.0.1:9092").split(","),
  print = console.log,
}: {
  loads?: Load[];
  seconds?: number;
  warmupSeconds?: number;
  rounds?: number;
  lanes?: number;
  brokers?: string[];
  print?: (line: string) => void;
} = {}): Promise<LoadRound[]> {
  const dir = mkdtempSync(join(tmpdir(), "kitsune-bench-txn-"));
  const wrk = Bun.which("wrk");
  print(
    `bench txn: seconds=${seconds} (+${warmupSeconds}s warm-up) rounds=${rounds} lanes=${lanes ?? "default"} closed-loop driver=${wrk ? "wrk" : "loadgen"} ` +
      `cores=${availableParallelism()} load1=${loadavg()[0]!.toFixed(2)} bun=${Bun.version}`,
  );
  const api = await startApi(brokers, lanes);
  const floor = new TransactionalProducer(kafkaConfig(api.config), lanes ? { lanes } : {});
  const results: LoadRound[] = [];
  try {
    await floor.init();
    for (let round = 1; round <= rounds; round++) {
      for (const load of loads) {
        const measured: Partial<Record<"floor" | "api", Measured>> = {};
        const order = (round + results.length) % 2 === 1 ? (["floor", "api"] as const) : (["api", "floor"] as const);
        for (const side of order) {
          const run = (secs: number, phase: string) =>
            side === "floor" ? runFloor(floor, api.config, load, secs) : runApi(api, load, secs, dir, `${round}-${phase}`, wrk);
          if (warmupSeconds > 0) await run(warmupSeconds, "warm");
          measured[side] = await run(seconds, "run");
        }
        const r = { load: label(load), round, floor: measured.floor!, api: measured.api! };
        results.push(r);
        print(
          `[${r.load} round ${round}] floor ${fmt(r.floor)} | api ${fmt(r.api)} | ratio=${(r.api.rps / r.floor.rps).toFixed(3)} load1=${loadavg()[0]!.toFixed(2)}`,
        );
      }
    }
  } finally {
    await floor.close(5000);
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  printSummary(results, print);
  return results;
}

function fmt(m: Measured): string {
  const server = m.serverP50Ms === undefined ? "" : ` (in server ${m.serverP50Ms.toFixed(2)} / ${m.serverP99Ms!.toFixed(2)})`;
  return `${Math.round(m.rps)}/s p50=${m.p50Ms.toFixed(2)} p99=${m.p99Ms.toFixed(2)}ms${server}${m.failed ? ` failed=${m.failed}` : ""}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function printSummary(results: LoadRound[], print: (line: string) => void): void {
  print("summary (medians over rounds):");
  for (const load of [...new Set(results.map((r) => r.load))]) {
    const rs = results.filter((r) => r.load === load);
    const m = (f: (r: LoadRound) => number) => median(rs.map(f));
    const ratio = m((r) => r.api.rps / r.floor.rps);
    const apiP50 = m((r) => r.api.p50Ms);
    const apiP99 = m((r) => r.api.p99Ms);
    const saturation = parseLoad(load).kind === "closed" && parseLoad(load).n >= 100;
    const goal = saturation
      ? `goal ratio ≥ ${GOAL.saturationRatio}: ${ratio >= GOAL.saturationRatio ? "met" : "not met"}`
      : `goal p50 ≤ ${GOAL.p50Ms} ms, p99 ≤ ${GOAL.p99Ms} ms: ${apiP50 <= GOAL.p50Ms && apiP99 <= GOAL.p99Ms ? "met" : "not met"}`;
    print(
      `  ${load.padEnd(11)} floor ${Math.round(m((r) => r.floor.rps))}/s p50=${m((r) => r.floor.p50Ms).toFixed(2)} p99=${m((r) => r.floor.p99Ms).toFixed(2)}ms` +
        ` | api ${Math.round(m((r) => r.api.rps))}/s p50=${apiP50.toFixed(2)} p99=${apiP99.toFixed(2)}ms` +
        ` (in server ${m((r) => r.api.serverP50Ms!).toFixed(2)} / ${m((r) => r.api.serverP99Ms!).toFixed(2)}) | ratio=${ratio.toFixed(3)} | ${goal}`,
    );
  }
}

/** The floor: `sendAll` of the api's two messages per unit, with the api's producer settings. */
async function runFloor(producer: TransactionalProducer, config: Config, load: Load, seconds: number): Promise<Measured> {
  const now = new Date();
  let seq = 0;
  const unit = (): OutgoingMessage[] => {
    const email = `floor-${Date.now().toString(36)}-${seq++}@bench.test`;
    const request = JSON.parse(body(email)) as ExecuteRequest;
    return buildMessages(
      { id: Bun.randomUUIDv7(), request, def: CREATE_USER, payload: request.payload as Record<string, unknown>, idempotencyKey: Bun.randomUUIDv7(), now },
      config.topics,
    );
  };
  const latencies: number[] = [];
  let failed = 0;
  const one = async (due: number) => {
    try {
      await producer.sendAll(unit());
      latencies.push(performance.now() - due);
    } catch {
      failed++;
    }
  };
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  if (load.kind === "closed") {
    await Promise.all(
      Array.from({ length: load.n }, async () => {
        while (performance.now() < end) await one(performance.now());
      }),
    );
  } else {
    const pending: Promise<void>[] = [];
    for (let i = 0; ; i++) {
      const due = t0 + (i * 1000) / load.n;
      if (due >= end) break;
      const wait = due - performance.now();
      if (wait > 1) await Bun.sleep(wait - 0.5);
      // Latency from the due time, never from before the call (the timer may fire early).
      pending.push(one(Math.min(due, performance.now())));
    }
    await Promise.all(pending);
  }
  const elapsed = (performance.now() - t0) / 1000;
  const s = sorted(latencies);
  return { rps: latencies.length / elapsed, p50Ms: percentile(s, 0.5), p99Ms: percentile(s, 0.99), failed };
}

interface Api {
  config: Config;
  port: number;
  /** Answers by status, and the time inside the server of each 202, since the last `clear()`. */
  statuses: Map<number, number>;
  serverMs: number[];
  stop(): Promise<void>;
}

async function runApi(api: Api, load: Load, seconds: number, dir: string, tag: string, wrk: string | null): Promise<Measured> {
  const url = `http://127.0.0.1:${api.port}`;
  api.statuses.clear();
  api.serverMs.length = 0;
  const measured = load.kind === "closed" && wrk ? await runWrk(api, url, load.n, seconds, dir) : await runLoadgen(url, load, seconds, dir, tag);
  const s = sorted(api.serverMs);
  return { ...measured, serverP50Ms: percentile(s, 0.5), serverP99Ms: percentile(s, 0.99) };
}

async function runLoadgen(url: string, load: Load, seconds: number, dir: string, tag: string): Promise<Measured> {
  const run = startLoad({
    url,
    rate: load.kind === "open" ? load.n : 0,
    seconds,
    concurrency: load.kind === "open" ? 10_000 : load.n,
    command: "create_user",
    prefix: `txn-${Date.now().toString(36)}-${tag}`,
    out: join(dir, `${tag}.tsv`),
  });
  const result = await run.done;
  const accepted = result.records.filter((r) => r.status === 202);
  const first = result.records.reduce((m, r) => Math.min(m, r.dueMs), Number.POSITIVE_INFINITY);
  const s = sorted(accepted.map((r) => r.doneMs - r.dueMs));
  return {
    rps: accepted.length / ((result.elapsedMs - first) / 1000),
    p50Ms: percentile(s, 0.5),
    p99Ms: percentile(s, 0.99),
    failed: result.records.length - accepted.length,
  };
}

/** wrk, closed loop; 202s are counted by the server, wrk's own histogram gives the percentiles. */
async function runWrk(api: Api, url: string, connections: number, seconds: number, dir: string): Promise<Measured> {
  const script = join(dir, "post.lua");
  const [head, tail] = body("EMAIL").split("EMAIL");
  writeFileSync(
    script,
    `local head, tail = ${JSON.stringify(head)}, ${JSON.stringify(tail)}
local headers = { ["Content-Type"] = "application/json" }
local n, id, run = 0, 0, ${JSON.stringify(Date.now().toString(36))}
function setup(thread) id = id + 1; thread:set("tid", id) end
function request()
  n = n + 1
  return wrk.format("POST", "/execute", headers, head .. "w" .. run .. "-" .. tid .. "-" .. n .. "@bench.test" .. tail)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("\\nRESULT %d %d %d %d %d\\n", summary.duration, latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, summary.requests))
end
`,
  );
  const threads = Math.max(1, Math.min(connections, availableParallelism()));
  const proc = Bun.spawn([Bun.which("wrk")!, `-t${threads}`, `-c${connections}`, `-d${seconds}s`, "--timeout", "10s", "-s", script, url], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  const m = /RESULT (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(out);
  if (!m) throw new Error(`bench txn: no result from wrk: ${out}${await new Response(proc.stderr).text()}`);
  const [durationUs, p50Us, p99Us, errors] = m.slice(1, 5).map(Number) as [number, number, number, number];
  const accepted = api.statuses.get(202) ?? 0;
  let other = errors;
  for (const [status, n] of api.statuses) if (status !== 202) other += n;
  return { rps: accepted / (durationUs / 1e6), p50Ms: p50Us / 1000, p99Ms: p99Us / 1000, failed: other };
}

/** The api role as `main` runs it (transactional), on a port and topics of its own, without auth. */
async function startApi(brokers: string[], lanes: number | undefined): Promise<Api> {
  const run = `bench-txn-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const config: Config = {
    role: "api",
    httpPort: 0,
    kafka: { brokers, overrides: {}, transactions: true, txnLanes: lanes },
    postgresDsn: process.env.POSTGRES_DSN ?? "postgres://kitsune:kitsune@127.0.0.1:5432/kitsune",
    loki: { url: "http://127.0.0.1:3100" },
    sqlDir: join(import.meta.dir, "..", "sql"),
    topics: { events: `${run}.db-events`, logs: `${run}.app-logs`, results: `${run}.db-results` },
    auth: { tokens: [], disabled: true },
    maxBodyBytes: 65536,
    logLevel: "silent",
  } as Config;
  const registry = createRegistry();
  const service = await start(config, { logger: silentLogger, registry });
  const app = buildApp([service], registry);
  const statuses = new Map<number, number>();
  const serverMs: number[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: async (req) => {
      const t0 = performance.now();
      const res = await app.fetch(req);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 202) serverMs.push(performance.now() - t0);
      return res;
    },
  });
  const stop = async () => {
    server.stop(true);
    await service.stop();
    const admin = new Admin(kafkaConfig(config));
    try {
      await admin.deleteTopics(topicSpecs(config).map((t) => t.name));
    } catch (err) {
      console.error(`bench txn: could not delete the topics of ${run}: ${(err as Error).message}`);
    } finally {
      admin.close();
    }
  };
  const probe = await fetch(`http://127.0.0.1:${server.port}/execute`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body(`probe-${run}@bench.test`),
  });
  if (probe.status !== 202) {
    const text = await probe.text();
    await stop();
    throw new Error(`bench txn: the api answered ${probe.status} to the bench body: ${text}`);
  }
  return { config, port: server.port!, statuses, serverMs, stop };
}

export async function main(argv: string[]): Promise<number> {
  const a = parseArgs(argv);
  const lanes = a.number("lanes", 0);
  await benchTxn({
    loads: a.string("loads", "closed:8,open:1000,closed:200").split(",").map(parseLoad),
    seconds: a.positive("seconds", 10),
    warmupSeconds: a.number("warmup", 2),
    rounds: a.positive("rounds", 3),
    lanes: lanes > 0 ? lanes : undefined,
  });
  return 0;
}
