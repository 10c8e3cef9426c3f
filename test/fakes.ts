/**
 * @module test/fakes
 * Small stand-ins for the api's ports, for tests and the benchmark: a `MessageSink` that records
 * what it is given and can fail or hang on demand, an in-memory `CommandLookup`, and `testApp`
 * wiring both into an api app.
 */
import { Registry } from "prom-client";
import type { CommandDef, CommandLookup } from "../src/contracts.ts";
import { tpKey } from "../src/kafka/offsets.ts";
import type { DeliveryReport, MessageSink, OutgoingMessage } from "../src/kafka/types.ts";
import { silentLogger } from "../src/logger.ts";
import { createApiApp, type ApiAppOptions } from "../src/api/app.ts";

export type FakeSinkMode = "ok" | "reject" | "hang";

export class FakeSink implements MessageSink {
  /** Every `sendAll` call, in order. */
  readonly calls: OutgoingMessage[][] = [];
  mode: FakeSinkMode = "ok";
  /** `sendAll` with `record: false` keeps no history (for benchmarks). */
  constructor(private readonly options: { record?: boolean; partitions?: number } = {}) {}
  private readonly offsets = new Map<string, number>();

  get messages(): OutgoingMessage[] {
    return this.calls.flat();
  }

  sendAll(messages: OutgoingMessage[]): Promise<DeliveryReport[]> {
    if (this.options.record !== false) this.calls.push(messages);
    if (this.mode === "reject") return Promise.reject(new Error("fake sink: broker unavailable"));
    if (this.mode === "hang") return new Promise(() => {});
    const partitions = this.options.partitions ?? 3;
    return Promise.resolve(
      messages.map((m) => {
        // Cheap on purpose: the benchmark's fake sink should cost next to nothing.
        const partition = m.key ? Bun.hash.crc32(m.key) % partitions : 0;
        const tp = tpKey({ topic: m.topic, partition });
        const offset = this.offsets.get(tp) ?? 0;
        this.offsets.set(tp, offset + 1);
        return { topic: m.topic, partition, offset };
      }),
    );
  }
}

/** A `CommandLookup` over a fixed list; `get` without a version takes the highest version number. */
export function memoryLookup(defs: CommandDef[]): CommandLookup {
  return {
    get(command, version) {
      const matching = defs.filter((d) => d.command === command);
      if (version !== undefined) return matching.find((d) => d.version === version);
      return matching.reduce<CommandDef | undefined>((best, d) => (!best || Number(d.version) > Number(best.version) ? d : best), undefined);
    },
    list: () => [...defs],
  };
}

/** `create_user` v1 exactly as in DESIGN.md, plus a few commands that exercise every parameter type. */
export const SAMPLE_COMMANDS: CommandDef[] = [
  {
    command: "create_user",
    version: "1",
    description: "Register a user.",
    key: "email",
    params: [
      { name: "name", type: "scalar" },
      { name: "email", type: "scalar" },
    ],
    sql: "INSERT INTO users (name, email) VALUES ($1, $2)",
    file: "sql/commands/create_user.v1.sql",
  },
  {
    command: "create_user",
    version: "2",
    description: "Register a user with an age.",
    key: "email",
    params: [
      { name: "name", type: "text" },
      { name: "email", type: "text" },
      { name: "age", type: "integer" },
    ],
    sql: "INSERT INTO users (name, email, age) VALUES ($1, $2, $3::int)",
    file: "sql/commands/create_user.v2.sql",
  },
  {
    command: "record_order",
    version: "1",
    description: "Every parameter type.",
    params: [
      { name: "order_id", type: "uuid" },
      { name: "total", type: "numeric" },
      { name: "paid", type: "boolean" },
      { name: "placed_at", type: "timestamp" },
      { name: "items", type: "json" },
    ],
    sql: "INSERT INTO orders VALUES ($1::uuid, $2::numeric, $3::boolean, $4::timestamptz, $5::jsonb)",
    file: "sql/commands/record_order.v1.sql",
  },
];

export const TEST_TOKEN = "test-token-0123456789";

/** An api app over a `FakeSink` and `SAMPLE_COMMANDS`, with a fresh metrics registry. */
export function testApp(options: Partial<ApiAppOptions> & { commands?: CommandDef[] } = {}) {
  const sink = (options.sink as FakeSink | undefined) ?? new FakeSink();
  const metrics = options.metrics ?? new Registry();
  const app = createApiApp({
    config: {
      topics: { events: "db-events", logs: "app-logs", results: "db-results" },
      auth: { tokens: [TEST_TOKEN], disabled: false },
      maxBodyBytes: 65536,
    },
    registry: memoryLookup(options.commands ?? SAMPLE_COMMANDS),
    logger: silentLogger,
    ...options,
    sink,
    metrics,
  });
  return { app, sink, metrics };
}

/** DESIGN.md's original example, unchanged. */
export const ORIGINAL_EXAMPLE = {
  command: "create_user",
  version: "1",
  payload: { name: "Sahil", email: "sahil@example.com" },
  log: { level: "INFO", message: "User registration triggered" },
  metadata: { idempotency_key: "3f0f8a0e-signup-sahil", source: "user-service" },
};

/** Deterministic PRNG (mulberry32) so a failure can be replayed from its seed. */
export function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T,>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, pick };
}
