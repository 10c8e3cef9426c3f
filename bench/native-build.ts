#!/usr/bin/env bun
/**
 * @module bench/native-build
 * Consume rate of the consumer's fetch loop by how native.c was built, in the same run on the same
 * topic: compiled ahead of time by gcc -O2 (the image's way), compiled at start-up by Bun's TinyCC
 * (development), and plain FFI (no native.c) as the baseline. N messages of 200 bytes are produced
 * once; then each path reads them all from the start with a fresh group (`bench kafka`'s consume
 * settings), rounds alternating the order, best steady rate (first to last message) of each.
 *
 * @example
 * ```sh
 * bun bench/native-build.ts                          # 1,000,000 messages, best of 3 rounds
 * bun bench/native-build.ts --messages 200000 --rounds 5
 * ```
 */
import { Admin, Consumer, Producer } from "../src/kafka/index.ts";
import { loadNative, type Native } from "../src/kafka/native.ts";
import { nativeSharedObject } from "../test/native-so.ts";
import { parseArgs } from "./lib/args.ts";
import { CONSUME_SETTINGS, PRODUCE_SETTINGS } from "./kafka.ts";

interface Run {
  msgsPerSec: number;
  seconds: number;
  /** CPU seconds of this process while consuming. */
  cpu: number;
}

const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function consume(brokers: string, topic: string, messages: number, size: number, native: Native | false): Promise<Run> {
  const consumer = new Consumer(
    { "bootstrap.servers": brokers, "group.id": `${topic}-${Bun.randomUUIDv7()}`, "auto.offset.reset": "earliest", ...CONSUME_SETTINGS },
    { native },
  );
  consumer.subscribe([topic]);
  let n = 0;
  let bytes = 0;
  let first = 0;
  let cpu0 = 0;
  for await (const batch of consumer.batches({ maxMessages: 10_000, maxWaitMs: 0 })) {
    if (!first) {
      first = performance.now();
      cpu0 = cpuSeconds();
    }
    n += batch.length;
    for (const m of batch) bytes += m.value?.length ?? 0;
    if (n >= messages) break;
  }
  const seconds = (performance.now() - first) / 1000;
  const cpu = cpuSeconds() - cpu0;
  await consumer.close();
  if (n !== messages || bytes !== n * size) throw new Error(`consumed ${n} messages, ${bytes} bytes; expected ${messages}, ${messages * size}`);
  return { msgsPerSec: n / seconds, seconds, cpu };
}

export async function main(args: string[]): Promise<number> {
  const a = parseArgs(args);
  const brokers = a.string("brokers", process.env.KAFKA_BROKERS ?? "127.0.0.1:9092");
  const messages = a.positive("messages", 1_000_000);
  const size = a.positive("size", 200);
  const rounds = a.positive("rounds", 3);
  const topic = `bench-native-${process.pid}-${Date.now()}`;
  const so = nativeSharedObject();
  const paths: [string, Native | false][] = [
    ["gcc -O2 (AOT)", loadNative(so)],
    ["TinyCC", loadNative()],
    ["plain FFI", false],
  ];
  const admin = new Admin({ "bootstrap.servers": brokers });
  try {
    await admin.createTopics([{ name: topic, partitions: 3 }]);
    const producer = new Producer({ "bootstrap.servers": brokers, ...PRODUCE_SETTINGS });
    const value = new Uint8Array(size).fill(0x61);
    for (let sent = 0; sent < messages; sent += 1000) {
      await producer.sendAll(Array.from({ length: Math.min(1000, messages - sent) }, () => ({ topic, value })));
    }
    await producer.close();
    console.log(`native-build bench: ${messages.toLocaleString("en-US")} messages of ${size} bytes, 3 partitions, broker ${brokers}, ${rounds} rounds`);
    const runs = new Map<string, Run[]>(paths.map(([name]) => [name, []]));
    for (let round = 1; round <= rounds; round++) {
      // Rotate the order so no path always reads first (cold) or right after another.
      for (let i = 0; i < paths.length; i++) {
        const [name, native] = paths[(i + round - 1) % paths.length]!;
        const r = await consume(brokers, topic, messages, size, native);
        runs.get(name)!.push(r);
        console.log(
          `round ${round}  ${name.padEnd(14)} ${Math.round(r.msgsPerSec).toLocaleString("en-US").padStart(10)} msgs/s  ` +
            `(${r.seconds.toFixed(2)} s, cpu ${((r.cpu / messages) * 1e6).toFixed(2)} µs/msg)`,
        );
      }
    }
    const best = (name: string) => runs.get(name)!.reduce((x, y) => (y.msgsPerSec > x.msgsPerSec ? y : x));
    const base = best("TinyCC").msgsPerSec;
    for (const [name] of paths) {
      const b = best(name);
      console.log(`best  ${name.padEnd(14)} ${Math.round(b.msgsPerSec).toLocaleString("en-US").padStart(10)} msgs/s  ratio to TinyCC ${(b.msgsPerSec / base).toFixed(2)}`);
    }
    return 0;
  } finally {
    await admin.deleteTopics([topic]).catch((e) => console.error(`could not delete ${topic}: ${e}`));
    admin.close();
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
