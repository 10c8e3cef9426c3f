#!/usr/bin/env bun
/**
 * @module bench/api
 * Throughput and latency of `POST /execute` against a floor: a bare `Bun.serve` handler that
 * parses the same body and answers 202. The api runs as in production — the api role
 * (`start(config, deps)` from src/roles/api.ts) behind the process server (src/http.ts) — over
 * the real Kafka with a `TransactionalProducer` (`--mode transactional`), the idempotent
 * `Producer` (`--mode idempotent`), or a fake sink (`--mode fake`, no broker). Both servers run
 * in this process on loopback and get the same closed-loop load from another process (`wrk`
 * when installed, else fetch loops in a child `bun`): 50 connections for 20 s by default, every
 * request a different user (so db-events spreads over its partitions).
 *
 * Only 202 answers count as throughput (req/s): anything else — a 4xx, a 503, even another 2xx —
 * is reported beside it, by status as both servers count their answers, and a run where more than
 * `maxFailedShare` (default 1 %) of either side's requests failed throws after printing its figures.
 *
 * Each mode measures the floor and the api right after each other, the one that went second going
 * first in the next round (`--repeat`, default 3), so `ratio` (api req/s ÷ floor req/s) compares
 * neighbours in time on a machine that may be busy with other work; the summary gives the median
 * of the rounds' ratios and the best api run ÷ the best floor run. Every run uses topics of its
 * own (`bench-api-<run>-…`) and deletes them afterwards.
 *
 * Goal (transactional mode): ratio ≥ 0.5 and api p99 ≤ 20 ms.
 *
 * @example
 * ```sh
 * bun run bench api                                   # transactional, then idempotent, 3 rounds each
 * bun run bench api --mode fake --seconds 10          # the api layer alone
 * bun run bench api --mode transactional --repeat 1   # one round
 * # with a schema registry (SCHEMA_REGISTRY_URL): without it, plain JSON and Confluent format, side by side
 * bun run bench api --mode fake --schema off,json,confluent
 * ```
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { FakeSink } from "../test/fakes.ts";
import type { Config } from "../src/config.ts";
import { buildApp } from "../src/http.ts";
import { Admin } from "../src/kafka/admin.ts";
import { silentLogger } from "../src/logger.ts";
import { createRegistry } from "../src/metrics.ts";
import { start } from "../src/roles/api.ts";
import { kafkaConfig, topicSpecs } from "../src/broker.ts";
import type { WireFormat } from "../src/schema/wire.ts";
import { median, roundOrder, successes } from "./lib/rate.ts";
import { recorder, writeLines } from "./lib/report.ts";

export type Mode = "transactional" | "idempotent" | "fake";
export const MODES: readonly Mode[] = ["transactional", "idempotent", "fake"];
/** Without a schema registry, or with one and the ids in headers (json) or also in the values (confluent). */
export type SchemaVariant = "off" | WireFormat;
export const SCHEMA_VARIANTS: readonly SchemaVariant[] = ["off", "json", "confluent"];

export interface LoadResult {
  target: string;
  /** Answers the load generator received. */
  requests: number;
  /** Of those, the ones that count: 202s (`successes`). */
  accepted: number;
  seconds: number;
  /** 202 answers per second. */
  rps: number;
  /** Latency of every answer, whatever its status. */
  p50Ms: number;
  p99Ms: number;
  /** Answers that were not 202: by the load generator's count (wrk sees status >= 400 only) or the server's, whichever is larger. */
  failed: number;
  /** Socket errors and timeouts. */
  errors: number;
  /** Answers the server gave during the run, by status. */
  statuses: Record<number, number>;
}

export interface ModeResult {
  mode: Mode;
  schema: SchemaVariant;
  /** `mode`, or `mode+schema:<variant>`. */
  label: string;
  round: number;
  floor: LoadResult;
  api: LoadResult;
  /** api req/s ÷ floor req/s. */
  ratio: number;
}

export interface BenchOptions {
  modes?: Mode[];
  seconds?: number;
  connections?: number;
  warmupSeconds?: number;
  /** Rounds of every mode (default 3), alternating which side goes first. */
  repeat?: number;
  /** Largest share of a run's requests that may fail (not 202, or no answer) before the bench throws; default 0.01. */
  maxFailedShare?: number;
  driver?: "auto" | "wrk" | "fetch";
  /** Each mode once per variant; anything but "off" needs SCHEMA_REGISTRY_URL. */
  schemas?: SchemaVariant[];
  brokers?: string[];
  print?: (line: string) => void;
}

/** DESIGN.md's original example; the load generator replaces the email per request. */
export const BENCH_BODY = JSON.stringify({
  command: "create_user",
  version: "1",
  payload: { name: "Sahil", email: "sahil@example.com" },
  log: { level: "INFO", message: "User registration triggered" },
  metadata: { source: "bench" },
});

const TOKEN = "bench-token";
const GOAL = { ratio: 0.5, p99Ms: 20 };

export async function benchApi({
  modes = ["transactional", "idempotent"],
  seconds = 20,
  connections = 50,
  warmupSeconds = 3,
  repeat = 3,
  maxFailedShare = 0.01,
  driver = "auto",
  schemas = ["off"],
  brokers = (process.env.KAFKA_BROKERS ?? "127.0.0.1:9092").split(","),
  print = console.log,
}: BenchOptions = {}): Promise<ModeResult[]> {
  const chosen = driver === "auto" ? (Bun.which("wrk") ? "wrk" : "fetch") : driver;
  const dir = mkdtempSync(join(tmpdir(), "kitsune-bench-"));
  const floorAnswers = new Answers();
  const floor = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: floorHandler(floorAnswers) });
  const load = async (target: string, url: string, secs: number, answers: Answers): Promise<LoadResult> => {
    const before = answers.snapshot();
    const r = chosen === "wrk" ? await runWrk(url, secs, connections, dir) : await runFetch(url, secs, connections);
    await answers.settled();
    const statuses = answers.since(before);
    const serverFailed = Object.entries(statuses).reduce((n, [status, count]) => (status === "202" ? n : n + count), 0);
    const failed = Math.max(r.failed, serverFailed);
    const accepted = successes({ answers: r.requests, clientFailed: r.failed, serverFailed });
    return { ...r, target, accepted, rps: accepted / r.seconds, failed, statuses };
  };

  print(
    `bench api: driver=${chosen} connections=${connections} seconds=${seconds} (+${warmupSeconds}s warm-up each) rounds=${repeat} ` +
      `cores=${availableParallelism()} load1=${loadavg()[0]!.toFixed(2)} bun=${Bun.version}`,
  );
  const results: ModeResult[] = [];
  const failures: string[] = [];
  try {
    for (let round = 1; round <= repeat; round++) {
      for (const mode of modes) for (const schema of schemas) {
        const label = schema === "off" ? mode : `${mode}+schema:${schema}`;
        const apiAnswers = new Answers();
        const api = await startApi(mode, brokers, schema, apiAnswers);
        try {
          const servers = { floor: { port: floor.port!, answers: floorAnswers }, api: { port: api.port, answers: apiAnswers } };
          const measured: Partial<Record<"floor" | "api", LoadResult>> = {};
          // The side that went second in one round goes first in the next.
          for (const target of roundOrder(round, ["floor", "api"] as const)) {
            const { port, answers } = servers[target];
            const url = `http://127.0.0.1:${port}/execute`;
            if (warmupSeconds > 0) await load(target, url, warmupSeconds, answers);
            measured[target] = await load(target, url, seconds, answers);
          }
          const r = { mode, schema, label, round, floor: measured.floor!, api: measured.api!, ratio: measured.api!.rps / measured.floor!.rps };
          results.push(r);
          print(`[${label}${repeat > 1 ? ` round ${round}` : ""}${round % 2 === 0 ? ", api first" : ""}]`);
          print(formatLine("floor", r.floor));
          print(formatLine("api", r.api));
          print(`ratio=${r.ratio.toFixed(3)}`);
          for (const side of [r.floor, r.api]) {
            const share = failedShare(side);
            if (share > maxFailedShare) {
              failures.push(`${mode} round ${round} ${side.target}: ${(share * 100).toFixed(1)}% of requests failed (${side.failed} not 202, ${side.errors} unanswered)`);
            }
          }
        } finally {
          await api.stop();
        }
      }
    }
  } finally {
    floor.stop(true);
    rmSync(dir, { recursive: true, force: true });
  }
  printSummary(results, print);
  if (failures.length) {
    throw new Error(`bench api: more than ${(maxFailedShare * 100).toFixed(1)}% of requests failed; req/s counts 202s only, but the ratio means little here:\n  ${failures.join("\n  ")}`);
  }
  return results;
}

/** Share of a run's requests that did not get a 202: answered otherwise, or not answered at all. */
function failedShare(r: LoadResult): number {
  const all = r.requests + r.errors;
  return all > 0 ? (r.failed + r.errors) / all : 1;
}

/** A server's answers by status, and how many requests it is still handling. */
class Answers {
  private readonly counts = new Map<number, number>();
  inFlight = 0;

  count(status: number): void {
    this.counts.set(status, (this.counts.get(status) ?? 0) + 1);
  }

  snapshot(): Map<number, number> {
    return new Map(this.counts);
  }

  /** Answers since `before`, by status. */
  since(before: Map<number, number>): Record<number, number> {
    const out: Record<number, number> = {};
    for (const [status, n] of this.counts) if (n - (before.get(status) ?? 0) > 0) out[status] = n - (before.get(status) ?? 0);
    return out;
  }

  /** Resolves once the requests of a finished run are all answered (the load generator does not wait for them). */
  async settled(timeoutMs = 30_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.inFlight > 0) {
      if (performance.now() > deadline) throw new Error(`bench api: ${this.inFlight} requests still unanswered ${timeoutMs} ms after the run`);
      await Bun.sleep(10);
    }
  }
}

/**
 * The floor: parse the body, answer 202 with an id. Everything the api does beyond this is its
 * cost. It counts its answers in line (the api's are counted by a wrapper around its handler).
 */
function floorHandler(answers: Answers): (req: Request) => Promise<Response> {
  return async (req) => {
    answers.inFlight++;
    try {
      const parsed = (await req.json()) as { command?: string };
      answers.count(202);
      return Response.json({ id: Bun.randomUUIDv7(), status: "accepted", command: parsed.command }, { status: 202 });
    } catch (err) {
      answers.count(500);
      throw err;
    } finally {
      answers.inFlight--;
    }
  };
}

/** The api role as `main` runs it, on a port of its own, with topics of its own. */
async function startApi(mode: Mode, brokers: string[], schema: SchemaVariant, answers: Answers): Promise<{ port: number; stop(): Promise<void> }> {
  const run = `bench-api-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const config: Config = {
    role: "api",
    httpPort: 0,
    kafka: { brokers, overrides: {}, transactions: mode === "transactional" },
    postgresDsn: process.env.POSTGRES_DSN ?? "postgres://kitsune:kitsune@127.0.0.1:5432/kitsune",
    loki: { url: "http://127.0.0.1:3100" },
    sqlDir: join(import.meta.dir, "..", "sql"),
    topics: { events: `${run}.db-events`, logs: `${run}.app-logs`, results: `${run}.db-results` },
    auth: { tokens: [TOKEN], disabled: false },
    maxBodyBytes: 65536,
    logLevel: "silent",
    ...(schema === "off"
      ? {}
      : {
          schemaRegistry: {
            url: process.env.SCHEMA_REGISTRY_URL!.replace(/\/+$/, ""),
            subjectPrefix: `${run}.`,
            compatibility: { commands: "FULL_TRANSITIVE", events: "BACKWARD" },
            wireFormat: schema,
          },
        }),
  };
  const registry = createRegistry();
  const service = await start(config, {
    logger: silentLogger,
    registry,
    ...(mode === "fake" ? { sink: new FakeSink({ record: false }) } : {}),
  });
  const app = buildApp([service], registry);
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: async (req, srv) => {
      answers.inFlight++;
      try {
        const res = await app.fetch(req, srv);
        answers.count(res.status);
        return res;
      } catch (err) {
        answers.count(500);
        throw err;
      } finally {
        answers.inFlight--;
      }
    },
  });
  const stop = async () => {
    server.stop(true);
    await service.stop();
    if (mode !== "fake") {
      const admin = new Admin(kafkaConfig(config));
      try {
        await admin.deleteTopics(topicSpecs(config).map((t) => t.name));
      } catch (err) {
        console.error(`bench api: could not delete the topics of ${run}: ${(err as Error).message}`);
      } finally {
        admin.close();
      }
    }
  };
  // Fail fast with the api's own answer when the body or broker is wrong, instead of benchmarking 4xx/5xx.
  const probe = await fetch(`http://127.0.0.1:${server.port}/execute`, { method: "POST", headers: headers(), body: BENCH_BODY });
  if (probe.status !== 202) {
    const text = await probe.text();
    await stop();
    throw new Error(`bench api: the api (${mode}) answered ${probe.status} to the bench body: ${text}`);
  }
  return { port: server.port!, stop };
}

function headers(): Record<string, string> {
  return { "content-type": "application/json", authorization: `Bearer ${TOKEN}` };
}

function formatLine(target: string, r: LoadResult): string {
  const others = Object.entries(r.statuses)
    .filter(([status]) => status !== "202")
    .map(([status, n]) => `${status}×${n}`)
    .join(" ");
  return (
    `${target.padEnd(5)} req/s=${r.rps.toFixed(0)} (202s only) p50=${r.p50Ms.toFixed(2)}ms p99=${r.p99Ms.toFixed(2)}ms ` +
    `answers=${r.requests} accepted=${r.accepted} failed=${r.failed}${others ? ` (${others})` : ""} errors=${r.errors}`
  );
}

function printSummary(results: ModeResult[], print: (line: string) => void): void {
  const labels = [...new Set(results.map((r) => r.label))];
  print("summary (median (min–max) over the rounds; best = best api run ÷ best floor run):");
  for (const label of labels) {
    const rs = results.filter((r) => r.label === label);
    const mode = rs[0]!.mode;
    const span = (xs: number[], digits: number) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const mid = median(sorted).toFixed(digits);
      return sorted.length > 1 ? `${mid} (${sorted[0]!.toFixed(digits)}–${sorted.at(-1)!.toFixed(digits)})` : mid;
    };
    const best = Math.max(...rs.map((r) => r.api.rps)) / Math.max(...rs.map((r) => r.floor.rps));
    const met = rs.every((r) => r.ratio >= GOAL.ratio && r.api.p99Ms <= GOAL.p99Ms && r.api.failed === 0 && r.api.errors === 0);
    print(
      `  ${label.padEnd(13)} api req/s=${span(rs.map((r) => r.api.rps), 0)} floor req/s=${span(rs.map((r) => r.floor.rps), 0)} ` +
        `ratio=${span(rs.map((r) => r.ratio), 3)} best=${best.toFixed(3)} api p50=${span(rs.map((r) => r.api.p50Ms), 2)}ms ` +
        `p99=${span(rs.map((r) => r.api.p99Ms), 2)}ms failed=${rs.reduce((n, r) => n + r.api.failed + r.api.errors, 0)}` +
        (mode === "transactional" ? `  goal (ratio ≥ ${GOAL.ratio}, p99 ≤ ${GOAL.p99Ms} ms): ${met ? "met" : "not met"}` : ""),
    );
  }
}

/**
 * wrk's request script: the bench body with a different email (the db-events key) per request.
 * NOTE: no response() callback: it makes wrk parse every answer in Lua and steal CPU from the
 * servers. summary.errors.status counts answers >= 400; the servers count every status themselves
 * (`Answers`), which also catches a 2xx that is not 202.
 */
const WRK_SCRIPT = (body: string) => `
local head, tail = ${JSON.stringify(body.split("sahil@example.com")[0])}, ${JSON.stringify(body.split("sahil@example.com")[1])}
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer ${TOKEN}" }
local n, id = 0, 0
function setup(thread) id = id + 1; thread:set("tid", id) end
function request()
  n = n + 1
  return wrk.format("POST", nil, headers, head .. "u" .. tid .. "-" .. n .. "@bench.test" .. tail)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("\\nRESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
`;

/** What the load generator itself saw. */
type Driven = Pick<LoadResult, "requests" | "seconds" | "p50Ms" | "p99Ms" | "failed" | "errors">;

async function runWrk(url: string, seconds: number, connections: number, dir: string): Promise<Driven> {
  const script = join(dir, "post.lua");
  writeFileSync(script, WRK_SCRIPT(BENCH_BODY));
  const threads = Math.max(1, Math.min(connections, availableParallelism()));
  const proc = Bun.spawn(["wrk", `-t${threads}`, `-c${connections}`, `-d${seconds}s`, "--timeout", "10s", "-s", script, url], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const m = /RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(out);
  if (code !== 0 || !m) throw new Error(`bench: wrk failed (${code}): ${err || out}`);
  const [requests, durationUs, p50Us, p99Us, failed, errors] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return { requests, seconds: durationUs / 1e6, p50Ms: p50Us / 1000, p99Ms: p99Us / 1000, failed, errors };
}

async function runFetch(url: string, seconds: number, connections: number): Promise<Driven> {
  const proc = Bun.spawn(
    [process.execPath, import.meta.path, "--drive", url, "--seconds", String(seconds), "--connections", String(connections)],
    { stdout: "pipe", stderr: "inherit" },
  );
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  if (code !== 0) throw new Error(`bench: fetch driver exited ${code}: ${out}`);
  return JSON.parse(out) as Driven;
}

/** The fetch driver, run in a child process so the load does not share the servers' event loop. */
async function drive(url: string, seconds: number, connections: number): Promise<Driven> {
  const latencies: number[] = [];
  let failed = 0;
  let errors = 0;
  let n = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async (_, worker) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const body = BENCH_BODY.replace("sahil@example.com", `u${worker}-${n++}@bench.test`);
        try {
          const res = await fetch(url, { method: "POST", headers: headers(), body, keepalive: true });
          await res.arrayBuffer();
          if (res.status !== 202) failed++;
          latencies.push(performance.now() - t0);
        } catch {
          errors++;
        }
      }
    }),
  );
  const secs = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { requests: latencies.length, seconds: secs, p50Ms: at(0.5), p99Ms: at(0.99), failed, errors };
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const USAGE =
  "usage: bun run bench api [--mode transactional,idempotent,fake] [--schema off,json,confluent] [--seconds 20] [--connections 50] [--warmup 3] [--repeat 3] [--max-failed 0.01] [--driver auto|wrk|fetch]";

/**
 * `bun run bench api [options]`. Resolves to the exit code: the goal is reported, not enforced;
 * too many failed requests throw.
 */
export async function main(args: string[]): Promise<number> {
  if (args.includes("--help")) {
    console.log(USAGE);
    return 0;
  }
  const modes = (flag(args, "--mode") ?? "transactional,idempotent").split(",").map((m) => m.trim()) as Mode[];
  const unknown = modes.filter((m) => !MODES.includes(m));
  if (unknown.length) {
    console.error(`bench api: unknown mode ${unknown.join(", ")}\n${USAGE}`);
    return 2;
  }
  const schemas = (flag(args, "--schema") ?? "off").split(",").map((m) => m.trim()) as SchemaVariant[];
  const badSchema = schemas.filter((m) => !SCHEMA_VARIANTS.includes(m));
  if (badSchema.length) {
    console.error(`bench api: unknown --schema ${badSchema.join(", ")}\n${USAGE}`);
    return 2;
  }
  if (schemas.some((m) => m !== "off") && !process.env.SCHEMA_REGISTRY_URL) {
    console.error("bench api: --schema json|confluent needs SCHEMA_REGISTRY_URL (REGISTRY=1 scripts/services.sh up)");
    return 2;
  }
  const { print, lines } = recorder();
  let results: ModeResult[] | undefined;
  try {
    results = await benchApi({
      print,
      modes,
      schemas,
      seconds: Number(flag(args, "--seconds") ?? 20),
      connections: Number(flag(args, "--connections") ?? 50),
      warmupSeconds: Number(flag(args, "--warmup") ?? 3),
      repeat: Number(flag(args, "--repeat") ?? 3),
      maxFailedShare: Number(flag(args, "--max-failed") ?? 0.01),
      driver: (flag(args, "--driver") ?? "auto") as BenchOptions["driver"],
    });
  } finally {
    writeLines("api", `bench api ${args.join(" ")}`.trim(), lines, { results });
  }
  return 0;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const driveUrl = flag(args, "--drive");
  if (driveUrl) {
    const result = await drive(driveUrl, Number(flag(args, "--seconds") ?? 10), Number(flag(args, "--connections") ?? 50));
    process.stdout.write(JSON.stringify(result));
    process.exit(0);
  }
  process.exit(await main(args));
}
