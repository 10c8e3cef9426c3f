#!/usr/bin/env bun
/**
 * @module bench/kafka
 * Throughput of the Kafka binding against kcat (C, the same librdkafka) on the same broker in the
 * same run: N messages of 200 bytes, `acks=all`, idempotent, then consumed `read_committed`. Both
 * get the same librdkafka settings (printed), so `ratio` (ours ÷ kcat, msgs/s) is what the binding
 * and Bun cost. Ours produces twice: `send()` per message (a promise each) and `sendAll()` of
 * 1,000 (a promise per call); each gets its ratio. Also prints the transactional producer's rate
 * (concurrent `sendAll` of one message).
 *
 * Produce is timed from client start to the last delivery report (kcat: process start to exit).
 * Consume is timed from the first message to the N-th ("steady", the ratio) and from start
 * (wall, which adds the group join for ours and start-up for kcat). CPU time (this process's, or
 * kcat's) is printed too: on a busy machine it says more than msgs/s. Each side runs `--rounds`
 * times (default 3), alternating, and the best run of each counts.
 *
 * @example
 * ```sh
 * bun run bench kafka                       # 1,000,000 messages, best of 3 rounds
 * bun run bench kafka --messages 100000 --txn-messages 5000 --rounds 1
 * bun run bench kafka --no-kcat --brokers 127.0.0.1:9092
 * ```
 */
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Admin, Consumer, Producer, TransactionalProducer, type KafkaConfig } from "../src/kafka/index.ts";
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
  kcat: boolean;
  rounds: number;
}

/** librdkafka settings given to both ours and kcat. */
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

const kcatCpu = (proc: { resourceUsage(): { cpuTime: { user: bigint; system: bigint } } | undefined }) => {
  const u = proc.resourceUsage();
  return u ? Number(u.cpuTime.user + u.cpuTime.system) / 1e6 : undefined;
};

/** The best (fastest) of several runs. */
const best = <T extends Rate>(runs: T[]): T => runs.reduce((a, b) => (b.msgsPerSec > a.msgsPerSec ? b : a));

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

function kcatArgs(settings: KafkaConfig): string[] {
  return Object.entries(settings).flatMap(([k, v]) => ["-X", `${k}=${v}`]);
}

export async function produceKcat(o: KafkaBenchOptions, topic: string, file: string): Promise<Rate> {
  const t0 = performance.now();
  const proc = Bun.spawn(["kcat", "-P", "-b", o.brokers, "-t", topic, ...kcatArgs(PRODUCE_SETTINGS)], {
    stdin: Bun.file(file),
    stdout: "ignore",
    stderr: "pipe",
  });
  const code = await proc.exited;
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`kcat -P exited ${code}: ${await new Response(proc.stderr).text()}`);
  return rate(o.messages, o.size, ms, kcatCpu(proc));
}

export async function consumeKcat(o: KafkaBenchOptions, topic: string): Promise<{ steady: Rate; wall: Rate }> {
  const t0 = performance.now();
  const proc = Bun.spawn(
    ["kcat", "-C", "-b", o.brokers, "-t", topic, "-e", "-o", "beginning", "-q", "-c", String(o.messages), ...kcatArgs(CONSUME_SETTINGS)],
    { stdout: "pipe", stderr: "pipe" },
  );
  let first = 0;
  let bytes = 0;
  for await (const chunk of proc.stdout) {
    if (!first) first = performance.now();
    bytes += chunk.length;
  }
  const code = await proc.exited;
  const end = performance.now();
  if (code !== 0) throw new Error(`kcat -C exited ${code}: ${await new Response(proc.stderr).text()}`);
  // kcat prints each value and a newline.
  const n = Math.round(bytes / (o.size + 1));
  if (n !== o.messages) throw new Error(`kcat consumed ${n} messages, expected ${o.messages}`);
  const cpu = kcatCpu(proc);
  return { steady: rate(n, o.size, end - first, cpu), wall: rate(n, o.size, end - t0, cpu) };
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
    kcat: !a.flag("no-kcat"),
    rounds: a.positive("rounds", 3),
  };
}

export async function main(args: string[]): Promise<number> {
  const o = options(args);
  const print = (s: string) => console.log(s);
  const run = `bench-kafka-${process.pid}-${Date.now()}`;
  const topics = { txn: `${run}-txn` };
  const value = new Uint8Array(o.size).fill(0x61);
  const file = join(tmpdir(), `${run}.lines`);
  const admin = new Admin({ "bootstrap.servers": o.brokers });
  const extraTopics: string[] = [];
  try {
    await admin.createTopics(Object.values(topics).map((name) => ({ name, partitions: o.partitions })));
    print(`kafka bench: ${o.messages.toLocaleString("en-US")} messages of ${o.size} bytes, ${o.partitions} partitions, broker ${o.brokers}`);
    print(`produce settings (ours and kcat): ${kcatArgs(PRODUCE_SETTINGS).filter((_, i) => i % 2).join(" ")}`);
    print(`consume settings (ours and kcat): ${kcatArgs(CONSUME_SETTINGS).filter((_, i) => i % 2).join(" ")}`);
    if (o.kcat) {
      const line = Buffer.alloc(o.size + 1, 0x61);
      line[o.size] = 0x0a;
      const lines = Buffer.alloc((o.size + 1) * o.messages);
      for (let i = 0; i < o.messages; i++) line.copy(lines, i * (o.size + 1));
      writeFileSync(file, lines);
    }

    const produced: { ours: Rate[]; batched: Rate[]; kcat: Rate[] } = { ours: [], batched: [], kcat: [] };
    const consumed: { ours: { steady: Rate; wall: Rate }[]; kcat: { steady: Rate; wall: Rate }[] } = { ours: [], kcat: [] };
    for (let round = 1; round <= o.rounds; round++) {
      const tag = o.rounds > 1 ? ` (round ${round})` : "";
      // A topic per round and side, so each produce starts from an empty log.
      const roundTopics = { ours: `${run}-ours-${round}`, batched: `${run}-batched-${round}`, kcat: `${run}-kcat-${round}` };
      await admin.createTopics(Object.values(roundTopics).map((name) => ({ name, partitions: o.partitions })));
      extraTopics.push(...Object.values(roundTopics));

      const ours = await produceOurs(o, roundTopics.ours, value);
      produced.ours.push(ours);
      print(`produce ours  ${fmt(ours)}  send() per message${tag}`);
      const batched = await produceOursBatched(o, roundTopics.batched, value);
      produced.batched.push(batched);
      print(`produce ours  ${fmt(batched)}  sendAll() of 1,000${tag}`);
      if (o.kcat) {
        const kcat = await produceKcat(o, roundTopics.kcat, file);
        produced.kcat.push(kcat);
        print(`produce kcat  ${fmt(kcat)}${tag}`);
      }
      const c = await consumeOurs(o, roundTopics.ours);
      consumed.ours.push(c);
      print(`consume ours  ${fmt(c.steady)}  wall ${Math.round(c.wall.msgsPerSec).toLocaleString("en-US")} msgs/s${tag}`);
      if (o.kcat) {
        const k = await consumeKcat(o, roundTopics.ours);
        consumed.kcat.push(k);
        print(`consume kcat  ${fmt(k.steady)}  wall ${Math.round(k.wall.msgsPerSec).toLocaleString("en-US")} msgs/s${tag}`);
      }
    }
    if (o.kcat) {
      const [po, pb, pk] = [best(produced.ours), best(produced.batched), best(produced.kcat)];
      const [co, ck] = [best(consumed.ours.map((c) => c.steady)), best(consumed.kcat.map((c) => c.steady))];
      const [cwo, cwk] = [best(consumed.ours.map((c) => c.wall)), best(consumed.kcat.map((c) => c.wall))];
      const cpuRatio = (a: Rate, b: Rate) => (a.cpu && b.cpu ? (b.cpu / a.cpu).toFixed(2) : "n/a");
      for (const [api, r] of [["send()", po], ["sendAll()", pb]] as const) {
        print(`produce ratio=${(r.msgsPerSec / pk.msgsPerSec).toFixed(2)} ${api} (ours ${Math.round(r.msgsPerSec)} / kcat ${Math.round(pk.msgsPerSec)} msgs/s; cpu efficiency kcat/ours=${cpuRatio(r, pk)})`);
      }
      print(
        `consume ratio=${(co.msgsPerSec / ck.msgsPerSec).toFixed(2)} (ours ${Math.round(co.msgsPerSec)} / kcat ${Math.round(ck.msgsPerSec)} msgs/s; ` +
          `wall ratio=${(cwo.msgsPerSec / cwk.msgsPerSec).toFixed(2)}; cpu efficiency kcat/ours=${cpuRatio(co, ck)})`,
      );
    }

    const t = await produceTransactional(o, topics.txn, value);
    print(
      `transactional ${Math.round(t.msgsPerSec).toLocaleString("en-US")} msgs/s (${o.txnMessages.toLocaleString("en-US")} sendAll of 1 message, ` +
        `${o.txnConcurrency} concurrent, ${t.transactions} transactions, ${(o.txnMessages / t.transactions).toFixed(1)} messages each)`,
    );
    return 0;
  } finally {
    rmSync(file, { force: true });
    await admin.deleteTopics([...Object.values(topics), ...extraTopics]).catch((e) => console.error(`could not delete the bench topics: ${e}`));
    admin.close();
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
