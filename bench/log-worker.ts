#!/usr/bin/env bun
/**
 * @module bench/log-worker
 * Lines per second the log-worker role delivers to a local fake Loki, against that receiver's
 * floor in the same run.
 *
 * - N `LogEvent`s are produced beforehand to a topic of their own (3 partitions, like `app-logs`).
 * - The receiver is test/fake-loki.ts in counting mode (no storing, no request log), in a process
 *   of its own; it still gunzips, parses and validates every push the way Loki would.
 * - floor: the same events cut into the same pushes (batches of `LOG_BATCH.maxMessages`,
 *   `splitPushes`), each encoded with `encodePush` (loki-format.ts) and POSTed with as many on
 *   their way at once as the worker allows (`LOG_BATCH.maxInFlight`; across batch boundaries too,
 *   where the worker waits for a batch's last push) — what any shipper must do at least, without
 *   Kafka and without decoding.
 * - worker: the log-worker role (`start` of src/roles/log-worker.ts) consuming the topic with a
 *   fresh group.
 *
 * Both are timed the same way, by watching the receiver's count (every 5 ms, from this process):
 * from the first sample that sees lines to the one that sees all N, over the lines that arrived in
 * between (`deliveryWindow`, lib/rate.ts; this is the ratio). The first push (or two) and everything
 * before it — the worker's start-up, group join and first fetch, the floor's first encode — are
 * left out on both sides. "wall" adds them back: from `start` for the worker, from the first push
 * for the floor.
 * - consumer: the Kafka consumer alone on the same topic, doing nothing with the messages — the
 *   ceiling of the worker, which consumes and ships on the same JavaScript thread.
 * - profile: decode and encode cost per line, and gzip levels, on one batch.
 *
 * CPU use is printed per phase (this process, its JavaScript thread and how long that thread
 * waited for a CPU, the receiver, the whole machine): on a shared machine the ratio moves with
 * what else runs.
 *
 * @example
 * ```sh
 * bun run bench log-worker                     # 500,000 events
 * bun run bench log-worker --events 100000
 * bun run bench log-worker --rounds 1           # one run each (default: 3 each, alternating; best and median)
 * bun bench/log-worker.ts --events 200000 --brokers 127.0.0.1:9092
 * ```
 */
import { readFileSync } from "node:fs";
import { Registry } from "prom-client";
import { loadConfig } from "../src/config.ts";
import type { LogEvent } from "../src/contracts.ts";
import { Admin, Consumer, Producer, type Message, type OutgoingMessage } from "../src/kafka/index.ts";
import { createLogger } from "../src/logger.ts";
import { DEFAULT_GZIP_LEVEL, encodePush, LOKI_PUSH_PATH, toLokiEntry } from "../src/log/loki-format.ts";
import { decodeLogMessage, LOG_BATCH, splitPushes } from "../src/log/ship.ts";
import { start } from "../src/roles/log-worker.ts";
import type { FakeLokiCounters } from "../test/fake-loki.ts";
import { deliveryWindow, median, roundOrder, type Sample } from "./lib/rate.ts";
import { recorder, writeLines } from "./lib/report.ts";
import { sendWindowed } from "./lib/window.ts";

export interface LogWorkerBenchOptions {
  events: number;
  brokers: string;
  /** Run only one side (for profiling); no ratio then. */
  only?: "floor" | "worker";
  /** Floor and worker runs each, alternating; the best of each gives the ratio, the medians are printed too (default 3: the machine is noisy). */
  rounds?: number;
}

const GOAL = { ratio: 0.7, linesPerSecond: 100_000 };

const COMMANDS = ["create_user", "update_user", "delete_user", "create_order", "cancel_order"];
const SOURCES = ["user-service", "billing", "checkout", "admin-ui"];
const LEVELS = ["INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"] as const;

/** Event `i`, shaped like the api's: uuid ids, millisecond ISO timestamps, a short message. */
export function benchEvent(i: number, base = Date.UTC(2025, 0, 1)): LogEvent {
  const id = uuidLike(i, 7);
  const command = COMMANDS[i % COMMANDS.length]!;
  return {
    id,
    level: LEVELS[i % LEVELS.length]!,
    message: `${command} accepted for tenant ${i % 97} (request ${i})`,
    command,
    source: SOURCES[i % SOURCES.length]!,
    timestamp: new Date(base + Math.floor(i / 10)).toISOString(),
    idempotency_key: uuidLike(i, 4),
  };
}

function uuidLike(i: number, version: number): string {
  const hex = (i * 2654435761 + version).toString(16).padStart(12, "0").slice(-12);
  return `0190a5e4-7b1c-${version}def-8abc-${hex}`;
}

function parseArgs(args: string[]): LogWorkerBenchOptions {
  const o: LogWorkerBenchOptions = { events: 500_000, brokers: process.env.KAFKA_BROKERS ?? "127.0.0.1:9092" };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--events") o.events = Number(next().replaceAll("_", ""));
    else if (a === "--brokers") o.brokers = next();
    else if (a === "--rounds") o.rounds = Number(next());
    else if (a === "--only") {
      const side = next();
      if (side !== "floor" && side !== "worker") throw new Error("--only takes floor or worker");
      o.only = side;
    } else throw new Error(`unknown option ${a} (options: --events N, --rounds N, --brokers host:port, --only floor|worker)`);
  }
  if (!Number.isInteger(o.events) || o.events < 1) throw new Error("--events must be a positive integer");
  if (o.rounds !== undefined && (!Number.isInteger(o.rounds) || o.rounds < 1)) throw new Error("--rounds must be a positive integer");
  return o;
}

/**
 * CPU seconds (user + system) a process used so far, from /proc (Linux); NaN elsewhere. With
 * `thread`, only that thread's (the main — JavaScript — thread's id is the process id).
 */
function cpuSeconds(pid: number, thread?: number): number {
  try {
    const path = thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`;
    const fields = readFileSync(path, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

/** Seconds the JavaScript thread waited for a CPU while it could run (Linux schedstat); NaN elsewhere. */
function runQueueSeconds(): number {
  try {
    return Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, "utf8").split(" ")[1]) / 1e9;
  } catch {
    return NaN;
  }
}

/** Busy and total CPU seconds of the whole machine so far, from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  try {
    const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/);
    const n = ticks.map(Number);
    const idle = n[3]! + (n[4] ?? 0);
    const total = n.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: (total - idle) / 100, total: total / 100 };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

/** CPU used during `fn`: by this process, by the receiver, and by everything on the machine. */
async function measured<T>(receiverPid: number, fn: () => Promise<T>): Promise<{ result: T; cpu: string }> {
  const own = process.cpuUsage();
  const js = cpuSeconds(process.pid, process.pid);
  const queued = runQueueSeconds();
  const started = performance.now();
  const receiver = cpuSeconds(receiverPid);
  const machine = machineCpu();
  const result = await fn();
  const ownUsed = process.cpuUsage(own);
  const jsUsed = cpuSeconds(process.pid, process.pid) - js;
  const jsQueued = runQueueSeconds() - queued;
  const wall = (performance.now() - started) / 1000;
  const m = machineCpu();
  const cores = (m.total - machine.total) > 0 ? ((m.busy - machine.busy) / (m.total - machine.total)) * navigator.hardwareConcurrency : NaN;
  const cpu =
    `cpu: this process ${((ownUsed.user + ownUsed.system) / 1e6).toFixed(2)} s ` +
    `(JS thread ${jsUsed.toFixed(2)} s, busy ${Math.round((jsUsed / wall) * 100)}% of ${wall.toFixed(2)} s, ` +
    `${Math.round((jsQueued / wall) * 100)}% waiting for a CPU), ` +
    `receiver ${(cpuSeconds(receiverPid) - receiver).toFixed(2)} s, ` +
    `machine ${cores.toFixed(1)} of ${navigator.hardwareConcurrency} cores busy`;
  return { result, cpu };
}

interface Receiver {
  url: string;
  pid: number;
  counters(): Promise<FakeLokiCounters>;
  stop(): void;
}

/** The receiver in a process of its own. */
export async function startReceiver(): Promise<Receiver> {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/../test/fake-loki.ts`, "--no-store"], { stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("fake Loki exited before it printed its URL");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const { url } = JSON.parse(text.slice(0, text.indexOf("\n"))) as { url: string };
  return {
    url,
    pid: proc.pid,
    counters: async () => (await (await fetch(`${url}/fake/counters`)).json()) as FakeLokiCounters,
    stop: () => proc.kill(),
  };
}

export async function produceEvents(o: LogWorkerBenchOptions, topic: string): Promise<{ seconds: number; bytes: number }> {
  const producer = new Producer({ "bootstrap.servers": o.brokers, "linger.ms": 5, "batch.num.messages": 10_000 });
  const started = performance.now();
  let bytes = 0;
  const CHUNK = 20_000;
  try {
    let pending: Promise<unknown>[] = [];
    for (let from = 0; from < o.events; from += CHUNK) {
      const messages: OutgoingMessage[] = [];
      for (let i = from; i < Math.min(o.events, from + CHUNK); i++) {
        const event = benchEvent(i);
        const value = JSON.stringify(event);
        bytes += value.length;
        messages.push({
          topic,
          value,
          headers: {
            "content-type": "application/json",
            "kitsune-id": event.id,
            traceparent: `00-${event.id.replaceAll("-", "")}-${event.idempotency_key.slice(-16)}-01`,
          },
        });
      }
      pending.push(producer.sendAll(messages));
      if (pending.length >= 4) {
        await Promise.all(pending);
        pending = [];
      }
    }
    await Promise.all(pending);
  } finally {
    await producer.close();
  }
  return { seconds: (performance.now() - started) / 1000, bytes };
}

/** How often both sides' runs look at the receiver's count. */
const WATCH_MS = 5;

/**
 * The receiver's accepted count, from `before` on, sampled every `WATCH_MS` until it reaches
 * `expected` (or `stop()` says the run failed, or the deadline passes).
 */
async function watchDelivery(
  counters: () => Promise<FakeLokiCounters>,
  before: number,
  expected: number,
  deadline: number,
  stop: () => boolean = () => false,
): Promise<Sample[]> {
  const samples: Sample[] = [];
  for (;;) {
    const count = (await counters()).accepted - before;
    const at = performance.now();
    samples.push({ at, count });
    if (count >= expected || stop()) return samples;
    if (at > deadline) throw new Error(`delivered ${count} of ${expected} lines before the deadline`);
    await Bun.sleep(WATCH_MS);
  }
}

/** The longest a run may take. */
const deadlineFrom = (started: number, events: number) => started + Math.max(120_000, events / 5);

/**
 * The same pushes the worker makes, encoded and POSTed with `LOG_BATCH.maxInFlight` on their way
 * at once, timed like the worker.
 */
export async function floor(o: LogWorkerBenchOptions, url: string, counters: () => Promise<FakeLokiCounters>) {
  const before = (await counters()).accepted;
  const pushes: ReturnType<typeof toLokiEntry>[][] = [];
  for (let from = 0; from < o.events; from += LOG_BATCH.maxMessages) {
    const items = [];
    for (let i = from; i < Math.min(o.events, from + LOG_BATCH.maxMessages); i++) {
      const entry = toLokiEntry(benchEvent(i));
      items.push({ entry, bytes: Buffer.byteLength(entry.line) });
    }
    for (const push of splitPushes(items)) pushes.push(push.map((p) => p.entry));
  }
  let encodeMs = 0;
  let wire = 0;
  let failed = false;
  const started = performance.now();
  const watching = watchDelivery(counters, before, o.events, deadlineFrom(started, o.events), () => failed);
  const pushing = sendWindowed(pushes.length, LOG_BATCH.maxInFlight, async (i) => {
    const t = performance.now();
    const { body, headers } = encodePush(pushes[i]!);
    encodeMs += performance.now() - t;
    wire += body.byteLength;
    const res = await fetch(`${url}${LOKI_PUSH_PATH}`, { method: "POST", body, headers });
    await res.arrayBuffer();
    if (res.status !== 204) throw new Error(`floor push answered ${res.status}`);
  }).catch((err: unknown) => {
    failed = true;
    throw err;
  });
  const [, samples] = await Promise.all([pushing, watching]);
  const last = samples.at(-1)!;
  const accepted = (await counters()).accepted - before;
  if (accepted !== o.events) throw new Error(`floor: receiver counted ${accepted} lines, expected ${o.events}`);
  const window = deliveryWindow(samples, o.events);
  return {
    steadySeconds: window.seconds,
    rate: window.perSecond,
    wallSeconds: (last.at - started) / 1000,
    wallRate: o.events / ((last.at - started) / 1000),
    pushes: pushes.length,
    encodeMs,
    wire,
  };
}

export async function worker(o: LogWorkerBenchOptions, topic: string, url: string, counters: () => Promise<FakeLokiCounters>) {
  const before = (await counters()).accepted;
  const config = loadConfig({
    ROLE: "log-worker",
    KAFKA_BROKERS: o.brokers,
    KAFKA_GROUP_ID: `bench-log-worker-${crypto.randomUUID()}`,
    TOPIC_LOGS: topic,
    LOKI_URL: url,
    LOG_LEVEL: "warn",
  });
  const registry = new Registry();
  const started = performance.now();
  const service = await start(config, { logger: createLogger("warn"), registry });
  let samples: Sample[];
  try {
    samples = await watchDelivery(counters, before, o.events, deadlineFrom(started, o.events));
  } finally {
    await service.stop();
  }
  const last = samples.at(-1)!;
  const window = deliveryWindow(samples, o.events);
  return {
    steadySeconds: window.seconds,
    rate: window.perSecond,
    wallSeconds: (last.at - started) / 1000,
    wallRate: o.events / ((last.at - started) / 1000),
    metrics: await registry.getMetricsAsJSON(),
  };
}

/**
 * The ceiling Kafka sets: our Consumer reading the same topic with a fresh group and doing nothing
 * with the messages (settings as the role's), timed from the first batch to the N-th message.
 */
export async function consumeOnly(o: LogWorkerBenchOptions, topic: string): Promise<{ rate: number }> {
  const consumer = new Consumer(
    { "bootstrap.servers": o.brokers, "group.id": `bench-consume-${crypto.randomUUID()}` },
    { maxBuffered: LOG_BATCH.maxMessages * 5 },
  );
  consumer.subscribe([topic]);
  let seen = 0;
  let first: { at: number; count: number } | undefined;
  try {
    for await (const batch of consumer.batches(LOG_BATCH)) {
      first ??= { at: performance.now(), count: batch.length };
      seen += batch.length;
      if (seen >= o.events) break;
    }
  } finally {
    await consumer.close();
  }
  return { rate: (o.events - first!.count) / ((performance.now() - first!.at) / 1000) };
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

/**
 * Where a batch's JavaScript time goes, per line, on one batch of `LOG_BATCH.maxMessages` events:
 * decoding (`decodeLogMessage`: UTF-8, JSON, schema, Loki entry) and encoding each push at a few
 * gzip levels (`encodePush`: grouping, JSON, gzip), with the compression ratio.
 */
export function profileStages(count = LOG_BATCH.maxMessages): string[] {
  const enc = new TextEncoder();
  const messages: Message[] = Array.from({ length: count }, (_, i) => ({
    topic: "t",
    partition: i % 3,
    offset: i,
    key: null,
    headers: {},
    timestamp: -1,
    value: enc.encode(JSON.stringify(benchEvent(i))),
  }));
  const best = (fn: () => void, reps = 7) => {
    fn();
    let ms = Infinity;
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      fn();
      ms = Math.min(ms, performance.now() - t);
    }
    return (ms * 1000) / count; // µs per line
  };
  const lines: string[] = [];
  const entries = messages.map((m) => {
    const d = decodeLogMessage(m);
    if (!d.ok) throw new Error(d.error);
    return d.entry;
  });
  lines.push(`decode ${best(() => messages.forEach(decodeLogMessage)).toFixed(2)} µs/line`);
  const pushes = splitPushes(entries.map((entry) => ({ entry, bytes: Buffer.byteLength(entry.line) }))).map((p) => p.map((i) => i.entry));
  const json = pushes.reduce((s, p) => s + encodePush(p, { gzipLevel: 0 }).body.byteLength, 0);
  for (const level of [0, 1, 6]) {
    const us = best(() => pushes.forEach((p) => encodePush(p, { gzipLevel: level })));
    const wire = pushes.reduce((s, p) => s + encodePush(p, { gzipLevel: level }).body.byteLength, 0);
    const mark = level === DEFAULT_GZIP_LEVEL ? " (default)" : "";
    lines.push(`encode ${us.toFixed(2)} µs/line at gzip level ${level}${mark}, ${(json / wire).toFixed(1)}:1`);
  }
  return lines;
}

export async function main(args: string[]): Promise<number> {
  const o = parseArgs(args);
  const { print, lines } = recorder();
  const topic = `bench-logs-${crypto.randomUUID().slice(0, 8)}`;
  const admin = new Admin({ "bootstrap.servers": o.brokers });
  const receiver = await startReceiver();
  try {
    await admin.createTopics([{ name: topic, partitions: 3 }, { name: `${topic}.dlq`, partitions: 1 }]);
    print(`log-worker bench: ${fmt(o.events)} events, topic ${topic}, receiver ${receiver.url} (counting only)`);
    const produced = await produceEvents(o, topic);
    print(`produced   ${fmt(o.events)} events (${(produced.bytes / 1e6).toFixed(1)} MB) in ${produced.seconds.toFixed(2)} s`);

    // With --rounds R, floor and worker run R times, alternating (the side that went second goes
    // first in the next round); the best of each gives the ratio, the medians are printed too.
    let f: Awaited<ReturnType<typeof floor>> | undefined;
    let w: Awaited<ReturnType<typeof worker>> | undefined;
    const floorRates: number[] = [];
    const workerRates: number[] = [];
    const rounds = o.rounds ?? 3;
    for (let round = 1; round <= rounds; round++) {
      const tag = rounds > 1 ? ` (round ${round})` : "";
      for (const side of roundOrder(round, ["floor", "worker"] as const)) {
        if (o.only !== undefined && o.only !== side) continue;
        if (side === "floor") {
          const run = await measured(receiver.pid, () => floor(o, receiver.url, receiver.counters));
          const r = run.result;
          if (!f || r.rate > f.rate) f = r;
          floorRates.push(r.rate);
          print(
            `floor      ${fmt(r.rate)} lines/s steady (${r.steadySeconds.toFixed(2)} s)  wall ${fmt(r.wallRate)} lines/s ` +
              `(${r.wallSeconds.toFixed(2)} s; ${r.pushes} pushes, ${LOG_BATCH.maxInFlight} in flight, ` +
              `${(r.wire / 1e6).toFixed(1)} MB gzip, encode ${(r.encodeMs / 1000).toFixed(2)} s of it)${tag}`,
          );
          print(`           ${run.cpu}`);
        } else {
          const run = await measured(receiver.pid, () => worker(o, topic, receiver.url, receiver.counters));
          const r = run.result;
          if (!w || r.rate > w.rate) w = r;
          workerRates.push(r.rate);
          print(
            `worker     ${fmt(r.rate)} lines/s steady (${r.steadySeconds.toFixed(2)} s)  ` +
              `wall ${fmt(r.wallRate)} lines/s (${r.wallSeconds.toFixed(2)} s incl. start-up and group join)${tag}`,
          );
          print(`           ${run.cpu} (incl. start-up)`);
        }
      }
    }
    if (!w) return 0;
    if (rounds > 1) {
      print(`best       floor ${f ? fmt(f.rate) : "–"} lines/s, worker ${fmt(w.rate)} lines/s`);
      print(`median     floor ${f ? fmt(median(floorRates)) : "–"} lines/s, worker ${fmt(median(workerRates))} lines/s`);
    }
    const bare = await consumeOnly(o, topic);
    print(`consumer   ${fmt(bare.rate)} msgs/s: our Kafka consumer alone, no processing (the worker's ceiling; worker = ${Math.round((w.rate / bare.rate) * 100)}% of it)`);
    const pushes = w.metrics.find((m) => m.name === "kitsune_log_push_duration_seconds");
    const series = (suffix: string) =>
      (pushes?.values ?? []).filter((v) => (v as { metricName?: string }).metricName?.endsWith(suffix)).reduce((s, v) => s + v.value, 0);
    const count = series("_count");
    const sum = series("_sum");
    if (count) print(`           ${count} pushes, ${((sum / count) * 1000).toFixed(1)} ms each on average (encode + request)`);
    for (const line of profileStages()) print(`profile    ${line}`);
    if (!f) return 0;
    const ratio = w.rate / f.rate;
    print(`ratio=${ratio.toFixed(2)} median_ratio=${(median(workerRates) / median(floorRates)).toFixed(2)}`);
    const met = ratio >= GOAL.ratio && w.rate >= GOAL.linesPerSecond;
    print(`goal (≥ ${GOAL.ratio} × floor and ≥ ${fmt(GOAL.linesPerSecond)} lines/s): ${met ? "met" : "NOT met"}`);
    return 0;
  } finally {
    writeLines("log-worker", `bench log-worker ${args.join(" ")}`.trim(), lines, { options: o });
    receiver.stop();
    await admin.deleteTopics([topic, `${topic}.dlq`]).catch(() => {});
    admin.close();
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
