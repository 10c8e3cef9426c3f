/**
 * @module test/db-worker-harness
 * What the db-worker's integration tests and its benchmark share: a world of their own on the real
 * broker and PostgreSQL (unique topics, consumer group and schema, torn down afterwards), command
 * events built and produced the way the api produces them, topics read back, and the role started
 * in this process or as a child process.
 *
 * The worker reaches its schema through `POSTGRES_DSN?search_path=<schema>`: postgres.js sends
 * query parameters it does not know itself as connection parameters, and PostgreSQL takes any
 * setting there. `application_name` is set the same way, so a test can end exactly the worker's
 * sessions (`terminateWorkerSessions`) without touching anyone else's.
 *
 * @example
 * await using world = await createWorld();
 * await produceEvents(world.topics.events, [createUser(1)]);
 * const worker = await startWorker(world);
 * await waitFor(async () => (await world.count("idempotency_log")) === 1);
 * await worker.stop();
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import postgres, { type Sql } from "postgres";
import { loadConfig, type Config } from "../src/config.ts";
import type { CommandEvent } from "../src/contracts.ts";
import { Admin } from "../src/kafka/admin.ts";
import { Consumer } from "../src/kafka/consumer.ts";
import { Producer } from "../src/kafka/producer.ts";
import type { DeliveryReport, Message } from "../src/kafka/types.ts";
import { createLogger } from "../src/logger.ts";
import { run } from "../src/main.ts";
import { migrate } from "../src/db/migrations.ts";
import { TEST_DSN, withSchema, type TestSchema } from "./pg.ts";

import { waitFor } from "./wait.ts";
export { waitFor };

export const BROKERS = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";
const REPO = new URL("..", import.meta.url).pathname;

export interface World {
  id: string;
  topics: { events: string; results: string; logs: string; dlq: string };
  group: string;
  /** The test's PostgreSQL schema; `db.sql` is a pool on it (not the worker's). */
  db: TestSchema;
  /** The DSN the worker gets: the test DSN with `search_path` and `application_name`. */
  dsn: string;
  /** `application_name` of the worker's sessions. */
  appName: string;
  /** The environment a db-worker of this world runs with (in-process or as a child). */
  env: Record<string, string>;
  count(table: "users" | "idempotency_log"): Promise<number>;
  /** Messages on a topic now (sum of high watermarks; nothing of ours is ever deleted). */
  depth(topic: string): number;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Unique topics (created by the role's ensureTopics), group and schema; `migrate` runs the migrations first. */
export async function createWorld({ migrate: migrateFirst = false }: { migrate?: boolean } = {}): Promise<World> {
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  const prefix = `kitsune-test-dbw-${id}`;
  const topics = { events: `${prefix}-events`, results: `${prefix}-results`, logs: `${prefix}-logs`, dlq: `${prefix}-events.dlq` };
  const group = `${prefix}-group`;
  const db = await withSchema();
  if (migrateFirst) await migrate(db.sql, `${REPO}sql`);
  const appName = `kitsune-test-dbw-${id}`;
  const url = new URL(TEST_DSN);
  url.searchParams.set("search_path", db.schema);
  url.searchParams.set("application_name", appName);
  const dsn = url.toString();
  const env: Record<string, string> = {
    ROLE: "db-worker",
    HTTP_PORT: "0",
    KAFKA_BROKERS: BROKERS,
    KAFKA_GROUP_ID: group,
    POSTGRES_DSN: dsn,
    SQL_DIR: `${REPO}sql`,
    TOPIC_EVENTS: topics.events,
    TOPIC_RESULTS: topics.results,
    TOPIC_LOGS: topics.logs,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
  };
  let admin: Admin | undefined;
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      admin?.close();
      admin = undefined;
      await db.drop();
      const cleanup = new Admin({ "bootstrap.servers": BROKERS });
      try {
        await cleanup.deleteTopics([topics.events, topics.results, topics.logs, topics.dlq, `${topics.logs}.dlq`]).catch(() => {});
      } finally {
        cleanup.close();
      }
    })());
  return {
    id,
    topics,
    group,
    db,
    dsn,
    appName,
    env,
    async count(table) {
      const [row] = await db.sql.unsafe(`SELECT count(*)::int AS n FROM ${table}`);
      return row!.n as number;
    },
    depth(topic) {
      admin ??= new Admin({ "bootstrap.servers": BROKERS });
      const partitions = admin.metadata().topics.find((t) => t.name === topic)?.partitions ?? [];
      return partitions.reduce((sum, p) => sum + admin!.watermarks(topic, p.id).high, 0);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The configuration the role gets for this world, parsed as `main` parses the environment. */
export function worldConfig(world: World, extra: Record<string, string> = {}): Config {
  return loadConfig({ ...world.env, ...extra });
}

export interface RunningWorker {
  port: number;
  stop(): Promise<void>;
  metrics(): Promise<string>;
  readyz(): Promise<{ status: number; body: any }>;
}

/** Starts the db-worker in this process behind its HTTP server (`/readyz`, `/metrics`), as `main` does. */
export async function startWorker(world: World, extra: Record<string, string> = {}): Promise<RunningWorker> {
  const config = worldConfig(world, extra);
  const handle = await run(config, createLogger(config.logLevel));
  const base = `http://127.0.0.1:${handle.port}`;
  return {
    port: handle.port,
    stop: handle.stop,
    metrics: async () => (await fetch(`${base}/metrics`)).text(),
    readyz: async () => {
      const res = await fetch(`${base}/readyz`);
      return { status: res.status, body: await res.json() };
    },
  };
}

/** The value of an unlabelled gauge or counter in Prometheus text, or undefined. */
export function metricValue(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Spawns `bun src/main.ts` with the world's environment (and `extra`), output piped. */
export function spawnWorker(world: World, extra: Record<string, string> = {}) {
  return Bun.spawn(["bun", `${REPO}src/main.ts`], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...world.env, ...extra },
    stdout: "pipe",
    stderr: "pipe",
  });
}

/** A `CommandEvent` as the api writes it to `db-events`. */
export function commandEvent(
  command: string,
  payload: Record<string, unknown>,
  { version = "1", key = crypto.randomUUID() }: { version?: string; key?: string } = {},
): CommandEvent {
  return {
    id: crypto.randomUUID(),
    command,
    version,
    payload,
    metadata: { idempotency_key: key, timestamp: new Date().toISOString(), source: "db-worker-test" },
  };
}

/** `create_user` number `i` of a run: `user-<i>@<tag>.test`, idempotency key `<tag>-<i>`. */
export function createUser(i: number, tag = "t"): CommandEvent {
  return commandEvent("create_user", { name: `User ${i}`, email: `user-${i}@${tag}.test` }, { key: `${tag}-${i}` });
}

export interface RawEvent {
  value: string | Uint8Array | null;
  key?: string | null;
  headers?: Record<string, string>;
}

/**
 * Produces events with the api's key and headers (partition key: the payload's email, else the
 * idempotency key); raw values go as they are. Resolves once the broker holds them all.
 */
export async function produceEvents(topic: string, events: (CommandEvent | RawEvent)[], { window = 20_000 } = {}): Promise<DeliveryReport[]> {
  const producer = new Producer({ "bootstrap.servers": BROKERS, "linger.ms": 5 });
  const reports: DeliveryReport[] = [];
  try {
    for (let i = 0; i < events.length; i += window) {
      reports.push(...(await producer.sendAll(events.slice(i, i + window).map((e) => toOutgoing(topic, e)))));
    }
  } finally {
    await producer.close(5000);
  }
  return reports;
}

function toOutgoing(topic: string, e: CommandEvent | RawEvent) {
  if ("value" in e) return { topic, value: e.value, key: e.key ?? null, headers: e.headers };
  const email = e.payload.email;
  return {
    topic,
    key: typeof email === "string" ? email : e.metadata.idempotency_key,
    value: JSON.stringify(e),
    headers: { "content-type": "application/json", "kitsune-id": e.id },
  };
}

/**
 * Reads `topic` from the beginning with a group of its own until `count` messages arrived (or
 * `timeoutMs` passed: then it returns what it has). Values and keys are copied out.
 */
export async function readTopic(topic: string, count: number, { timeoutMs = 30_000 } = {}): Promise<Message[]> {
  const consumer = new Consumer({ "bootstrap.servers": BROKERS, "group.id": `kitsune-test-reader-${crypto.randomUUID()}` });
  const out: Message[] = [];
  const timer = setTimeout(() => void consumer.close(), timeoutMs);
  try {
    consumer.subscribe([topic]);
    for await (const batch of consumer.batches({ maxMessages: 10_000, maxWaitMs: 10 })) {
      for (const m of batch) out.push({ ...m, key: m.key && m.key.slice(), value: m.value && m.value.slice() });
      if (out.length >= count) break;
    }
  } finally {
    clearTimeout(timer);
    await consumer.close();
  }
  return out;
}

const decoder = new TextDecoder();
export const text = (b: Uint8Array | null): string | null => (b ? decoder.decode(b) : null);
export const json = (m: Message): any => JSON.parse(text(m.value)!);

export interface Collector {
  /** Every message read so far, in arrival order (values and keys copied). */
  messages: Message[];
  on(topic: string): Message[];
  /** Waits until `check(messages)` holds. */
  until(check: (messages: Message[]) => boolean, what: string, options?: { timeoutMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/** Reads `topics` from the beginning, in the background, with a group of its own. The topics must exist. */
export function collect(topics: string[]): Collector {
  const consumer = new Consumer({ "bootstrap.servers": BROKERS, "group.id": `kitsune-test-collector-${crypto.randomUUID()}` });
  consumer.subscribe(topics);
  const messages: Message[] = [];
  const loop = (async () => {
    for await (const batch of consumer.batches({ maxMessages: 10_000, maxWaitMs: 5 })) {
      for (const m of batch) messages.push({ ...m, key: m.key && m.key.slice(), value: m.value && m.value.slice() });
    }
  })();
  return {
    messages,
    on: (topic) => messages.filter((m) => m.topic === topic),
    until: (check, what, { timeoutMs = 30_000 } = {}) => waitFor(() => check(messages), what, { timeoutMs }),
    async stop() {
      await consumer.close();
      await loop.catch(() => {});
    },
  };
}

/**
 * A TCP proxy in front of PostgreSQL, so a test can make the database unreachable for one worker
 * without touching the server others use: `cut()` drops every connection and refuses new ones
 * (the port stops listening), `restore()` listens again on the same port.
 */
export async function pgProxy(target = new URL(TEST_DSN)): Promise<{ port: number; dsn(world: World): string; cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const upstream = { host: target.hostname, port: Number(target.port || 5432) };
  const live = new Set<Socket>();
  const track = (s: Socket) => {
    live.add(s);
    s.on("close", () => live.delete(s));
    s.on("error", () => s.destroy());
  };
  const serve = (): Server =>
    createServer((client) => {
      const server = connect(upstream);
      track(client);
      track(server);
      client.on("close", () => server.destroy());
      server.on("close", () => client.destroy());
      client.pipe(server);
      server.pipe(client);
    });
  const listen = (srv: Server, port: number) =>
    new Promise<number>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(port, "127.0.0.1", () => resolve((srv.address() as { port: number }).port));
    });
  let srv: Server | undefined = serve();
  const port = await listen(srv, 0);
  const stopListening = async () => {
    const s = srv;
    srv = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  return {
    port,
    dsn(world) {
      const url = new URL(world.dsn);
      url.hostname = "127.0.0.1";
      url.port = String(port);
      return url.toString();
    },
    async cut() {
      const closing = stopListening();
      for (const s of live) s.destroy();
      await closing;
    },
    async restore() {
      if (srv) return;
      srv = serve();
      await listen(srv, port);
    },
    async close() {
      const closing = stopListening();
      for (const s of live) s.destroy();
      await closing;
    },
  };
}

/**
 * Ends every PostgreSQL session of the worker (by its `application_name`) from a connection of
 * the same role, which PostgreSQL allows without superuser rights. Returns how many it ended.
 */
export async function terminateWorkerSessions(admin: Sql, appName: string): Promise<number> {
  const rows = await admin`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
    WHERE application_name = ${appName} AND pid <> pg_backend_pid()`;
  return rows.filter((r) => r.ok).length;
}

/** A small pool outside any test schema, for terminating sessions. */
export function adminPool(): Sql {
  return postgres(TEST_DSN, { max: 1, onnotice: () => {} });
}
