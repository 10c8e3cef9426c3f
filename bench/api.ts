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
 * Each mode measures the floor right before the api, so `ratio` (api req/s ÷ floor req/s)
 * compares neighbours in time on a machine that may be busy with other work. Every run uses
 * topics of its own (`bench-api-<run>-…`) and deletes them afterwards.
 *
 * Goal (transactional mode): ratio ≥ 0.5 and api p99 ≤ 20 ms.
 *
 * @example
 * ```sh
 * bun run bench api                                   # transactional, then idempotent
 * bun run bench api --mode fake --seconds 10          # the api layer alone
 * bun run bench api --mode transactional --repeat 3   # three rounds: shows the spread
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

export type Mode = "transactional" | "idempotent" | "fake";
export const MODES: readonly Mode[] = ["transactional", "idempotent", "fake"];
/** Without a schema registry, or with one and the ids in headers (json) or also in the values (confluent). */
export type SchemaVariant = "off" | WireFormat;
export const SCHEMA_VARIANTS: readonly SchemaVariant[] = ["off", "json", "confluent"];

export interface LoadResult {
  target: string;
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Refused answers: status >= 400 with wrk, anything but 202 with the fetch driver. */
  failed: number;
  /** Socket errors and timeouts. */
  errors: number;
}

export interface ModeResult {
  mode: Mode;
  schema: SchemaVariant;
  /** `mode`, or `mode+schema:<variant>`. */
  label: string;
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
  /** Rounds of every mode, to show the spread on a shared machine. */
  repeat?: number;
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
  repeat = 1,
  driver = "auto",
  schemas = ["off"],
  brokers = (process.env.KAFKA_BROKERS ?? "127.0.0.1:9092").split(","),
  print = console.log,
}: BenchOptions = {}): Promise<ModeResult[]> {
  const chosen = driver === "auto" ? (Bun.which("wrk") ? "wrk" : "fetch") : driver;
  const dir = mkdtempSync(join(tmpdir(), "kitsune-bench-"));
  const floor = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: floorHandler });
  const load = (target: string, url: string, secs: number) =>
    chosen === "wrk" ? runWrk(target, url, secs, connections, dir) : runFetch(target, url, secs, connections);

  print(
    `bench api: driver=${chosen} connections=${connections} seconds=${seconds} (+${warmupSeconds}s warm-up each) ` +
      `cores=${availableParallelism()} load1=${loadavg()[0]!.toFixed(2)} bun=${Bun.version}`,
  );
  const results: ModeResult[] = [];
  try {
    for (let round = 1; round <= repeat; round++) {
      for (const mode of modes) for (const schema of schemas) {
        const label = schema === "off" ? mode : `${mode}+schema:${schema}`;
        const api = await startApi(mode, brokers, schema);
        try {
          const measured: Partial<Record<"floor" | "api", LoadResult>> = {};
          for (const [target, port] of [["floor", floor.port], ["api", api.port]] as const) {
            const url = `http://127.0.0.1:${port}/execute`;
            if (warmupSeconds > 0) await load(target, url, warmupSeconds);
            measured[target] = await load(target, url, seconds);
          }
          const r = { mode, schema, label, floor: measured.floor!, api: measured.api!, ratio: measured.api!.rps / measured.floor!.rps };
          results.push(r);
          print(`[${label}${repeat > 1 ? ` round ${round}` : ""}]`);
          print(formatLine("floor", r.floor));
          print(formatLine("api", r.api));
          print(`ratio=${r.ratio.toFixed(3)}`);
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
  return results;
}

/** The floor: parse the body, answer 202 with an id. Everything the api does beyond this is its cost. */
async function floorHandler(req: Request): Promise<Response> {
  const parsed = (await req.json()) as { command?: string };
  return Response.json({ id: Bun.randomUUIDv7(), status: "accepted", command: parsed.command }, { status: 202 });
}

/** The api role as `main` runs it, on a port of its own, with topics of its own. */
async function startApi(mode: Mode, brokers: string[], schema: SchemaVariant): Promise<{ port: number; stop(): Promise<void> }> {
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
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: buildApp([service], registry).fetch });
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
  return `${target.padEnd(5)} req/s=${r.rps.toFixed(0)} p50=${r.p50Ms.toFixed(2)}ms p99=${r.p99Ms.toFixed(2)}ms requests=${r.requests} failed=${r.failed} errors=${r.errors}`;
}

function printSummary(results: ModeResult[], print: (line: string) => void): void {
  const labels = [...new Set(results.map((r) => r.label))];
  print("summary:");
  for (const label of labels) {
    const rs = results.filter((r) => r.label === label);
    const mode = rs[0]!.mode;
    const span = (xs: number[], digits: number) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const mid = sorted.length >> 1;
      const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
      return sorted.length > 1 ? `${median.toFixed(digits)} (${sorted[0]!.toFixed(digits)}–${sorted.at(-1)!.toFixed(digits)})` : median.toFixed(digits);
    };
    const ratio = span(rs.map((r) => r.ratio), 3);
    const p99 = span(rs.map((r) => r.api.p99Ms), 2);
    const met = rs.every((r) => r.ratio >= GOAL.ratio && r.api.p99Ms <= GOAL.p99Ms && r.api.failed === 0 && r.api.errors === 0);
    print(
      `  ${label.padEnd(13)} api req/s=${span(rs.map((r) => r.api.rps), 0)} floor req/s=${span(rs.map((r) => r.floor.rps), 0)} ` +
        `ratio=${ratio} api p99=${p99}ms` + (mode === "transactional" ? `  goal (ratio ≥ ${GOAL.ratio}, p99 ≤ ${GOAL.p99Ms} ms): ${met ? "met" : "not met"}` : ""),
    );
  }
}

/**
 * wrk's request script: the bench body with a different email (the db-events key) per request.
 * NOTE: no response() callback: it makes wrk parse every answer in Lua and steal CPU from the
 * servers; summary.errors.status counts answers >= 400, which is what matters here.
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

async function runWrk(target: string, url: string, seconds: number, connections: number, dir: string): Promise<LoadResult> {
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
  const secs = durationUs / 1e6;
  return { target, requests, seconds: secs, rps: requests / secs, p50Ms: p50Us / 1000, p99Ms: p99Us / 1000, failed, errors };
}

async function runFetch(target: string, url: string, seconds: number, connections: number): Promise<LoadResult> {
  const proc = Bun.spawn(
    [process.execPath, import.meta.path, "--drive", url, "--seconds", String(seconds), "--connections", String(connections)],
    { stdout: "pipe", stderr: "inherit" },
  );
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  if (code !== 0) throw new Error(`bench: fetch driver exited ${code}: ${out}`);
  return { ...(JSON.parse(out) as Omit<LoadResult, "target">), target };
}

/** The fetch driver, run in a child process so the load does not share the servers' event loop. */
async function drive(url: string, seconds: number, connections: number): Promise<Omit<LoadResult, "target">> {
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
  return { requests: latencies.length, seconds: secs, rps: latencies.length / secs, p50Ms: at(0.5), p99Ms: at(0.99), failed, errors };
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const USAGE =
  "usage: bun run bench api [--mode transactional,idempotent,fake] [--schema off,json,confluent] [--seconds 20] [--connections 50] [--warmup 3] [--repeat 1] [--driver auto|wrk|fetch]";

/** `bun run bench api [options]`. Resolves to the exit code: the goal is reported, not enforced. */
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
  await benchApi({
    modes,
    schemas,
    seconds: Number(flag(args, "--seconds") ?? 20),
    connections: Number(flag(args, "--connections") ?? 50),
    warmupSeconds: Number(flag(args, "--warmup") ?? 3),
    repeat: Number(flag(args, "--repeat") ?? 1),
    driver: (flag(args, "--driver") ?? "auto") as BenchOptions["driver"],
  });
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
