#!/usr/bin/env bun
/**
 * @module bench/db-worker
 * Commands applied per second by the db-worker against a floor: the same rows inserted by
 * postgres.js straight into PostgreSQL, in transactions of the worker's batch size
 * (`insertUsersDirect`, one statement per row, pipelined). `ratio` (worker ÷ floor) is what Kafka,
 * decoding, the registry, the idempotency log and the results cost. Goal: ratio ≥ 0.5.
 *
 * N `create_user` events are produced to a topic of their own before the worker starts; the worker
 * (`bun src/main.ts`, ROLE=db-worker, a child process) then works through the backlog into a fresh
 * schema. Both sides are timed the same way, from their own transactions: `users.created_at`
 * (DEFAULT now(), the start of the transaction that wrote the row) from the first transaction's
 * start to the last one's, over the rows of every transaction but the last (`batchRate`,
 * lib/rate.ts). So neither side's start-up (the worker's group join and first fetch, the floor's
 * first connections) nor its last transaction counts. Floor and worker alternate, `--rounds`
 * times each (default 3; the side that went second goes first in the next round), each run into a
 * fresh schema; the best run of each gives `ratio`, the medians `median_ratio`. The floor's pool
 * has the worker's options (POOL_OPTIONS: its deep pipeline tripled the floor too). A floor on
 * postgres.js's default pool is printed for reference
 * (`ratio_vs_default_pool`).
 *
 * The machine may be shared, so CPU per row is printed too where /proc shows it (PostgreSQL on
 * this machine): the client process's and its PostgreSQL sessions' (not the broker's), and
 * `cpu_ratio` (floor ÷ worker CPU per row), which contention disturbs less than throughput.
 *
 * @example
 * ```sh
 * bun run bench db-worker                  # 200,000 events
 * bun bench/db-worker.ts --events 20000 --rounds 1
 * bun bench/db-worker.ts --in-process      # the role in this process (for profiling)
 * ```
 */
import { readFileSync } from "node:fs";
import type { Options, Sql } from "postgres";
import type { CommandEvent } from "../src/contracts.ts";
import { ensureTopics } from "../src/broker.ts";
import { insertUsersDirect } from "./lib/floor.ts";
import { migrate } from "../src/db/migrations.ts";
import { silentLogger } from "../src/logger.ts";
import { DB_BATCH, POOL_OPTIONS } from "../src/roles/db-worker.ts";
import {
  createUser,
  createWorld,
  produceEvents,
  spawnWorker,
  startWorker,
  waitFor,
  worldConfig,
  type World,
} from "../test/db-worker-harness.ts";
import { withSchema } from "../test/pg.ts";
import { parseArgs } from "./lib/args.ts";
import { batchRate, median, roundOrder, type Rate } from "./lib/rate.ts";
import { recorder, writeLines } from "./lib/report.ts";

export interface DbWorkerBenchOptions {
  events: number;
  /** Run the role in this process instead of as `bun src/main.ts`. */
  inProcess: boolean;
  /** Longest wait for the worker to apply everything. */
  timeoutMs: number;
  /** Floor and worker runs, alternating; the best of each counts. */
  rounds: number;
  print?: (line: string) => void;
}

export interface Cost {
  /** CPU per row or command, in µs: the client process, its PostgreSQL sessions. */
  clientUs: number;
  postgresUs: number;
}

export interface DbWorkerBenchResult {
  events: number;
  batchSize: number;
  worker: { perSecond: number; batches: number; seconds: number; runs: number[]; cost?: Cost };
  floor: { perSecond: number; runs: number[]; cost?: Cost };
  /** Best worker run ÷ best floor run. */
  ratio: number;
  /** Median worker run ÷ median floor run. */
  medianRatio: number;
}

/** The worker should reach this share of the floor. */
export const GOAL = 0.5;
const REPO = new URL("..", import.meta.url).pathname;

export async function benchDbWorker(opts: DbWorkerBenchOptions): Promise<DbWorkerBenchResult> {
  const print = opts.print ?? console.log;
  const batchSize = DB_BATCH.maxMessages;
  const tag = `b${crypto.randomUUID().slice(0, 8)}`;
  const events = Array.from({ length: opts.events }, (_, i) => createUser(i, tag));
  const rows = events.map((e) => ({ name: String(e.payload.name), email: String(e.payload.email) }));

  // The floor gets the worker's pool options (its pipeline depth above all), so the ratio is not
  // flattered by a setting anyone could use; postgres.js's defaults are shown for reference.
  const floorRun = async (options: Options<{}> = POOL_OPTIONS) => {
    const application_name = `kitsune-bench-floor-${crypto.randomUUID().slice(0, 8)}`;
    await using db = await withSchema({ ...options, connection: { application_name } });
    await migrate(db.sql, `${REPO}sql`);
    const before = await sessionsCpu(db.sql, application_name);
    const own = process.cpuUsage();
    const r = await insertUsersDirect(db.sql, rows, batchSize);
    const client = process.cpuUsage(own);
    const after = await sessionsCpu(db.sql, application_name);
    const postgres = after !== undefined && before !== undefined ? after - before : undefined;
    const cost = postgres === undefined ? undefined : { clientUs: ((client.user + client.system) / 1000 / r.rows) * 1000, postgresUs: (postgres / r.rows) * 1000 };
    const window = await transactionWindow(db.sql, rows.length);
    return { perSecond: window.perSecond, seconds: window.seconds, wallPerSecond: (r.rows / r.ms) * 1000, transactions: r.transactions, cost };
  };

  const plain = (await floorRun({})).perSecond;
  print(`floor with postgres.js defaults (reference): ${fmt(plain)} rows/s`);

  // Floor and worker alternate, `rounds` times each, the one that went second going first in the
  // next round; the best of each counts (the machine is noisy), and the medians are printed too.
  const floors: Awaited<ReturnType<typeof floorRun>>[] = [];
  const workers: WorkerRun[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    const tag = opts.rounds > 1 ? ` (round ${round})` : "";
    for (const side of roundOrder(round, ["floor", "worker"] as const)) {
      if (side === "floor") {
        const floor = await floorRun();
        floors.push(floor);
        print(
          `floor: ${fmt(floor.perSecond)} rows/s (${floor.transactions} transactions over ${floor.seconds.toFixed(2)} s; ` +
            `${fmt(floor.wallPerSecond)} rows/s over the whole call)${costText(floor.cost)}${tag}`,
        );
      } else {
        const worker = await workerRound(events, opts);
        workers.push(worker);
        print(`worker: ${fmt(worker.perSecond)} commands/s (${worker.batches} transactions over ${worker.seconds.toFixed(2)} s)${costText(worker.cost)}${tag}`);
      }
    }
  }
  const floor = floors.reduce((x, y) => (y.perSecond > x.perSecond ? y : x));
  const worker = workers.reduce((x, y) => (y.perSecond > x.perSecond ? y : x));
  const ratio = worker.perSecond / floor.perSecond;
  const floorRuns = floors.map((f) => f.perSecond);
  const workerRuns = workers.map((w) => w.perSecond);
  const medianRatio = median(workerRuns) / median(floorRuns);
  const cpu = worker.cost && floor.cost ? total(floor.cost) / total(worker.cost) : undefined;
  print(
    `events=${opts.events} batch=${batchSize} rounds=${opts.rounds} worker=${fmt(worker.perSecond)}/s floor=${fmt(floor.perSecond)}/s ratio=${ratio.toFixed(2)}` +
      ` median: worker=${fmt(median(workerRuns))}/s floor=${fmt(median(floorRuns))}/s median_ratio=${medianRatio.toFixed(2)}` +
      (cpu === undefined ? "" : ` cpu_ratio=${cpu.toFixed(2)}`) +
      ` ratio_vs_default_pool=${(worker.perSecond / plain).toFixed(2)}`,
  );
  return {
    events: opts.events,
    batchSize,
    worker: { ...worker, runs: workerRuns },
    floor: { perSecond: floor.perSecond, runs: floorRuns, cost: floor.cost },
    ratio,
    medianRatio,
  };
}

/**
 * The rate of the transactions that wrote `users` on this connection's schema: `batchRate` over
 * `created_at`, which is now() — the transaction's start — for both the floor and the worker.
 */
async function transactionWindow(sql: Sql, expected: number): Promise<Rate & { transactions: number }> {
  const batches = await sql<{ rows: number; at: number }[]>`
    SELECT count(*)::int AS rows, (extract(epoch FROM created_at) * 1000)::float8 AS at FROM users GROUP BY created_at`;
  const rows = batches.reduce((n, b) => n + b.rows, 0);
  // Commands that failed (dead-lettered) have no row; a run with any is not a throughput figure.
  if (rows !== expected) throw new Error(`bench db-worker: ${rows} users written, expected ${expected}`);
  return { ...batchRate(batches), transactions: batches.length };
}

type WorkerRun = Omit<DbWorkerBenchResult["worker"], "runs">;

/** One worker run: the events produced to a topic of their own, applied into a fresh schema. */
async function workerRound(events: CommandEvent[], opts: DbWorkerBenchOptions): Promise<WorkerRun> {
  const print = opts.print ?? console.log;
  const world = await createWorld({ migrate: true });
  // An interrupted run still removes its topics and schema.
  const interrupted = () => void world.close().finally(() => process.exit(130));
  process.once("SIGINT", interrupted);
  try {
    await ensureTopics(worldConfig(world), silentLogger);
    const produced = performance.now();
    await produceEvents(world.topics.events, events);
    print(`  produced ${events.length} events to ${world.topics.events} in ${((performance.now() - produced) / 1000).toFixed(1)} s`);
    return await runWorker(world, opts);
  } finally {
    process.off("SIGINT", interrupted);
    await world.close();
  }
}

/** Starts the worker on the backlog, waits until every event is applied, reads its rate from its transactions. */
async function runWorker(world: World, opts: DbWorkerBenchOptions): Promise<WorkerRun> {
  const print = opts.print ?? console.log;
  let stop: () => Promise<void>;
  let workerCpu: () => number | undefined;
  if (opts.inProcess) {
    stop = (await startWorker(world)).stop;
    workerCpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
  } else {
    const child = spawnWorker(world, { LOG_LEVEL: "warn" });
    stop = childStopper(child);
    workerCpu = () => processCpu(child.pid);
  }
  // CPU is counted from the first sample that finds commands applied to the last one.
  let start: { n: number; worker?: number; postgres?: number } | undefined;
  let end: typeof start;
  let lastReport = performance.now();
  try {
    await waitFor(
      async () => {
        const n = await world.count("idempotency_log");
        const sample = { n, worker: workerCpu(), postgres: await sessionsCpu(world.db.sql, world.appName) };
        if (n > 0 && !start) start = sample;
        end = sample;
        if (performance.now() - lastReport > 10_000) {
          lastReport = performance.now();
          print(`  … ${n} applied`);
        }
        return n >= opts.events;
      },
      `${opts.events} applied commands`,
      { timeoutMs: opts.timeoutMs, intervalMs: 500 },
    );
  } finally {
    await stop();
  }
  const window = await transactionWindow(world.db.sql, opts.events);
  let cost: Cost | undefined;
  const commands = end!.n - start!.n;
  if (commands > 0 && start?.worker !== undefined && end?.worker !== undefined && start.postgres !== undefined && end.postgres !== undefined) {
    cost = { clientUs: ((end.worker - start.worker) / commands) * 1000, postgresUs: ((end.postgres - start.postgres) / commands) * 1000 };
  }
  return { perSecond: window.perSecond, batches: window.transactions, seconds: window.seconds, cost };
}

function childStopper(child: ReturnType<typeof spawnWorker>): () => Promise<void> {
  const stderr = new Response(child.stderr).text();
  void new Response(child.stdout).text();
  return async () => {
    child.kill("SIGTERM");
    const code = await child.exited;
    if (code !== 0) console.error(`db-worker exited with ${code}:\n${(await stderr).slice(-4000)}`);
  };
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** CPU (user + system, ms) a process has used, from /proc; undefined where /proc cannot say. */
function processCpu(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return undefined;
  }
}

/**
 * CPU (ms) of the PostgreSQL sessions with this application_name, when PostgreSQL runs on this
 * machine and /proc shows its processes; else undefined.
 */
async function sessionsCpu(sql: Sql, applicationName: string): Promise<number | undefined> {
  const rows = await sql<{ pid: number }[]>`SELECT pid FROM pg_stat_activity WHERE application_name = ${applicationName}`;
  let sum = 0;
  for (const { pid } of rows) {
    const cpu = processCpu(pid);
    if (cpu === undefined) return undefined;
    sum += cpu;
  }
  return sum;
}

const total = (c: Cost) => c.clientUs + c.postgresUs;
const costText = (c: Cost | undefined) =>
  c ? `; CPU ${c.clientUs.toFixed(1)} µs client + ${c.postgresUs.toFixed(1)} µs PostgreSQL per row` : "";

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

export async function main(args: string[]): Promise<number> {
  const a = parseArgs(args);
  const { print, lines } = recorder();
  let result: DbWorkerBenchResult | undefined;
  try {
    result = await benchDbWorker({
      events: a.number("events", 200_000),
      inProcess: a.flag("in-process"),
      timeoutMs: a.number("timeout-seconds", 600) * 1000,
      rounds: a.positive("rounds", 3),
      print,
    });
    print(result.ratio >= GOAL ? `goal met (ratio >= ${GOAL})` : `below goal (ratio < ${GOAL})`);
  } finally {
    writeLines("db-worker", `bench db-worker ${args.join(" ")}`.trim(), lines, { result });
  }
  return 0;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
