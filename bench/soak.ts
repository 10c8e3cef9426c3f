#!/usr/bin/env bun
/**
 * @module bench/soak
 * Memory soak of the Kafka binding: N messages (default 1,000,000) with keys and headers go
 * through an idempotent Producer and a `read_committed` Consumer that commits every batch, both
 * running at once in this process. RSS is printed at the start, every tenth and at the end (after
 * a full GC each time); the run fails (exit 1) if RSS after the middle rose more than
 * `--max-growth-mb` above the middle's — a leak of ~100 bytes per message would show as ~50 MB.
 *
 * @example
 * ```sh
 * bun run bench soak
 * bun run bench soak --messages 200000 --max-growth-mb 32
 * ```
 */
import { heapStats } from "bun:jsc";
import { Admin, Consumer, nextOffsets, Producer } from "../src/kafka/index.ts";
import { parseArgs } from "./lib/args.ts";
import { sendWindowed } from "./lib/window.ts";

export interface SoakOptions {
  brokers: string;
  messages: number;
  size: number;
  partitions: number;
  /** Most sends awaiting their delivery report at once. */
  window: number;
  maxGrowthMb: number;
}

interface Sample {
  label: string;
  consumed: number;
  rssMb: number;
  heapMb: number;
}

function sample(label: string, consumed: number): Sample {
  Bun.gc(true);
  const mb = (n: number) => n / 1024 / 1024;
  return { label, consumed, rssMb: mb(process.memoryUsage().rss), heapMb: mb(heapStats().heapSize) };
}

const show = (s: Sample) =>
  `${s.label.padEnd(6)} ${s.consumed.toLocaleString("en-US").padStart(9)} consumed  rss ${s.rssMb.toFixed(1).padStart(7)} MB  js heap ${s.heapMb.toFixed(1).padStart(6)} MB`;

export async function soak(o: SoakOptions, print: (line: string) => void = console.log): Promise<{ samples: Sample[]; growthMb: number; ok: boolean }> {
  const topic = `bench-soak-${process.pid}-${Date.now()}`;
  const admin = new Admin({ "bootstrap.servers": o.brokers });
  await admin.createTopics([{ name: topic, partitions: o.partitions }]);
  const producer = new Producer({ "bootstrap.servers": o.brokers, "linger.ms": 5 });
  const consumer = new Consumer({
    "bootstrap.servers": o.brokers,
    "group.id": `${topic}-group`,
    // Bounds librdkafka's prefetch (default 64 MB) so RSS shows the binding, not the read-ahead.
    "queued.max.messages.kbytes": 16384,
  });
  const samples: Sample[] = [];
  try {
    consumer.subscribe([topic]);
    const start = sample("start", 0);
    samples.push(start);
    print(show(start));

    const value = new Uint8Array(o.size).fill(0x62);
    const produced = sendWindowed(o.messages, o.window, (i) =>
      producer.send({ topic, key: `key-${i % 1000}`, value, headers: { "content-type": "application/octet-stream", seq: String(i) } }),
    );

    let consumed = 0;
    let nextMark = o.messages / 10;
    const t0 = performance.now();
    for await (const batch of consumer.batches({ maxMessages: 1000, maxWaitMs: 20 })) {
      for (const m of batch) if (m.value?.length !== o.size || !m.headers.seq) throw new Error(`bad message at ${m.partition}/${m.offset}`);
      await consumer.commit(nextOffsets(batch));
      consumed += batch.length;
      while (consumed >= nextMark && nextMark <= o.messages) {
        const label = nextMark === o.messages / 2 ? "middle" : nextMark >= o.messages ? "end" : "";
        const s = sample(label, consumed);
        samples.push(s);
        print(show(s));
        nextMark += o.messages / 10;
      }
      if (consumed >= o.messages) break;
    }
    await produced;
    const seconds = (performance.now() - t0) / 1000;
    const middle = samples.find((s) => s.label === "middle")!;
    const end = samples.find((s) => s.label === "end")!;
    // The highest RSS of the second half, not just the last sample: the producer finishing
    // first frees memory that could hide a consumer-side leak.
    const peak = Math.max(...samples.slice(samples.indexOf(middle)).map((s) => s.rssMb));
    const growthMb = peak - middle.rssMb;
    const ok = growthMb <= o.maxGrowthMb;
    print(
      `soak: ${consumed.toLocaleString("en-US")} messages in ${seconds.toFixed(1)} s; rss start ${start.rssMb.toFixed(1)} MB, ` +
        `middle ${middle.rssMb.toFixed(1)} MB, end ${end.rssMb.toFixed(1)} MB; highest after the middle ${growthMb >= 0 ? "+" : ""}${growthMb.toFixed(1)} MB ` +
        `(bound ${o.maxGrowthMb} MB): ${ok ? "flat" : "GROWING"}`,
    );
    return { samples, growthMb, ok };
  } finally {
    await consumer.close();
    await producer.close();
    await admin.deleteTopics([topic]).catch((e) => console.error(`could not delete ${topic}: ${e}`));
    admin.close();
  }
}

function options(args: string[]): SoakOptions {
  const a = parseArgs(args);
  const messages = a.positive("messages", 1_000_000);
  if (messages % 10 !== 0) throw new Error("--messages must be a multiple of 10");
  return {
    brokers: a.string("brokers", process.env.KAFKA_BROKERS ?? "127.0.0.1:9092"),
    messages,
    size: a.positive("size", 200),
    partitions: a.positive("partitions", 3),
    window: a.positive("window", 50_000),
    maxGrowthMb: a.positive("max-growth-mb", 48),
  };
}

export async function main(args: string[]): Promise<number> {
  const { ok } = await soak(options(args));
  return ok ? 0 : 1;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
