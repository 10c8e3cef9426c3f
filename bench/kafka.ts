#!/usr/bin/env bun
/**
 * @module bench/kafka
 * Throughput of the Kafka binding against librdkafka used from C (bench/lib/rdkafka-bench.c,
 * compiled here against the project build's headers and run on the very library the binding
 * loaded; the versions are checked to match) on the same broker in the same run: N messages of
 * 200 bytes, `acks=all`, idempotent, then consumed `read_committed`. Both sides get the same
 * librdkafka settings — the full set the binding's Producer and Consumer apply, printed — so
 * `ratio` (ours ÷ C, msgs/s) is what the binding and Bun cost. Ours produces twice: `send()` per
 * message (a promise each) and `sendAll()` of 1,000 (a promise per call); each gets its ratio.
 * Also prints the transactional producer's rate (concurrent `sendAll` of one message).
 *
 * Both sides are timed and counted in-process: produce from client creation to the last delivery
 * report (client closed); consume from the first message to the N-th ("steady", the ratio) and
 * from client creation ("wall", which adds the group join), payload bytes summed in memory. CPU
 * time of the process over the same window is printed too: on a busy machine it says more than
 * msgs/s. Each side runs `--rounds` times (default 3), the order of the sides alternating from
 * round to round; best and median of each are printed, the ratios of both.
 *
 * @example
 * ```sh
 * bun run bench kafka                       # 1,000,000 messages, 3 rounds
 * bun run bench kafka --messages 100000 --txn-messages 5000 --rounds 1
 * bun run bench kafka --no-c --brokers 127.0.0.1:9092
 * LIBRDKAFKA_PATH=/usr/lib/x86_64-linux-gnu/librdkafka.so.1 bun run bench kafka   # another library, both sides
 * ```
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Admin, Consumer, Producer, TransactionalProducer, type KafkaConfig } from "../src/kafka/index.ts";
import { consumerConfig } from "../src/kafka/consumer.ts";
import { librdkafkaVersion, loadedLibraryFile } from "../src/kafka/ffi.ts";
import { PRODUCER_DEFAULTS, PRODUCER_SAFETY } from "../src/kafka/producer.ts";
import { parseArgs } from "./lib/args.ts";
import { sendWindowed } from "./lib/window.ts";

export interface KafkaBenchOptions {
  brokers: string;
  messages: number;
  size: number;
  partitions: number;
  /** Most sends awaiting their delivery report at once (ours). */
  window: number;
  txnMessages: number;
  txnConcurrency: number;
  /** Run the C side (the baseline). */
  c: boolean;
  rounds: number;
}

/** librdkafka settings given to both sides (each on top of what the binding applies anyway). */
export const PRODUCE_SETTINGS: KafkaConfig = {
  "enable.idempotence": true,
  acks: "all",
  "linger.ms": 5,
  "batch.num.messages": 10000,
  "batch.size": 1000000,
  "queue.buffering.max.messages": 500000,
  "queue.buffering.max.kbytes": 1048576,
  "compression.codec": "none",
  "message.timeout.ms": 60000,
};

export const CONSUME_SETTINGS: KafkaConfig = {
  "isolation.level": "read_committed",
  "fetch.wait.max.ms": 100,
  "fetch.max.bytes": 52428800,
  "max.partition.fetch.bytes": 1048576,
  "queued.min.messages": 1000000,
  "queued.max.messages.kbytes": 65536,
};

export interface Rate {
  msgs: number;
  seconds: number;
  msgsPerSec: number;
  mbPerSec: number;
  /** CPU seconds of the producing or consuming process (all its threads) during the phase. */
  cpu?: number;
}

function rate(msgs: number, size: number, ms: number, cpu?: number): Rate {
  const seconds = ms / 1000;
  return { msgs, seconds, msgsPerSec: msgs / seconds, mbPerSec: (msgs * size) / seconds / 1e6, cpu };
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const fmt = (r: Rate) =>
  `${Math.round(r.msgsPerSec).toLocaleString("en-US").padStart(9)} msgs/s ${r.mbPerSec.toFixed(1).padStart(6)} MB/s  (${r.seconds.toFixed(2)} s` +
  `${r.cpu !== undefined ? `, cpu ${r.cpu.toFixed(2)} s = ${((r.cpu / r.msgs) * 1e6).toFixed(2)} µs/msg` : ""})`;

/** The best (fastest) of several runs. */
const best = <T extends Rate>(runs: T[]): T => runs.reduce((a, b) => (b.msgsPerSec > a.msgsPerSec ? b : a));
/** The median run (the lower middle one of an even count). */
const median = <T extends Rate>(runs: T[]): T => [...runs].sort((a, b) => a.msgsPerSec - b.msgsPerSec)[Math.floor((runs.length - 1) / 2)]!;

/** The complete settings of our producer, as the Producer applies them. */
const producerSettings = (o: KafkaBenchOptions): KafkaConfig => ({ ...PRODUCER_DEFAULTS, "bootstrap.servers": o.brokers, ...PRODUCE_SETTINGS, ...PRODUCER_SAFETY });
/** The complete settings of a consumer of a fresh group, as the Consumer applies them. */
const consumerSettings = (o: KafkaBenchOptions, group: string): KafkaConfig =>
  consumerConfig({ "bootstrap.servers": o.brokers, "group.id": group, "auto.offset.reset": "earliest", ...CONSUME_SETTINGS });

/** Produces `n` messages of `value` with our Producer; at most `window` unsettled at once. */
export async function produceOurs(o: KafkaBenchOptions, topic: string, value: Uint8Array): Promise<Rate> {
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  const producer = new Producer({ "bootstrap.servers": o.brokers, ...PRODUCE_SETTINGS });
  try {
    await sendWindowed(o.messages, o.window, () => producer.send({ topic, value }));
  } finally {
    await producer.close();
  }
  return rate(o.messages, o.size, performance.now() - t0, cpuSeconds() - cpu0);
}

/** Like `produceOurs`, through `sendAll` with `batch` messages per call: one promise per call. */
export async function produceOursBatched(o: KafkaBenchOptions, topic: string, value: Uint8Array, batch = 1000): Promise<Rate> {
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  const producer = new Producer({ "bootstrap.servers": o.brokers, ...PRODUCE_SETTINGS });
  const calls = new Set<Promise<unknown>>();
  for (let sent = 0; sent < o.messages; sent += batch) {
    while (calls.size * batch >= o.window) await Promise.race(calls);
    const messages = Array.from({ length: Math.min(batch, o.messages - sent) }, () => ({ topic, value }));
    const call: Promise<unknown> = producer.sendAll(messages).finally(() => calls.delete(call));
    calls.add(call);
  }
  await Promise.all(calls);
  await producer.close();
  return rate(o.messages, o.size, performance.now() - t0, cpuSeconds() - cpu0);
}

/** Consumes `n` messages from the start of `topic` with our Consumer (a fresh group). */
export async function consumeOurs(o: KafkaBenchOptions, topic: string): Promise<{ steady: Rate; wall: Rate }> {
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  const consumer = new Consumer({
    "bootstrap.servers": o.brokers,
    "group.id": `bench-${topic}-${Date.now()}`,
    "auto.offset.reset": "earliest",
    ...CONSUME_SETTINGS,
  });
  consumer.subscribe([topic]);
  let n = 0;
  let bytes = 0;
  let first = 0;
  for await (const batch of consumer.batches({ maxMessages: 10_000, maxWaitMs: 0 })) {
    if (!first) first = performance.now();
    n += batch.length;
    for (const m of batch) bytes += m.value?.length ?? 0;
    if (n >= o.messages) break;
  }
  const end = performance.now();
  const cpu = cpuSeconds() - cpu0;
  await consumer.close();
  if (bytes !== n * o.size) throw new Error(`consumed ${bytes} bytes in ${n} messages, expected ${n * o.size}`);
  return { steady: rate(n, o.size, end - first, cpu), wall: rate(n, o.size, end - t0, cpu) };
}

/** The C side: bench/lib/rdkafka-bench.c built against the library the binding loaded. */
export interface CBaseline {
  bin: string;
  /** LD_LIBRARY_PATH that makes the binary load that library. */
  libDir: string;
  version: string;
  dispose(): void;
}

/**
 * Compiles rdkafka-bench.c with the headers of the project build (scripts/build-librdkafka.sh,
 * which only builds once), to run it on the library the binding loaded. The program uses only
 * librdkafka's 2.0-era API, so it also runs on an older library picked with LIBRDKAFKA_PATH.
 */
export function buildCBaseline(): CBaseline {
  const root = new URL("..", import.meta.url).pathname;
  const built = Bun.spawnSync(["bash", join(root, "scripts/build-librdkafka.sh")], { stdout: "pipe", stderr: "inherit" });
  if (!built.success) throw new Error("scripts/build-librdkafka.sh failed: the C side needs librdkafka's headers");
  const prefix = dirname(dirname(built.stdout.toString().trim().split("\n").at(-1)!));
  const dir = mkdtempSync(join(tmpdir(), "rdkafka-bench-"));
  const bin = join(dir, "rdkafka-bench");
  const cc = Bun.spawnSync(
    ["cc", "-O2", "-o", bin, join(root, "bench/lib/rdkafka-bench.c"), `-I${prefix}/include`, `-L${prefix}/lib`, "-lrdkafka"],
    { stdout: "pipe", stderr: "pipe" },
  );
  if (!cc.success) throw new Error(`compiling bench/lib/rdkafka-bench.c failed: ${cc.stderr.toString()}`);
  return { bin, libDir: dirname(loadedLibraryFile()), version: librdkafkaVersion(), dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

interface CResult {
  version: string;
  msgs: number;
  bytes: number;
  seconds: number;
  firstSeconds: number;
  cpu: number;
}

async function runC(c: CBaseline, mode: "produce" | "consume", topic: string, o: KafkaBenchOptions, settings: KafkaConfig): Promise<CResult> {
  const args = Object.entries(settings).flatMap(([k, v]) => ["-X", `${k}=${v}`]);
  const proc = Bun.spawn([c.bin, mode, topic, String(o.messages), String(o.size), ...args], {
    env: { ...process.env, LD_LIBRARY_PATH: c.libDir },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`rdkafka-bench ${mode} exited ${code}: ${err}`);
  const r = JSON.parse(out) as CResult;
  if (r.version !== c.version) throw new Error(`the C side ran librdkafka ${r.version}, the binding ${c.version}`);
  if (r.msgs !== o.messages || r.bytes !== o.messages * o.size) throw new Error(`rdkafka-bench ${mode}: ${r.msgs} messages, ${r.bytes} bytes`);
  return r;
}

export async function produceC(c: CBaseline, o: KafkaBenchOptions, topic: string): Promise<Rate> {
  const r = await runC(c, "produce", topic, o, producerSettings(o));
  return rate(r.msgs, o.size, r.seconds * 1000, r.cpu);
}

export async function consumeC(c: CBaseline, o: KafkaBenchOptions, topic: string): Promise<{ steady: Rate; wall: Rate }> {
  const r = await runC(c, "consume", topic, o, consumerSettings(o, `bench-c-${topic}-${Date.now()}`));
  return { steady: rate(r.msgs, o.size, r.seconds * 1000, r.cpu), wall: rate(r.msgs, o.size, (r.seconds + r.firstSeconds) * 1000, r.cpu) };
}

/** `txnMessages` transactions of one message each, `txnConcurrency` of them waiting at once. */
export async function produceTransactional(o: KafkaBenchOptions, topic: string, value: Uint8Array): Promise<Rate & { transactions: number }> {
  const producer = new TransactionalProducer({ "bootstrap.servers": o.brokers, "linger.ms": PRODUCE_SETTINGS["linger.ms"]! });
  await producer.init();
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < o.txnMessages) {
      next++;
      await producer.sendAll([{ topic, value }]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.txnConcurrency, o.txnMessages) }, worker));
  const r = rate(o.txnMessages, o.size, performance.now() - t0);
  const transactions = producer.committed;
  await producer.close();
  return { ...r, transactions };
}

function options(args: string[]): KafkaBenchOptions {
  const a = parseArgs(args);
  return {
    brokers: a.string("brokers", process.env.KAFKA_BROKERS ?? "127.0.0.1:9092"),
    messages: a.positive("messages", 1_000_000),
    size: a.positive("size", 200),
    partitions: a.positive("partitions", 3),
    window: a.positive("window", 100_000),
    txnMessages: a.positive("txn-messages", 20_000),
    txnConcurrency: a.positive("txn-concurrency", 500),
    c: !a.flag("no-c"),
    rounds: a.positive("rounds", 3),
  };
}

type Side = "send()" | "sendAll()" | "C";
const SIDES: Side[] = ["send()", "sendAll()", "C"];

export async function main(args: string[]): Promise<number> {
  const o = options(args);
  const print = (s: string) => console.log(s);
  const run = `bench-kafka-${process.pid}-${Date.now()}`;
  const topics = { txn: `${run}-txn` };
  const value = new Uint8Array(o.size).fill(0x61);
  const admin = new Admin({ "bootstrap.servers": o.brokers });
  const extraTopics: string[] = [];
  const c = o.c ? buildCBaseline() : undefined;
  const sides = SIDES.filter((s) => c || s !== "C");
  const settings = (cfg: KafkaConfig) =>
    Object.entries(cfg)
      .filter(([k]) => k !== "bootstrap.servers" && k !== "group.id")
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
  try {
    await admin.createTopics(Object.values(topics).map((name) => ({ name, partitions: o.partitions })));
    print(`kafka bench: ${o.messages.toLocaleString("en-US")} messages of ${o.size} bytes, ${o.partitions} partitions, broker ${o.brokers}`);
    print(`librdkafka ${librdkafkaVersion()} from ${loadedLibraryFile()}${c ? ", the C side on the same library" : ""}`);
    print(`produce settings (both sides): ${settings(producerSettings(o))}`);
    print(`consume settings (both sides): ${settings(consumerSettings(o, "g"))}`);

    const produced: Record<Side, Rate[]> = { "send()": [], "sendAll()": [], C: [] };
    const consumed: Record<"ours" | "C", { steady: Rate; wall: Rate }[]> = { ours: [], C: [] };
    for (let round = 1; round <= o.rounds; round++) {
      const tag = o.rounds > 1 ? ` (round ${round})` : "";
      // A topic per round and side, so each produce starts from an empty log.
      const roundTopics: Record<Side, string> = { "send()": `${run}-ours-${round}`, "sendAll()": `${run}-batched-${round}`, C: `${run}-c-${round}` };
      await admin.createTopics(sides.map((side) => ({ name: roundTopics[side], partitions: o.partitions })));
      extraTopics.push(...sides.map((side) => roundTopics[side]));
      // Odd rounds run ours first, even rounds the C side first.
      const order = <T>(xs: T[]) => (round % 2 ? xs : [...xs].reverse());

      for (const side of order(sides)) {
        const topic = roundTopics[side];
        const r = side === "C" ? await produceC(c!, o, topic) : side === "send()" ? await produceOurs(o, topic, value) : await produceOursBatched(o, topic, value);
        produced[side].push(r);
        print(`produce ${side === "C" ? "C   " : "ours"}  ${fmt(r)}${side === "C" ? "" : `  ${side === "send()" ? "send() per message" : "sendAll() of 1,000"}`}${tag}`);
      }
      // Both read what send() wrote.
      for (const side of order(c ? (["ours", "C"] as const) : (["ours"] as const))) {
        const r = side === "C" ? await consumeC(c!, o, roundTopics["send()"]) : await consumeOurs(o, roundTopics["send()"]);
        consumed[side].push(r);
        print(`consume ${side === "C" ? "C   " : "ours"}  ${fmt(r.steady)}  wall ${Math.round(r.wall.msgsPerSec).toLocaleString("en-US")} msgs/s${tag}`);
      }
    }
    const n = (r: Rate) => Math.round(r.msgsPerSec).toLocaleString("en-US");
    const cpuRatio = (a: Rate, b: Rate) => (a.cpu && b.cpu ? (b.cpu / a.cpu).toFixed(2) : "n/a");
    const summary = (what: string, ours: Rate[], theirs: Rate[]) => {
      for (const [pick, f] of [["best", best], ["median", median]] as const) {
        const [a, b] = [f(ours), f(theirs)];
        print(`${what} ${pick.padEnd(6)} ratio=${(a.msgsPerSec / b.msgsPerSec).toFixed(2)} (ours ${n(a)} / C ${n(b)} msgs/s; cpu efficiency C/ours=${cpuRatio(a, b)})`);
      }
    };
    if (c) {
      summary("produce send()   ", produced["send()"], produced.C);
      summary("produce sendAll()", produced["sendAll()"], produced.C);
      summary("consume steady   ", consumed.ours.map((r) => r.steady), consumed.C.map((r) => r.steady));
      summary("consume wall     ", consumed.ours.map((r) => r.wall), consumed.C.map((r) => r.wall));
    }

    const t = await produceTransactional(o, topics.txn, value);
    print(
      `transactional ${Math.round(t.msgsPerSec).toLocaleString("en-US")} msgs/s (${o.txnMessages.toLocaleString("en-US")} sendAll of 1 message, ` +
        `${o.txnConcurrency} concurrent, ${t.transactions} transactions, ${(o.txnMessages / t.transactions).toFixed(1)} messages each)`,
    );
    return 0;
  } finally {
    c?.dispose();
    await admin.deleteTopics([...Object.values(topics), ...extraTopics]).catch((e) => console.error(`could not delete the bench topics: ${e}`));
    admin.close();
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
