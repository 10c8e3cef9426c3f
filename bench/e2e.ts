#!/usr/bin/env bun
/**
 * @module bench/e2e
 * End to end: the three roles as separate processes on the local Kafka and PostgreSQL (topics,
 * consumer groups and schema of this run only; a fake Loki receiver in this process), driven
 * with `POST /execute` at fixed rates and then at the maximum. For each phase it reports:
 *
 * - HTTP: answered req/s, 202/s, latency p50/p99/p99.9 of the 202s, measured by an open-loop
 *   generator in a separate process from each request's due time (no coordinated omission);
 * - commit: request received → row committed, from the database's own timestamps (see
 *   `lib/db.ts`), p50/p99/p99.9, and the rate the db-worker applied rows at;
 * - drain: how long after the last answer the db-worker needed to apply every accepted command.
 *
 * Results: `bench/results/<date>.e2e.{json,md,svg}`.
 *
 * @example
 * ```sh
 * bun run bench e2e                               # 1,000 and 5,000 req/s and max, 30 s each
 * bun run bench e2e --seconds 10 --rates 500,2000 # shorter
 * bun bench/e2e.ts --seconds 5 --no-max --keep    # keep schema, topics and logs
 * ```
 * Options: `--seconds N` per phase · `--rates a,b` fixed rates · `--no-max` · `--max-concurrency N`
 * (closed-loop workers of the max phase, default 256) · `--in-flight N` (open-loop cap, default 4096)
 * · `--warmup N` seconds · `--transactions false` (KAFKA_TRANSACTIONS) · `--keep` · `--no-write`.
 */
import { join } from "node:path";
import { parseArgs } from "./lib/args.ts";
import { appliedRate, commitLatencies, drain, lastProcessedMs, processedCount } from "./lib/db.ts";
import { httpFigures, startLoad, type HttpFigures } from "./lib/load.ts";
import { describeMachine, machine, type Machine } from "./lib/machine.ts";
import { table, writeReport } from "./lib/report.ts";
import { createSandbox, type Sandbox } from "./lib/sandbox.ts";
import { distribution, fmt, sorted, summarize, type Summary } from "./lib/stats.ts";
import { percentilePlot, type Series } from "./lib/svg.ts";

export interface PhaseResult {
  name: string;
  /** Target req/s; 0 = maximum (closed loop). */
  rate: number;
  seconds: number;
  concurrency: number;
  http: HttpFigures;
  commit: { latencyMs: Summary; appliedPerSecond: number; applied: number };
  /** From the last HTTP answer until every accepted command was applied. */
  drainMs: number;
  drained: boolean;
  /** Percentile curves for the plot (not written to the JSON). */
  curves?: { http: { p: number; value: number }[]; commit: { p: number; value: number }[] };
}

export interface E2eResult {
  kind: "e2e";
  date: string;
  machine: Machine;
  settings: Record<string, unknown>;
  phases: PhaseResult[];
  notes: string[];
}

const print = (line: string) => console.log(line);

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const seconds = args.number("seconds", 30);
  const rates = args.numbers("rates", [1000, 5000]);
  const withMax = !args.flag("no-max");
  const maxConcurrency = args.number("max-concurrency", 256);
  const inFlight = args.number("in-flight", 4096);
  const warmup = args.number("warmup", 3);
  const transactions = args.string("transactions", "true");
  const keep = args.flag("keep");

  const m = machine();
  print(`kitsune e2e benchmark — ${describeMachine(m)}`);
  const box = await createSandbox({ name: "e2e", keep, lokiStore: false, env: { KAFKA_TRANSACTIONS: transactions, LOG_LEVEL: "warn" } });
  print(`sandbox ${box.id} (logs in ${box.dir})`);
  let ok = false;
  try {
    const [db, logw, api] = await Promise.all([box.spawn("db-worker"), box.spawn("log-worker"), box.spawn("api")]);
    print(`roles ready: api ${api.url} (pid ${api.pid}), db-worker pid ${db.pid}, log-worker pid ${logw.pid}`);

    let acceptedSoFar = 0;
    const runPhase = async (name: string, rate: number, secs: number, concurrency: number, quiet = false): Promise<PhaseResult> => {
      const prefix = `${box.id}-${name}`;
      if (!quiet) print(`\n▶ ${name}: ${rate ? `${rate.toLocaleString("en-US")} req/s` : `max (${concurrency} concurrent)`} for ${secs} s`);
      const load = startLoad(
        { url: api.url, rate, seconds: secs, concurrency, command: "create_user", prefix, out: join(box.dir, `${name}.tsv`) },
        (p) => {
          if (!quiet && Math.round(p.elapsedMs / 1000) % 5 === 0) {
            print(`  ${Math.round(p.elapsedMs / 1000)} s: sent ${p.sent.toLocaleString("en-US")}, in flight ${p.inFlight}, ${JSON.stringify(p.byStatus)}`);
          }
        },
      );
      const result = await load.done;
      const http = httpFigures(result);
      const drained = await drain({
        expected: http.accepted,
        count: () => processedCount(box.sql, prefix),
        timeoutMs: 300_000,
        log: quiet ? undefined : print,
      });
      // From the last answer to the last row committed, by the database's clock.
      const drainMs = Math.max(0, (await lastProcessedMs(box.sql, prefix)) - (result.startEpochMs + result.elapsedMs));
      acceptedSoFar += http.accepted;
      // The log-worker competes for the same cores: let it catch up so the next phase starts idle.
      const lokiDeadline = Date.now() + 120_000;
      while (box.loki.counters.accepted < acceptedSoFar && Date.now() < lokiDeadline) await Bun.sleep(250);
      const latencies = await commitLatencies(box.sql, prefix);
      const rateApplied = await appliedRate(box.sql, prefix);
      const phase: PhaseResult = {
        name,
        rate,
        seconds: secs,
        concurrency,
        http,
        commit: { latencyMs: summarize(latencies), appliedPerSecond: rateApplied.perSecond, applied: rateApplied.rows },
        drainMs,
        drained: drained.complete,
        curves: {
          http: distribution(sorted(result.records.filter((r) => r.status === 202).map((r) => r.doneMs - r.dueMs))),
          commit: distribution(sorted(latencies)),
        },
      };
      if (!quiet) print(phaseLine(phase));
      return phase;
    };

    if (warmup > 0) {
      print(`warm-up: 200 req/s for ${warmup} s`);
      await runPhase("warmup", 200, warmup, 512, true);
    }
    const phases: PhaseResult[] = [];
    for (const rate of rates) phases.push(await runPhase(`r${rate}`, rate, seconds, inFlight));
    if (withMax) phases.push(await runPhase("max", 0, seconds, maxConcurrency));

    const notes = [
      "HTTP latency is measured from each request's due time by an open-loop generator (a separate Bun process, fetch); in the max phase the loop is closed, so it is plain response time.",
      "Commit latency = idempotency_log.processed_at (now() of the db-worker's batch transaction, i.e. its start) minus the millisecond timestamp of the command's UUIDv7 id (made when the api received the request); it is short of the true commit time by the batch's duration.",
      "All processes (load generator, api, db-worker, log-worker, fake Loki, Kafka, PostgreSQL) share this machine's cores; other work on the machine adds noise (see load at start).",
    ];
    const date = new Date();
    const settings = { seconds, rates, withMax, maxConcurrency, inFlight, warmup, transactions, command: "create_user v1", sandbox: box.id };
    const result: E2eResult = {
      kind: "e2e",
      date: date.toISOString(),
      machine: m,
      settings,
      phases: phases.map(({ curves, ...p }) => p),
      notes,
    };
    const markdown = renderMarkdown(result);
    const svg = percentilePlot({
      title: "Kitsune end to end: latency by percentile",
      subtitle: `solid: POST /execute → 202; dashed: received → committed · ${m.cores} cores, ${m.memoryGiB} GiB · ${date.toISOString().slice(0, 16)}Z`,
      series: phases.flatMap((p, i): Series[] => [
        { name: `${loadLabel(p)} HTTP`, points: p.curves!.http, color: COLORS[i % COLORS.length] },
        { name: `${loadLabel(p)} commit`, points: p.curves!.commit, dashed: true, color: COLORS[i % COLORS.length] },
      ]),
    });
    print(`\n${markdown}`);
    if (!args.flag("no-write")) {
      const paths = writeReport("e2e", { json: result, markdown, svg }, { date });
      print(`written: ${paths.json}, ${paths.markdown}, ${paths.svg}`);
    }
    ok = phases.every((p) => p.drained);
    if (!ok) print("some phase did not drain: accepted commands were not all applied within the time limit (see the drain column)");
    return ok ? 0 : 1;
  } finally {
    await box.cleanup({ keepLogs: !ok });
    if (!ok) print(`logs kept in ${box.dir}`);
  }
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

const loadLabel = (p: PhaseResult) => (p.rate ? `${p.rate.toLocaleString("en-US")}/s` : `max (${p.concurrency})`);

function phaseLine(p: PhaseResult): string {
  const h = p.http;
  return (
    `  ${h.reqPerSecond.toFixed(0)} req/s answered (${h.acceptedPerSecond.toFixed(0)} 202/s), statuses ${JSON.stringify(h.byStatus)}; ` +
    `HTTP p50 ${fmt(h.latencyMs.p50)} p99 ${fmt(h.latencyMs.p99)} p99.9 ${fmt(h.latencyMs.p999)} ms; ` +
    `commit p50 ${fmt(p.commit.latencyMs.p50)} p99 ${fmt(p.commit.latencyMs.p99)} ms; applied ${p.commit.appliedPerSecond.toFixed(0)} rows/s; drained ${(p.drainMs / 1000).toFixed(1)} s after the last answer${p.drained ? "" : " (INCOMPLETE)"}`
  );
}

export function renderMarkdown(r: E2eResult): string {
  const m = r.machine;
  const rows = r.phases.map((p) => [
    p.rate ? `${p.rate.toLocaleString("en-US")} req/s` : `max (${p.concurrency} concurrent)`,
    p.seconds,
    p.http.requests.toLocaleString("en-US"),
    fmt(p.http.reqPerSecond),
    fmt(p.http.acceptedPerSecond),
    Object.entries(p.http.byStatus)
      .filter(([s]) => s !== "202")
      .map(([s, n]) => `${s === "0" ? "no answer" : s}: ${n}`)
      .join(", ") || "–",
    fmt(p.http.latencyMs.p50),
    fmt(p.http.latencyMs.p99),
    fmt(p.http.latencyMs.p999),
    fmt(p.commit.latencyMs.p50),
    fmt(p.commit.latencyMs.p99),
    fmt(p.commit.latencyMs.p999),
    fmt(p.commit.appliedPerSecond),
    `${(p.drainMs / 1000).toFixed(1)} s${p.drained ? "" : " ⚠"}`,
  ]);
  return `# Kitsune end-to-end benchmark — ${r.date}

Machine: ${describeMachine(m)}.
Roles as separate processes (api, db-worker, log-worker → fake Loki), local Kafka 3.9.2 and PostgreSQL; command \`create_user\` v1, unique email per request; KAFKA_TRANSACTIONS=${r.settings.transactions}.

${table(
  ["load", "s", "requests", "req/s answered", "202/s", "other answers", "HTTP p50 ms", "HTTP p99 ms", "HTTP p99.9 ms", "commit p50 ms", "commit p99 ms", "commit p99.9 ms", "applied rows/s", "drain"],
  rows,
)}

${r.phases
  .filter((p) => p.rate > 0 && p.http.reqPerSecond < p.rate * 0.95)
  .map((p) => `- **${p.rate.toLocaleString("en-US")} req/s is past saturation**: ${Math.round(p.http.reqPerSecond).toLocaleString("en-US")} req/s were answered, so requests queued (in flight at the api, or waiting in the generator once its in-flight cap was reached) and the HTTP latency is mostly that wait.`)
  .join("\n")}
${r.phases
  .filter((p) => p.commit.appliedPerSecond > 0 && p.commit.appliedPerSecond < p.http.acceptedPerSecond * 0.95)
  .map((p) => `- ${p.name}: the db-worker applied ${Math.round(p.commit.appliedPerSecond).toLocaleString("en-US")} rows/s against ${Math.round(p.http.acceptedPerSecond).toLocaleString("en-US")} accepted/s; the backlog is the commit latency.`)
  .join("\n")}
${r.notes.map((n) => `- ${n}`).join("\n")}
`.replace(/\n{3,}/g, "\n\n");
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
