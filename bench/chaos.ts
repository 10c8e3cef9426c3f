#!/usr/bin/env bun
/**
 * @module bench/chaos
 * Chaos scenarios against the real roles (separate processes) on the local services. Each runs in
 * a sandbox of its own (topics, groups, schema; see `lib/sandbox.ts`), sends commands with a unique
 * email and idempotency key each, disrupts something while they flow, waits until the system has
 * drained, and counts:
 *
 * | column | meaning |
 * |---|---|
 * | sent | requests sent |
 * | accepted | 202 answers (their ids are kept) |
 * | applied | accepted ids with an `applied` row in idempotency_log (joined on event_id) |
 * | duplicates | effects applied more than once: Σ (rows per email − 1) in the effect table |
 * | dead-lettered | messages on `<events>.dlq` (every command is valid, so any is a fault) |
 * | lost | accepted ids that are neither applied nor failed after the drain |
 * | applied w/o 202 | 503 or unanswered, but applied anyway (allowed: the api's answer came before the broker's) |
 * | redelivered | `duplicate` results on db-results: deliveries the idempotency log turned away |
 *
 * Scenarios: 1 `kill -9` of the db-worker (5× in 50,000 commands; odd kills at random moments,
 * even ones while a batch is applied in PostgreSQL but its offsets are not committed — the worker
 * holds it there through a test hook, so the redelivery is certain); 2 PostgreSQL outage (by default this
 * run's backends are terminated in a loop — the shared server stays up for other tests —
 * `--pg-restart` restarts the server); 3 a private broker stopped for 10 s (lib/broker.ts);
 * 4 three db-workers in one group, one killed and one added; 5 `kill -9` of the log-worker (every
 * log line must reach Loki at least once).
 *
 * "Drained" means: every accepted command has a row (or nothing moved for 20 s), every partition
 * has a live member, and 15 s passed since the last kill/start (the consumers' session timeout is
 * 10 s), so redeliveries after the last disruption are counted too.
 *
 * A scenario fails on any loss, duplicate effect, dead letter, or failed check of its own.
 * The commands are `chaos_append` (an INSERT with no unique constraint, added to this run's copy
 * of the registry): `create_user` would turn a second apply into a unique violation, i.e. a dead
 * letter, and hide the duplicate.
 *
 * @example
 * ```sh
 * bun run chaos                 # all five scenarios, short
 * bun run chaos --full          # all five at full size (50,000 commands and five kills for 1, …)
 * bun run chaos --only 1,5      # some of them
 * bun run chaos --only 2 --pg-restart   # restart the PostgreSQL server instead of killing backends
 * ```
 * Options: `--full` · `--only 1,2` · `--rate N` req/s · `--commands N` · `--pg-restart` ·
 * `--broker-mode stop|kill|freeze` · `--keep` · `--no-write`.
 */
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "./lib/args.ts";
import { startBroker, type PrivateBroker } from "./lib/broker.ts";
import { account, drain } from "./lib/db.ts";
import { readResults } from "./lib/results-topic.ts";
import { startLoad, type LoadResult, type LoadRun } from "./lib/load.ts";
import { describeMachine, machine } from "./lib/machine.ts";
import { allAssigned, tail, type RoleName, type RoleProcess } from "./lib/procs.ts";
import { table, writeReport } from "./lib/report.ts";
import { BASE_DSN, createSandbox, topicCount, withParams, type Sandbox } from "./lib/sandbox.ts";
import postgres from "postgres";
import { HELD_LOG, HOLD_BEFORE_COMMIT_ENV } from "../src/roles/db-worker.ts";

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ScenarioResult {
  id: number;
  name: string;
  /** What was done, in words (e.g. which PostgreSQL disruption). */
  disruption: string;
  ok: boolean;
  sent: number;
  accepted: number;
  applied: number;
  duplicates: number;
  deadLettered: number;
  lost: number;
  /** Accepted ids recorded as `failed` by the db-worker. */
  failed: number;
  /** Commands that were not accepted (503, no answer) but were applied anyway — allowed. */
  appliedNotAccepted: number;
  /**
   * Deliveries the idempotency log turned away (`duplicate` results on `db-results`): shows that
   * the disruption really made a db-worker see commands a second time.
   */
  redelivered: number;
  /**
   * Commands in batches a db-worker was killed on while it held them between PostgreSQL and the
   * offset commit (scenario 1's targeted kills): each must come again, so `redelivered` ≥ this.
   */
  heldBeforeCommit: number;
  /** Statuses of every `CommandResult` published. */
  results: Record<string, number>;
  statuses: Record<string, number>;
  /** Log lines of accepted commands found in the (fake) Loki, and repeats it dropped. */
  loki: { expected: number; found: number; repeats: number };
  checks: Check[];
  events: string[];
  seconds: number;
  sandbox: string;
  logs?: string;
}

export interface ScenarioOptions {
  /** Commands to send. */
  commands?: number;
  /** Offered req/s (open loop; `inFlight` caps requests waiting for an answer). */
  rate?: number;
  inFlight?: number;
  keep?: boolean;
  log?: (line: string) => void;
}

interface Ctx {
  box: Sandbox;
  /** Live processes by role (killed ones are removed). */
  live: Map<RoleName, RoleProcess[]>;
  load: LoadRun;
  loadStartEpochMs: number;
  events: string[];
  checks: Check[];
  note(line: string): void;
  /** Marks "something was disrupted now": the drain waits a quiet period after the last one. */
  disrupted(): void;
  spawn(role: RoleName, port?: number, env?: Record<string, string>): Promise<RoleProcess>;
  /** See `ScenarioResult.heldBeforeCommit`. */
  heldBeforeCommit: number;
  kill(p: RoleProcess, signal?: NodeJS.Signals): Promise<void>;
  /** Resolves when the generator has sent `n` requests (or finished). */
  untilSent(n: number): Promise<void>;
  loadDone: Promise<LoadResult>;
}

interface Plan {
  id: number;
  name: string;
  disruption: string;
  commands: number;
  /** Send for this long instead of `commands` requests (`commands` then only sizes the thresholds). */
  seconds?: number;
  rate: number;
  inFlight: number;
  dbWorkers?: number;
  brokers?: string;
  env?: Record<string, string>;
  /** Run alongside the load. */
  disrupt(ctx: Ctx): Promise<void>;
  /** Extra checks once drained. */
  verify?(ctx: Ctx, load: LoadResult): Promise<void> | void;
  /** Wait for every accepted log line in Loki before counting (default: only report). */
  requireLoki?: boolean;
  drainTimeoutMs?: number;
}

const CHAOS_PREFIX = (box: Sandbox) => box.id;

/** Scenario 3: how long after the broker answers again the api may keep answering 503. */
const RECOVERY_LIMIT_MS = 15_000;

/** After the last kill or start: session.timeout.ms (10 s, src/kafka/consumer.ts) plus a rebalance and a batch. */
const QUIET_MS = 15_000;

/** Partition counts of DESIGN.md's topics (src/broker.ts creates them so). */
const PARTITIONS = { events: 6, logs: 3 } as const;

async function runPlan(plan: Plan, { keep = false, log = console.log }: Pick<ScenarioOptions, "keep" | "log">): Promise<ScenarioResult> {
  const started = Date.now();
  log(`\n━━ scenario ${plan.id}: ${plan.name} — ${plan.disruption}`);
  const box = await createSandbox({ name: `chaos${plan.id}`, keep, brokers: plan.brokers, env: { LOG_LEVEL: "info", ...plan.env } });
  const events: string[] = [];
  const checks: Check[] = [];
  const t0 = () => ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  const note = (line: string) => {
    events.push(`${((Date.now() - started) / 1000).toFixed(1)} s ${line}`);
    log(`  [${t0()} s] ${line}`);
  };
  let ok = false;
  let finishing = false;
  try {
    const live = new Map<RoleName, RoleProcess[]>();
    let lastDisruption = Date.now();
    const track = (p: RoleProcess) => live.set(p.role, [...(live.get(p.role) ?? []), p]);
    const untrack = (p: RoleProcess) => live.set(p.role, (live.get(p.role) ?? []).filter((x) => x !== p));
    const killed = new Set<RoleProcess>();
    // Like a supervisor (systemd, Kubernetes): a role that exits on its own is noted as a failed
    // check and started again, so the counts still say whether any data was lost.
    const supervise = (p: RoleProcess) => {
      void p.exited.then(async (code) => {
        if (killed.has(p) || finishing) return;
        untrack(p);
        lastDisruption = Date.now();
        note(`${p.name} (pid ${p.pid}) EXITED on its own with ${code}; starting a new one (see ${p.log})`);
        checks.push({ name: `${p.name} did not exit on its own`, ok: false, detail: `exit code ${code}; last lines:\n${await tail(p.log, 12)}` });
        for (let attempt = 1; attempt <= 5 && !finishing; attempt++) {
          try {
            // The api comes back on its port: the load generator keeps sending there.
            await spawn(p.role, p.role === "api" ? p.port : undefined);
            return;
          } catch (err) {
            note(`could not restart ${p.role} (attempt ${attempt}): ${(err as Error).message.split("\n")[0]}`);
            await Bun.sleep(1000);
          }
        }
      });
    };
    const spawn = async (role: RoleName, port?: number, env?: Record<string, string>) => {
      const p = await box.spawn(role, { ...(port === undefined ? {} : { port }), ...(env ? { env } : {}) });
      lastDisruption = Date.now();
      track(p);
      supervise(p);
      return p;
    };
    const kill = async (p: RoleProcess, signal: NodeJS.Signals = "SIGKILL") => {
      killed.add(p);
      p.kill(signal);
      await p.exited;
      lastDisruption = Date.now();
      untrack(p);
    };

    const dbWorkers = plan.dbWorkers ?? 1;
    await Promise.all([...Array.from({ length: dbWorkers }, () => spawn("db-worker")), spawn("log-worker"), spawn("api")]);
    note(`ready: api, ${dbWorkers} db-worker(s), log-worker (sandbox ${box.id})`);
    const api = live.get("api")![0]!;

    const prefix = CHAOS_PREFIX(box);
    let sentNow = 0;
    const waiters: { n: number; resolve: () => void }[] = [];
    const load = startLoad(
      {
        url: api.url,
        rate: plan.rate,
        ...(plan.seconds ? { seconds: plan.seconds } : { count: plan.commands }),
        concurrency: plan.inFlight,
        command: "chaos_append",
        prefix,
        out: join(box.dir, "requests.tsv"),
        timeoutMs: 30_000,
      },
      (p) => {
        sentNow = p.sent;
        for (const w of waiters.filter((w) => p.sent >= w.n)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
        if (Math.round(p.elapsedMs / 1000) % 10 === 0) note(`load: sent ${p.sent}, in flight ${p.inFlight}, ${JSON.stringify(p.byStatus)}`);
      },
    );
    const loadStartEpochMs = await load.started;
    let finished = false;
    const loadDone = load.done.finally(() => {
      finished = true;
      for (const w of waiters.splice(0)) w.resolve();
    });
    const ctx: Ctx = {
      box,
      live,
      load,
      loadStartEpochMs,
      events,
      checks,
      note,
      disrupted: () => {
        lastDisruption = Date.now();
      },
      spawn,
      kill,
      heldBeforeCommit: 0,
      loadDone,
      untilSent: (n) => (finished || sentNow >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    };
    note(
      `load: ${plan.seconds ? `${plan.seconds} s` : `${plan.commands.toLocaleString("en-US")} commands`} at ${plan.rate} req/s (at most ${plan.inFlight} in flight)`,
    );
    const disruption = plan.disrupt(ctx).catch((err) => {
      checks.push({ name: "disruption ran", ok: false, detail: String((err as Error)?.stack ?? err) });
    });
    const result = await loadDone;
    await disruption;
    note(`load done: ${JSON.stringify(result.byStatus)} in ${(result.elapsedMs / 1000).toFixed(1)} s`);

    // Drain: every accepted command has a row (or nothing moves any more), every partition is
    // assigned to a live worker, and the last kill or start is longer ago than a rebalance takes
    // (session.timeout.ms is 10 s) — so redeliveries after the last kill are in too.
    const quiet = () => Date.now() - lastDisruption >= QUIET_MS;
    const accepted = result.records.filter((r) => r.status === 202).map((r) => ({ id: r.id, key: `${prefix}-${r.seq}` }));
    await account(box.sql, accepted, prefix); // loads bench_accepted for the count below
    const countRows = async () => {
      const [r] = await box.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM bench_accepted a JOIN idempotency_log l ON l.event_id = a.id`;
      return r?.n ?? 0;
    };
    const drained = await drain({
      expected: accepted.length,
      count: countRows,
      settled: async () => quiet() && (await allAssigned(live.get("db-worker") ?? [], box.topics.events, PARTITIONS.events)),
      timeoutMs: plan.drainTimeoutMs ?? 180_000,
      stableMs: 20_000,
      log: note,
    });
    note(`db drained: ${drained.count} of ${accepted.length} accepted have a row (${(drained.ms / 1000).toFixed(1)} s${drained.settled ? "" : ", db-worker group NOT settled"})`);
    if (!drained.settled) checks.push({ name: "db-worker group settled", ok: false, detail: "some partition of db-events had no live member in time" });

    // Loki: every accepted command's log line, at least once.
    const acceptedIds = new Set(accepted.map((a) => a.id));
    const inLoki = new Set<string>();
    let scanned = 0;
    const lokiFound = () => {
      const entries = box.loki.entries;
      for (; scanned < entries.length; scanned++) {
        const id = lineId(entries[scanned]!.line);
        if (id && acceptedIds.has(id)) inLoki.add(id);
      }
      return inLoki.size;
    };
    let lokiSeen = -1;
    let lokiMoved = Date.now();
    const lokiQuiet = () => {
      const n = box.loki.counters.accepted + box.loki.counters.duplicates;
      if (n !== lokiSeen) [lokiSeen, lokiMoved] = [n, Date.now()];
      return Date.now() - lokiMoved >= 5000;
    };
    const lokiDrained = await drain({
      expected: acceptedIds.size,
      count: async () => lokiFound(),
      settled: async () => quiet() && lokiQuiet() && (await allAssigned(live.get("log-worker") ?? [], box.topics.logs, PARTITIONS.logs)),
      timeoutMs: plan.requireLoki ? 120_000 : 45_000,
      stableMs: 15_000,
      log: plan.requireLoki ? note : undefined,
    });
    const found = lokiFound();
    note(`Loki drained: ${found} of ${acceptedIds.size} accepted log lines (${(lokiDrained.ms / 1000).toFixed(1)} s${lokiDrained.settled ? "" : ", log-worker group NOT settled"})`);
    if (plan.requireLoki && !lokiDrained.settled) checks.push({ name: "log-worker group settled", ok: false, detail: "some partition of app-logs had no live member, or Loki kept receiving, in time" });

    const counts = await account(box.sql, accepted, prefix);
    const deadLettered = topicCount(box.brokers, `${box.topics.events}.dlq`) ?? Number.NaN;
    const published = topicCount(box.brokers, box.topics.results) ?? 0;
    const results = await readResults(box.brokers, box.topics.results, published);
    await plan.verify?.(ctx, result);

    const lost = accepted.length - counts.applied - counts.failed;
    const redelivered = results.byStatus.duplicate ?? 0;
    if (ctx.heldBeforeCommit > 0) {
      checks.push({
        name: "every batch held before its offset commit was delivered again",
        ok: redelivered >= ctx.heldBeforeCommit,
        detail: `${redelivered} duplicate results for ${ctx.heldBeforeCommit} commands held`,
      });
    }
    const loki = { expected: acceptedIds.size, found, repeats: box.loki.counters.duplicates };
    if (plan.requireLoki) {
      checks.push({ name: "every accepted log line reached Loki", ok: found === acceptedIds.size, detail: `${found} of ${acceptedIds.size}` });
    }
    checks.push({ name: "event ids match the 202 ids", ok: counts.idMismatches === 0, detail: `${counts.idMismatches} mismatches` });
    ok =
      lost === 0 &&
      counts.duplicateEffects === 0 &&
      counts.failed === 0 &&
      deadLettered === 0 &&
      accepted.length > 0 &&
      checks.every((c) => c.ok);
    const res: ScenarioResult = {
      id: plan.id,
      name: plan.name,
      disruption: plan.disruption,
      ok,
      sent: result.records.length,
      accepted: accepted.length,
      applied: counts.applied,
      duplicates: counts.duplicateEffects,
      deadLettered,
      lost,
      failed: counts.failed,
      appliedNotAccepted: counts.appliedNotAccepted,
      redelivered,
      heldBeforeCommit: ctx.heldBeforeCommit,
      results: results.byStatus,
      statuses: result.byStatus,
      loki,
      checks,
      events,
      seconds: Math.round((Date.now() - started) / 100) / 10,
      sandbox: box.id,
    };
    log(renderScenario(res));
    return res;
  } finally {
    finishing = true;
    await box.cleanup({ keepLogs: !ok });
    if (!ok) log(`  logs kept in ${box.dir}`);
  }
}

function lineId(line: string): string | undefined {
  try {
    return (JSON.parse(line) as { id?: string }).id;
  } catch {
    return undefined;
  }
}

// ── the scenarios ────────────────────────────────────────────────────────────────────────────

export interface DbKillOptions extends ScenarioOptions {
  kills?: number;
}

/** 1. `kill -9` the db-worker `kills` times while the commands flow; a new one starts each time. */
export function dbWorkerKills({ commands = 50_000, kills = 5, rate = 1000, inFlight = 1000, ...rest }: DbKillOptions = {}): Promise<ScenarioResult> {
  return runPlan(
    {
      id: 1,
      name: "db-worker kill -9",
      disruption: `kill -9 the db-worker ${kills}× during ${commands.toLocaleString("en-US")} commands, a new one started after each`,
      commands,
      rate,
      inFlight,
      async disrupt(ctx) {
        // Odd kills land at a random moment, spread over the load. Each even kill lands on a
        // replacement started with the test hook HOLD_BEFORE_COMMIT_ENV (src/roles/db-worker.ts):
        // its first batch is applied in PostgreSQL and its results published, but its offsets are
        // never committed. Killed there, the batch is certainly delivered again, and the
        // idempotency log must turn it away.
        const spread = Math.ceil(kills / 2) + 1;
        const hold = { [HOLD_BEFORE_COMMIT_ENV]: "1" };
        let atLastKill = 0;
        for (let i = 1; i <= kills; i++) {
          const targeted = i % 2 === 0;
          const victim = ctx.live.get("db-worker")![0]!;
          let held = 0;
          if (targeted) {
            held = await heldBatch(victim, 90_000);
            ctx.heldBeforeCommit += held;
          } else {
            await ctx.untilSent(Math.floor((commands * Math.ceil(i / 2)) / spread));
            await Bun.sleep(Math.random() * 1000);
          }
          await ctx.kill(victim);
          atLastKill = await processed(ctx);
          ctx.note(
            `kill -9 ${victim.name} (pid ${victim.pid}) #${i}, ${targeted ? `while it held a batch of ${held} applied commands before their offset commit` : "at a random moment"}; ${atLastKill} rows so far`,
          );
          const next = await ctx.spawn("db-worker", undefined, i + 1 <= kills && (i + 1) % 2 === 0 ? hold : undefined);
          ctx.note(`${next.name} ready (pid ${next.pid})`);
          // A random kill should hit a member that is applying batches, not one still joining:
          // wait until rows move again (the dead member's partitions wait for its session timeout).
          if (i < kills && !(i % 2 === 1)) {
            await untilRowsMove(ctx, atLastKill, 90_000, 200);
            ctx.note(`${next.name} applying (${await processed(ctx)} rows)`);
          }
        }
      },
    },
    rest,
  );
}

/** Waits until `p` logs that it holds a batch before its offset commit; returns the batch's size. */
async function heldBatch(p: RoleProcess, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of (await Bun.file(p.log).text()).split("\n")) {
      if (!line.includes(HELD_LOG)) continue;
      return (JSON.parse(line) as { messages: number }).messages;
    }
    if (Date.now() > deadline) throw new Error(`${p.name} did not hold a batch within ${timeoutMs} ms\n${await tail(p.log)}`);
    await Bun.sleep(50);
  }
}

async function untilRowsMove(ctx: Ctx, from: number, timeoutMs: number, pollMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await processed(ctx)) <= from && Date.now() < deadline) await Bun.sleep(pollMs);
}

export interface PgOptions extends ScenarioOptions {
  /** Restart the server (`pg_ctlcluster … restart`) instead of terminating this run's backends. */
  restart?: boolean;
  /** How long backends are terminated (terminate mode). */
  seconds?: number;
}

/** 2. PostgreSQL goes away during the load: restart, or this run's backends terminated in a loop. */
export function postgresOutage({ commands = 20_000, rate = 1000, inFlight = 1000, restart = false, seconds = 8, ...rest }: PgOptions = {}): Promise<ScenarioResult> {
  const disruption = restart
    ? "PostgreSQL server restarted (pg_ctlcluster --skip-systemctl-redirect <ver> main restart) during the load"
    : `every PostgreSQL backend of this run's db-worker terminated (pg_terminate_backend) every 100 ms for ${seconds} s, twice, during the load — the server itself stays up for other users`;
  return runPlan(
    {
      id: 2,
      name: "PostgreSQL outage",
      disruption,
      commands,
      rate,
      inFlight,
      async disrupt(ctx) {
        await ctx.untilSent(Math.floor(commands * 0.25));
        if (restart) {
          const version = pgVersion();
          ctx.note(`restarting PostgreSQL ${version}/main`);
          const r = Bun.spawnSync(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], { stderr: "pipe" });
          ctx.disrupted();
          ctx.note(`pg_ctlcluster restart exited ${r.exitCode}${r.success ? "" : `: ${r.stderr.toString().trim()}`}`);
          if (!r.success) throw new Error(`pg_ctlcluster restart failed: ${r.stderr}`);
          return;
        }
        const admin = postgres(withParams(BASE_DSN, { application_name: `${ctx.box.id}-chaos` }), { max: 1, onnotice: () => {} });
        try {
          for (const at of [0.25, 0.6]) {
            await ctx.untilSent(Math.floor(commands * at));
            let terminated = 0;
            const until = Date.now() + seconds * 1000;
            ctx.note(`terminating backends of ${ctx.box.id}-db-worker for ${seconds} s`);
            while (Date.now() < until) {
              const rows = await admin`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = ${`${ctx.box.id}-db-worker`}`;
              terminated += rows.filter((r) => r.ok).length;
              await Bun.sleep(100);
            }
            ctx.disrupted();
            ctx.note(`stopped terminating: ${terminated} backends terminated`);
          }
        } finally {
          await admin.end({ timeout: 2 });
        }
      },
      verify(ctx) {
        // The db-worker must have survived (the breaker waits PostgreSQL out instead of crashing).
        const workers = ctx.box.processes.filter((p) => p.role === "db-worker");
        const first = workers[0]!;
        ctx.checks.push({
          name: "db-worker survived the outage",
          ok: first.proc.exitCode === null,
          detail: first.proc.exitCode === null ? "the first db-worker ran throughout" : `${first.name} exited with ${first.proc.exitCode}`,
        });
      },
    },
    rest,
  );
}

function pgVersion(): string {
  const r = Bun.spawnSync(["pg_lsclusters", "-h"], { stdout: "pipe" });
  const version = r.stdout.toString().trim().split(/\s+/)[0];
  if (!version) throw new Error("pg_lsclusters found no cluster");
  return version;
}

export interface BrokerOptions extends ScenarioOptions {
  /** `stop` (SIGTERM, then start again), `kill` (SIGKILL, then start), `freeze` (SIGSTOP/SIGCONT). */
  mode?: "stop" | "kill" | "freeze";
  downSeconds?: number;
  /** Load before the broker goes down, and after it is back, in seconds. */
  before?: number;
  after?: number;
}

/**
 * 3. The broker stopped for `downSeconds` during the load. A private broker (lib/broker.ts) so the
 * shared one keeps serving other tests. While it is down the api must answer 503 (never 202), it
 * must accept again once the broker is back, and every 202 must be applied. The load is timed:
 * `before` s, the outage, then `after` s from the moment the broker answers again.
 */
export async function brokerOutage({
  rate = 300,
  inFlight = 2000,
  mode = "stop",
  downSeconds = 10,
  before = 8,
  after = 25,
  keep,
  log = console.log,
}: BrokerOptions = {}): Promise<ScenarioResult> {
  const dir = join(process.env.BENCH_TMP ?? join(tmpdir(), "kitsune-bench"), `broker-${crypto.randomUUID().slice(0, 8)}`);
  log(`\nstarting a private Kafka for scenario 3 (${dir})`);
  let broker: PrivateBroker | undefined;
  let passed = false;
  try {
    broker = await startBroker({ dir });
    const b = broker;
    let downAt = 0;
    let upAt = 0;
    let readyAt = 0;
    const result = await runPlan(
      {
        id: 3,
        name: "broker outage",
        disruption: `private Kafka ${mode === "freeze" ? "frozen (SIGSTOP)" : mode === "kill" ? "killed (SIGKILL)" : "stopped (SIGTERM, as services.sh down)"} for ${downSeconds} s during the load, then ${mode === "freeze" ? "resumed (SIGCONT)" : "started again on the same data"}`,
        commands: rate * (before + downSeconds + after),
        seconds: 600, // stopped by the disruption
        rate,
        inFlight,
        brokers: b.bootstrap,
        drainTimeoutMs: 240_000,
        async disrupt(ctx) {
          await Bun.sleep(before * 1000);
          downAt = Date.now();
          if (mode === "freeze") b.freeze();
          else if (mode === "kill") await b.kill();
          else await b.stop();
          ctx.note(`broker down (${mode}, took ${Date.now() - downAt} ms)`);
          await Bun.sleep(Math.max(0, downAt + downSeconds * 1000 - Date.now()));
          upAt = Date.now();
          if (mode === "freeze") b.thaw();
          else await b.start();
          readyAt = Date.now();
          ctx.disrupted();
          ctx.note(`broker back after ${((upAt - downAt) / 1000).toFixed(1)} s down (answering metadata ${readyAt - upAt} ms after the restart began)`);
          await Bun.sleep(after * 1000);
          ctx.load.stop();
        },
        verify(ctx, load) {
          // Answers given while the broker was certainly down: from 1 s after it went until it came back.
          const from = downAt + 1000 - ctx.loadStartEpochMs;
          const to = upAt - ctx.loadStartEpochMs;
          const during = load.records.filter((r) => r.doneMs >= from && r.doneMs <= to);
          const by: Record<string, number> = {};
          for (const r of during) by[r.status] = (by[r.status] ?? 0) + 1;
          ctx.note(`answers while the broker was down: ${JSON.stringify(by)}`);
          ctx.checks.push({ name: "api answered 503 while the broker was down", ok: (by["503"] ?? 0) > 0, detail: JSON.stringify(by) });
          ctx.checks.push({ name: "no 202 while the broker was down", ok: (by["202"] ?? 0) === 0, detail: `${by["202"] ?? 0} × 202` });
          // Recovery: from the broker answering metadata again to the first request after which
          // every request got its 202 (the transactional producer must find its coordinator again).
          const since = readyAt - ctx.loadStartEpochMs;
          const after = load.records.filter((r) => r.sentMs >= since).sort((a, b) => a.sentMs - b.sentMs);
          let lastRefused = -1;
          after.forEach((r, i) => {
            if (r.status !== 202) lastRefused = i;
          });
          const recovered = lastRefused + 1 < after.length ? after[lastRefused + 1]!.sentMs - since : Number.NaN;
          ctx.note(`api accepting again ${(recovered / 1000).toFixed(1)} s after the broker answered metadata`);
          ctx.checks.push({
            name: "api accepts again once the broker is back",
            ok: Number.isFinite(recovered) && recovered <= RECOVERY_LIMIT_MS,
            detail: Number.isFinite(recovered)
              ? `every request sent from ${(recovered / 1000).toFixed(1)} s after the broker answered again got 202 (limit ${RECOVERY_LIMIT_MS / 1000} s)`
              : "the api never accepted every request again",
          });
        },
      },
      { keep, log },
    );
    passed = result.ok;
    return result;
  } finally {
    await broker?.destroy();
    if (passed && !keep) rmSync(dir, { recursive: true, force: true });
  }
}

/** 4. Three db-workers in one group; one is killed (-9) and one added while the commands flow. */
export function rebalance({ commands = 20_000, rate = 1000, inFlight = 1000, ...rest }: ScenarioOptions = {}): Promise<ScenarioResult> {
  return runPlan(
    {
      id: 4,
      name: "db-worker group rebalance",
      disruption: "three db-workers in one group; one killed with kill -9 at 1/3 of the load, a fourth added at 2/3",
      commands,
      rate,
      inFlight,
      dbWorkers: 3,
      async disrupt(ctx) {
        await ctx.untilSent(Math.floor(commands / 3));
        const victim = ctx.live.get("db-worker")![1]!;
        await ctx.kill(victim);
        ctx.note(`kill -9 ${victim.name} (pid ${victim.pid})`);
        await ctx.untilSent(Math.floor((commands * 2) / 3));
        const added = await ctx.spawn("db-worker");
        ctx.note(`added ${added.name} (pid ${added.pid})`);
      },
    },
    rest,
  );
}

export interface LogKillOptions extends ScenarioOptions {
  kills?: number;
}

/** 5. `kill -9` the log-worker during the load: every log line still reaches Loki at least once. */
export function logWorkerKill({ commands = 20_000, rate = 1000, inFlight = 1000, kills = 2, ...rest }: LogKillOptions = {}): Promise<ScenarioResult> {
  const lokiHeld: { lines: number; repeatsAtKill: number }[] = [];
  return runPlan(
    {
      id: 5,
      name: "log-worker kill -9",
      disruption: `kill -9 the log-worker ${kills}× during the load, a new one started after each`,
      commands,
      rate,
      inFlight,
      requireLoki: true,
      async disrupt(ctx) {
        // Odd kills land at a random moment; even kills while Loki holds back its answer to the
        // pushes it stored — before the log-worker can commit their offsets, so those lines must
        // be shipped again (Loki drops the repeats: same stream, timestamp and line).
        for (let i = 1; i <= kills; i++) {
          await ctx.untilSent(Math.floor((commands * i) / (kills + 1)));
          const targeted = i % 2 === 0;
          const loki = ctx.box.loki;
          const received = () => loki.counters.accepted + loki.counters.duplicates;
          let held = 0;
          const release = Promise.withResolvers<void>();
          if (targeted) {
            // Every push stored from here on is held unanswered until the worker is dead.
            const from = received();
            const first = Promise.withResolvers<void>();
            loki.holdAnswers(async () => {
              first.resolve();
              await release.promise;
            });
            let timer: ReturnType<typeof setTimeout> | undefined;
            await Promise.race([first.promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, 60_000)))]);
            clearTimeout(timer);
            held = received() - from;
          } else {
            await Bun.sleep(Math.random() * 1000);
          }
          const victim = ctx.live.get("log-worker")![0]!;
          await ctx.kill(victim);
          if (targeted) {
            loki.holdAnswers(undefined);
            release.resolve();
            lokiHeld.push({ lines: held, repeatsAtKill: loki.counters.duplicates });
          }
          ctx.note(
            `kill -9 ${victim.name} (pid ${victim.pid}) #${i}, ${targeted ? `while Loki held its answer to ${held} stored lines` : "at a random moment"}; ${loki.counters.accepted} lines in Loki so far`,
          );
          const next = await ctx.spawn("log-worker");
          ctx.note(`${next.name} ready (pid ${next.pid})`);
        }
      },
      verify(ctx) {
        // Each targeted kill: the unanswered lines came again (a repeat each, at least).
        for (const [i, { lines, repeatsAtKill }] of lokiHeld.entries()) {
          const repeats = ctx.box.loki.counters.duplicates - repeatsAtKill;
          ctx.checks.push({
            name: `lines stored but unanswered at targeted kill ${i + 1} were shipped again`,
            ok: lines > 0 && repeats >= lines,
            detail: `${lines} lines held, ${repeats} repeats since`,
          });
        }
      },
    },
    rest,
  );
}

async function processed(ctx: Ctx): Promise<number> {
  const [r] = await ctx.box.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM idempotency_log`;
  return r?.n ?? 0;
}

// ── output ───────────────────────────────────────────────────────────────────────────────────

export function renderScenario(r: ScenarioResult): string {
  const other = Object.entries(r.statuses)
    .filter(([s]) => s !== "202")
    .map(([s, n]) => `${s === "0" ? "no answer" : s}: ${n}`)
    .join(", ");
  const lines = [
    `  ${r.ok ? "PASS" : "FAIL"} scenario ${r.id} (${r.name}) in ${r.seconds} s`,
    `  sent ${r.sent} · accepted ${r.accepted} · applied ${r.applied} · duplicates ${r.duplicates} · dead-lettered ${r.deadLettered} · lost ${r.lost}`,
    `  other answers: ${other || "none"} · applied without a 202: ${r.appliedNotAccepted} · failed rows: ${r.failed} · redelivered (turned away by the idempotency log): ${r.redelivered} · Loki: ${r.loki.found}/${r.loki.expected} lines (${r.loki.repeats} repeats dropped)`,
    ...r.checks.map((c) => `  ${c.ok ? "✓" : "✗"} ${c.name}: ${c.detail}`),
  ];
  return lines.join("\n");
}

export function renderMarkdown(results: ScenarioResult[], header: string): string {
  return `# Kitsune chaos scenarios — ${new Date().toISOString()}

${header}

${table(
  ["#", "scenario", "result", "sent", "accepted (202)", "applied", "duplicates", "dead-lettered", "lost", "other answers", "applied w/o 202", "redelivered", "Loki lines", "s"],
  results.map((r) => [
    r.id,
    r.name,
    r.ok ? "PASS" : "**FAIL**",
    r.sent,
    r.accepted,
    r.applied,
    r.duplicates,
    r.deadLettered,
    r.lost,
    Object.entries(r.statuses)
      .filter(([s]) => s !== "202")
      .map(([s, n]) => `${s === "0" ? "none" : s}: ${n}`)
      .join(", ") || "–",
    r.appliedNotAccepted,
    r.redelivered,
    `${r.loki.found}/${r.loki.expected}`,
    r.seconds,
  ]),
)}

${results
  .map(
    (r) => `## ${r.id}. ${r.name} — ${r.ok ? "PASS" : "FAIL"}

${r.disruption}.

${r.checks.map((c) => `- ${c.ok ? "✓" : "✗"} ${c.name}: ${c.detail}`).join("\n")}

<details><summary>timeline</summary>

\`\`\`
${r.events.join("\n")}
\`\`\`
</details>
`,
  )
  .join("\n")}`;
}

export const SIZES = {
  short: {
    1: { commands: 5_000, kills: 2, rate: 500 },
    2: { commands: 4_000, rate: 400, seconds: 4 },
    3: { commands: 0, rate: 300 },
    4: { commands: 5_000, rate: 500 },
    5: { commands: 3_000, rate: 500, kills: 2 },
  },
  full: {
    1: { commands: 50_000, kills: 5, rate: 1000 },
    2: { commands: 20_000, rate: 1000, seconds: 8 },
    3: { commands: 0, rate: 500 },
    4: { commands: 20_000, rate: 1000 },
    5: { commands: 20_000, rate: 1000, kills: 4 },
  },
} as const;

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const size = args.flag("full") ? "full" : "short";
  const only = args.numbers("only", [1, 2, 3, 4, 5]);
  const keep = args.flag("keep");
  const m = machine();
  const header = `Machine: ${describeMachine(m)}. Size: ${size}.`;
  console.log(`kitsune chaos — ${header}`);
  const sizes = SIZES[size];
  const override = <T extends { commands: number; rate: number }>(s: T): T => ({
    ...s,
    commands: args.number("commands", s.commands),
    rate: args.number("rate", s.rate),
  });
  const results: ScenarioResult[] = [];
  for (const id of only) {
    try {
      switch (id) {
        case 1:
          results.push(await dbWorkerKills({ ...override(sizes[1]), kills: args.number("kills", sizes[1].kills), keep }));
          break;
        case 2:
          results.push(await postgresOutage({ ...override(sizes[2]), restart: args.flag("pg-restart"), keep }));
          break;
        case 3:
          results.push(await brokerOutage({ ...override(sizes[3]), mode: args.string("broker-mode", "stop") as BrokerOptions["mode"], keep }));
          break;
        case 4:
          results.push(await rebalance({ ...override(sizes[4]), keep }));
          break;
        case 5:
          results.push(await logWorkerKill({ ...override(sizes[5]), keep }));
          break;
        default:
          console.error(`no scenario ${id} (1–5)`);
          return 2;
      }
    } catch (err) {
      console.error(`scenario ${id} could not run: ${(err as Error)?.stack ?? err}`);
      results.push({
        id,
        name: `scenario ${id}`,
        disruption: "did not run",
        ok: false,
        sent: 0,
        accepted: 0,
        applied: 0,
        duplicates: 0,
        deadLettered: 0,
        lost: 0,
        failed: 0,
        appliedNotAccepted: 0,
        redelivered: 0,
        heldBeforeCommit: 0,
        results: {},
        statuses: {},
        loki: { expected: 0, found: 0, repeats: 0 },
        checks: [{ name: "ran", ok: false, detail: String((err as Error)?.message ?? err) }],
        events: [],
        seconds: 0,
        sandbox: "",
      });
    }
  }
  const markdown = renderMarkdown(results, header);
  console.log(`\n${markdown.split("\n## ")[0]}`);
  if (!args.flag("no-write")) {
    const paths = writeReport("chaos", { json: { kind: "chaos", date: new Date().toISOString(), size, machine: m, results }, markdown });
    console.log(`written: ${paths.json}, ${paths.markdown}`);
  }
  const failed = results.filter((r) => !r.ok);
  console.log(failed.length ? `FAILED: ${failed.map((r) => r.id).join(", ")}` : "all scenarios passed");
  return failed.length ? 1 : 0;
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
