// Needs the Kafka broker (KAFKA_BROKERS, default 127.0.0.1:9092). Every test has topics and a
// consumer group of its own; Loki is test/fake-loki.ts. The crash tests run the role as a child
// process (`bun src/main.ts` with ROLE=log-worker) and SIGKILL it.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { startFakeLoki, type FakeLoki } from "../../test/fake-loki.ts";
import { waitFor } from "../../test/wait.ts";
import { loadConfig } from "../config.ts";
import type { LogEvent } from "../contracts.ts";
import { Admin, Consumer, Producer, type Message, type OutgoingMessage } from "../kafka/index.ts";
import { silentLogger } from "../logger.ts";
import type { Service } from "../service.ts";
import { start } from "./log-worker.ts";

setDefaultTimeout(90_000);

const BROKERS = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";
const REPO = join(import.meta.dir, "../..");
const LOGS_DIR = mkdtempSync(join(tmpdir(), "kitsune-log-worker-"));

let producer: Producer;
let admin: Admin;
const topics: string[] = [];

beforeAll(() => {
  producer = new Producer({ "bootstrap.servers": BROKERS, "linger.ms": 5 });
  admin = new Admin({ "bootstrap.servers": BROKERS });
});
afterAll(async () => {
  await producer.close();
  await admin.deleteTopics(topics).catch(() => {});
  admin.close();
});

/** A topic (3 partitions, like app-logs, plus its DLQ) and a consumer group of the test's own. */
async function fresh(): Promise<{ logs: string; group: string }> {
  const id = crypto.randomUUID().slice(0, 8);
  const logs = `test-logs-${id}`;
  topics.push(logs, `${logs}.dlq`);
  // Created before anything is produced: the broker would auto-create it with one partition.
  await admin.createTopics([{ name: logs, partitions: 3 }, { name: `${logs}.dlq`, partitions: 1 }]);
  return { logs, group: `test-log-worker-${id}` };
}

function env(t: { logs: string; group: string }, loki: FakeLoki, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ROLE: "log-worker",
    KAFKA_BROKERS: BROKERS,
    TOPIC_LOGS: t.logs,
    KAFKA_GROUP_ID: t.group,
    LOKI_URL: loki.url,
    LOG_LEVEL: "silent",
    ...extra,
  };
}

function logEvent(i: number, over: Partial<LogEvent> = {}): LogEvent {
  return {
    id: `0190a5e4-7b1c-7def-8abc-${String(i).padStart(12, "0")}`,
    level: "INFO",
    message: `line ${i}`,
    command: "create_user",
    source: "user-service",
    timestamp: new Date(Date.UTC(2025, 2, 1, 10, 0, 0) + i).toISOString(),
    idempotency_key: `key-${i}`,
    ...over,
  };
}

/** Produces events (or raw values), as the api does: JSON with the content-type and id headers. */
async function produce(topic: string, values: (LogEvent | string)[]): Promise<void> {
  const CHUNK = 20_000;
  for (let from = 0; from < values.length; from += CHUNK) {
    const messages: OutgoingMessage[] = values.slice(from, from + CHUNK).map((v) => ({
      topic,
      value: typeof v === "string" ? v : JSON.stringify(v),
      headers: { "content-type": "application/json", ...(typeof v === "string" ? {} : { "kitsune-id": v.id }) },
    }));
    await producer.sendAll(messages);
  }
}

const waitUntil = (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> => waitFor(check, what, { timeoutMs });

const idOf = (line: string) => (JSON.parse(line) as { id: string }).id;

/** Reads `count` messages of a topic with a group of its own. */
async function readTopic(topic: string, count: number, timeoutMs = 30_000): Promise<Message[]> {
  const consumer = new Consumer({ "bootstrap.servers": BROKERS, "group.id": `test-reader-${crypto.randomUUID()}` });
  consumer.subscribe([topic]);
  const out: Message[] = [];
  const timer = setTimeout(() => void consumer.close(), timeoutMs);
  try {
    for await (const batch of consumer.batches({ maxMessages: 1000, maxWaitMs: 50 })) {
      out.push(...batch);
      if (out.length >= count) break;
    }
  } finally {
    clearTimeout(timer);
    await consumer.close();
  }
  return out;
}

/** A metric's samples as `{labels} value` lines. */
async function samples(registry: Registry, name: string): Promise<{ labels: string; value: number }[]> {
  const text = await registry.getSingleMetricAsString(name).catch(() => "");
  return text
    .split("\n")
    .filter((l) => l.startsWith(name))
    .map((l) => ({ labels: l.slice(name.length, l.lastIndexOf(" ")), value: Number(l.slice(l.lastIndexOf(" ") + 1)) }));
}
const total = async (registry: Registry, name: string) => (await samples(registry, name)).reduce((s, x) => s + x.value, 0);

describe("log-worker (in process)", () => {
  let loki: FakeLoki;
  let service: Service | undefined;
  beforeAll(() => {
    loki = startFakeLoki({ tenant: "acme", auth: { username: "grafana", password: "s3cret" } });
  });
  afterAll(async () => {
    await service?.stop();
    await loki.stop();
  });

  /** Starts the role (stopping the previous test's); set up the fake Loki before. */
  async function run(t: { logs: string; group: string }): Promise<Registry> {
    await service?.stop();
    const registry = new Registry();
    const config = loadConfig(env(t, loki, { LOKI_TENANT: "acme", LOKI_USERNAME: "grafana", LOKI_PASSWORD: "s3cret" }));
    service = await start(config, { logger: silentLogger, registry });
    return registry;
  }

  test("lines arrive with low-cardinality labels, the event's timestamp and a JSON line; offsets are committed", async () => {
    const t = await fresh();
    const events = [
      logEvent(0, { level: "INFO", timestamp: "2025-03-01T10:00:00.123Z" }),
      logEvent(1, { level: "warn" as LogEvent["level"], source: "billing", command: "update_user", timestamp: "2025-03-01T12:00:00.123456789+02:00" }),
      logEvent(2, { level: "ERROR", source: "billing", timestamp: "2025-03-01T10:00:01Z", message: 'quote " and ünïcödé' }),
      ...Array.from({ length: 27 }, (_, i) => logEvent(3 + i, { level: i % 2 ? "DEBUG" : "FATAL" })),
    ];
    await produce(t.logs, events);
    loki.reset();
    const registry = await run(t);
    await waitUntil("every line is in Loki", () => loki.entries.length === events.length);

    const byId = new Map(loki.entries.map((e) => [idOf(e.line), e]));
    for (const event of events) {
      const entry = byId.get(event.id)!;
      expect(entry.labels).toEqual({ service: "kitsune", level: event.level.toLowerCase(), source: event.source, command: event.command });
      expect(JSON.parse(entry.line)).toEqual({
        level: event.level.toLowerCase(),
        message: event.message,
        command: event.command,
        id: event.id,
        idempotency_key: event.idempotency_key,
      });
      if (event.timestamp.endsWith("Z") && !event.timestamp.includes("456")) {
        expect(entry.ts).toBe(String(BigInt(Date.parse(event.timestamp)) * 1_000_000n));
      }
    }
    // Nanoseconds and the offset survive exactly (12:00 +02:00 is 10:00 UTC).
    expect(byId.get(events[1]!.id)!.ts).toBe("1740823200123456789");
    // Few streams: one per level/source/command, never per id.
    expect(new Set(loki.entries.map((e) => JSON.stringify(e.labels))).size).toBeLessThanOrEqual(5);

    for (const r of loki.requests) {
      expect(r.gzip).toBe(true);
      expect(r.headers["x-scope-orgid"]).toBe("acme");
      expect(r.headers.authorization).toBe(`Basic ${btoa("grafana:s3cret")}`);
    }
    // Loki has the lines a moment before the worker has read its answer.
    await waitUntil("the lines are counted", async () => (await total(registry, "kitsune_log_lines_total")) === events.length);
    expect(await total(registry, "kitsune_log_bytes_shipped_total")).toBeGreaterThan(0);
    expect(await total(registry, "kitsune_log_batches_total")).toBeGreaterThan(0);
    // Committed: the lag (high watermark minus committed offset, from librdkafka's statistics) drops
    // to 0. (Partitions without messages or commits report none.)
    await waitUntil("the consumer lag is 0", async () => {
      const lag = await samples(registry, "kitsune_consumer_lag");
      return lag.length > 0 && lag.every((s) => s.value === 0);
    });
  });

  test("/readyz follows Loki's /ready", async () => {
    const t = await fresh();
    loki.reset();
    await run(t);
    await waitUntil("ready", async () => (await service!.ready()).ok);
    loki.setReady(false);
    const down = await service!.ready();
    expect(down.ok).toBe(false);
    expect(down.checks.loki).toContain("503");
    loki.setReady(true);
    expect((await service!.ready()).ok).toBe(true);
  });

  test("a 400 dead-letters only the refused entries, with Loki's reason; the rest is delivered", async () => {
    const t = await fresh();
    const events = Array.from({ length: 40 }, (_, i) => logEvent(i, i % 13 === 5 ? { message: "too old" } : {}));
    const refused = events.filter((e) => e.message === "too old");
    expect(refused.length).toBe(3);
    await produce(t.logs, [...events, "{not json"]);
    loki.reset();
    loki.rejectWhen((e) => e.line.includes('"message":"too old"') && "entry too far behind, oldest acceptable timestamp is: 2025-03-01T10:00:00Z");
    const registry = await run(t);

    const dead = await readTopic(`${t.logs}.dlq`, refused.length + 1);
    await waitUntil("the accepted lines are in Loki", () => loki.entries.length === events.length - refused.length);

    expect(new Set(loki.entries.map((e) => idOf(e.line)))).toEqual(new Set(events.filter((e) => e.message !== "too old").map((e) => e.id)));
    expect(dead).toHaveLength(refused.length + 1);
    const text = (m: Message) => new TextDecoder().decode(m.value!);
    const rejected = dead.filter((m) => m.headers["kitsune-error"]?.includes("entry too far behind"));
    expect(rejected.map((m) => (JSON.parse(text(m)) as LogEvent).id).sort()).toEqual(refused.map((e) => e.id).sort());
    for (const m of rejected) {
      expect(m.headers["kitsune-original-topic"]).toBe(t.logs);
      expect(m.headers["kitsune-id"]).toBe((JSON.parse(text(m)) as LogEvent).id);
      expect(m.headers["content-type"]).toBe("application/json");
    }
    const garbage = dead.find((m) => text(m) === "{not json")!;
    expect(garbage.headers["kitsune-error"]).toStartWith("value is not JSON");
    expect(await samples(registry, "kitsune_log_dead_letters_total")).toEqual([
      { labels: '{reason="rejected"}', value: 3 },
      { labels: '{reason="decode"}', value: 1 },
    ].sort((a, b) => (a.labels < b.labels ? -1 : 1)));
  });

  test("while Loki fails the partitions are paused, and resumed once it answers", async () => {
    const t = await fresh();
    const events = Array.from({ length: 500 }, (_, i) => logEvent(i));
    await produce(t.logs, events);
    loki.reset();
    loki.failNext(503, 1_000_000); // until the test has seen the pause (a few 503s could pass unseen)
    const registry = await run(t);
    await waitUntil("the partitions are paused", async () => (await total(registry, "kitsune_log_partitions_paused")) === 3);
    await waitUntil("two retries", async () => (await total(registry, "kitsune_log_push_retries_total")) >= 2);
    const failed = loki.counters.pushesFailed;
    loki.reset(); // Loki answers again
    await waitUntil("every line is in Loki", () => loki.entries.length === events.length);
    await waitUntil("the partitions are resumed", async () => (await total(registry, "kitsune_log_partitions_paused")) === 0);
    expect(await samples(registry, "kitsune_log_push_retries_total")).toEqual([{ labels: '{cause="503"}', value: failed }]);
  });
});

/** The role as a child process, as it runs in production. */
class Worker {
  readonly proc: ReturnType<typeof Bun.spawn>;
  readonly port: number;
  readonly log: string;

  constructor(vars: Record<string, string>, name: string) {
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    this.port = server.port;
    server.stop(true);
    this.log = join(LOGS_DIR, `${name}.log`);
    const file = Bun.file(this.log);
    this.proc = Bun.spawn(["bun", "src/main.ts"], {
      cwd: REPO,
      env: {
        ...process.env,
        ...vars,
        LOG_LEVEL: "info",
        HTTP_PORT: String(this.port),
        // The broker's minimum: a restarted worker waits this long for the killed one to leave the group.
        RDKAFKA_SESSION_TIMEOUT_MS: "6000",
      },
      stdin: "ignore",
      stdout: file,
      stderr: file,
    });
  }

  async metric(name: string): Promise<number | undefined> {
    try {
      const text = await (await fetch(`http://127.0.0.1:${this.port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
      const lines = text.split("\n").filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
      return lines.length ? lines.reduce((s, l) => s + Number(l.slice(l.lastIndexOf(" ") + 1)), 0) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Resident memory in bytes, from /proc. */
  rss(): number {
    const status = readFileSync(`/proc/${this.proc.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
  }

  /** Samples `rss()` every 20 ms until `stop()`: the peak, whenever it came. */
  sampleRss(): { peak(): number; samples(): number; stop(): void } {
    let peak = this.rss();
    let samples = 1;
    const timer = setInterval(() => {
      try {
        peak = Math.max(peak, this.rss());
        samples++;
      } catch {} // the process is gone
    }, 20);
    return { peak: () => peak, samples: () => samples, stop: () => clearInterval(timer) };
  }

  /** `/readyz` status, or 0 when the process does not answer. */
  async ready(): Promise<number> {
    try {
      return (await fetch(`http://127.0.0.1:${this.port}/readyz`, { signal: AbortSignal.timeout(2000) })).status;
    } catch {
      return 0;
    }
  }

  kill(): Promise<number> {
    this.proc.kill("SIGKILL");
    return this.proc.exited;
  }

  /** SIGTERM; resolves with the exit code (SIGKILL after 15 s, which the test then reports). */
  async stop(): Promise<number | null> {
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 15_000);
    await this.proc.exited;
    clearTimeout(timer);
    return this.proc.exitCode;
  }

  tail(): string {
    try {
      return readFileSync(this.log, "utf8").trimEnd().split("\n").slice(-15).join("\n");
    } catch {
      return "(no log)";
    }
  }
}

describe("log-worker (child process)", () => {
  let loki: FakeLoki;
  const workers: Worker[] = [];
  beforeAll(() => {
    loki = startFakeLoki();
  });
  afterAll(async () => {
    for (const w of workers) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill("SIGKILL");
    await loki.stop();
  });
  const spawn = (vars: Record<string, string>, name: string) => {
    const w = new Worker(vars, name);
    workers.push(w);
    return w;
  };
  const ids = () => new Set(loki.entries.map((e) => idOf(e.line)));

  test("kill -9 while Loki holds a push it has not answered: the lines are pushed again on restart, none lost", async () => {
    const t = await fresh();
    const events = Array.from({ length: 3000 }, (_, i) => logEvent(i));
    await produce(t.logs, events);
    loki.reset();
    const release = Promise.withResolvers<void>();
    loki.holdAnswers(() => release.promise); // pushes are stored, their 204 held back until the kill

    const first = spawn(env(t, loki), "kill-unanswered-1");
    await loki.waitFor("pushesOk", 1, 60_000).catch((err) => {
      throw new Error(`${err.message}\n${first.tail()}`);
    });
    const stored = loki.entries.length;
    expect(stored).toBeGreaterThan(0);
    await first.kill();
    loki.holdAnswers(undefined);
    release.resolve();

    const second = spawn(env(t, loki), "kill-unanswered-2");
    // The first push was never acknowledged, so its offsets were not committed: pushed again.
    await waitUntil("the unacknowledged lines are pushed again", () => loki.counters.duplicates >= stored).catch((err) => {
      throw new Error(`${err.message} (${loki.counters.duplicates} of ${stored})\n${second.tail()}`);
    });
    expect(ids()).toEqual(new Set(events.map((e) => e.id)));
    expect(await second.stop()).toBe(0);
  });

  test("kill -9 right after Loki answered 2xx: the batch is not committed, its lines come again after restart, none lost", async () => {
    const t = await fresh();
    // ~20 MiB: the first batch is several pushes of ~1 MiB, two of them on their way at once.
    const events = Array.from({ length: 30_000 }, (_, i) => logEvent(i, { message: `line ${i} ${"x".repeat(500)}` }));
    await produce(t.logs, events);
    loki.reset();
    // Push 1 is answered 2xx once push 2 has arrived: push 2 went out before the answer, so it is of
    // the same batch (a batch's pushes start only once the batch before is settled). Push 2 and
    // later ones are held. Push 3 then arrives only once the worker has read push 1's answer.
    const arrived = [1, 2, 3].map(() => Promise.withResolvers<void>());
    const release = Promise.withResolvers<void>();
    loki.holdAnswers(async (n) => {
      arrived[n - 1]?.resolve();
      await (n === 1 ? arrived[1]!.promise : release.promise);
    });

    const first = spawn(env(t, loki), "kill-answered-1");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no third push of the first batch within 60 s (${loki.counters.pushesOk} pushes)\n${first.tail()}`)), 60_000);
    });
    await Promise.race([arrived[2]!.promise, timeout]).finally(() => clearTimeout(timer));
    // Mid-flight for certain: lines in Loki, a 2xx in the worker's hands, the batch not committed.
    const stored = loki.entries.length;
    await first.kill();
    expect(stored).toBeGreaterThan(0);
    loki.holdAnswers(undefined);
    release.resolve();

    const second = spawn(env(t, loki), "kill-answered-2");
    await waitUntil("every line is in Loki", () => ids().size === events.length).catch((err) => {
      throw new Error(`${err.message} (${ids().size} of ${events.length})\n${second.tail()}`);
    });
    expect(ids()).toEqual(new Set(events.map((e) => e.id)));
    // At least once: nothing of that batch was committed, so every line Loki had before the kill
    // was pushed again (Loki keeps one copy of each).
    expect(loki.counters.duplicates).toBeGreaterThanOrEqual(stored);
    expect(loki.entries.length).toBe(events.length);
    expect(await second.stop()).toBe(0);
  });

  test("429 for a while: partitions paused, memory flat while the topic holds far more, then every line arrives", async () => {
    const t = await fresh();
    // A first part the worker may read before Loki's first 429, then five times as much while it is paused.
    const [first, rest] = [30_000, 150_000];
    const events = Array.from({ length: first + rest }, (_, i) => logEvent(i, { message: `line ${i} ${"x".repeat(200)}` }));
    const bytes = (from: number, to: number) => events.slice(from, to).reduce((s, e) => s + JSON.stringify(e).length, 0);
    const [firstBytes, restBytes] = [bytes(0, first), bytes(first, first + rest)];
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
    loki.reset();
    loki.failNext(429, 1_000_000);

    const worker = spawn(env(t, loki), "backpressure");
    await waitUntil("the worker is ready", async () => (await worker.ready()) === 200).catch((err) => {
      throw new Error(`${err.message}\n${worker.tail()}`);
    });
    const baseline = worker.rss(); // before any load: the worker started, its topic empty
    let rss = worker.sampleRss();
    try {
      await produce(t.logs, events.slice(0, first));
      await waitUntil("the worker paused its partitions", async () => (await worker.metric("kitsune_log_partitions_paused")) === 3).catch((err) => {
        throw new Error(`${err.message}\n${worker.tail()}`);
      });
      const beforePause = rss.peak();
      rss.stop();
      const atPause = worker.rss();
      rss = worker.sampleRss();
      // The rest of the topic, while the worker is paused; then the window: until it has tried Loki twice more.
      await produce(t.logs, events.slice(first));
      const retries = (await worker.metric("kitsune_log_push_retries_total")) ?? 0;
      await waitUntil("two more retries", async () => ((await worker.metric("kitsune_log_push_retries_total")) ?? 0) >= retries + 2, 120_000);
      const whilePaused = rss.peak();
      expect(loki.counters.accepted).toBe(0);
      expect(await worker.metric("kitsune_log_partitions_paused")).toBe(3);
      console.log(
        `backpressure: ${mib(firstBytes)} before the pause, ${mib(restBytes)} while paused; worker RSS before the load ${mib(baseline)}, ` +
          `peak until paused ${mib(beforePause)}, at the pause ${mib(atPause)}, peak while paused ${mib(whilePaused)} (${rss.samples()} samples)`,
      );
      // While Loki keeps answering 429 the worker reads nothing more into memory: what came after
      // the pause leaves its memory flat, and since the start (warming up included) it grew by less
      // than the topic holds.
      expect(whilePaused - atPause).toBeLessThan(restBytes / 4);
      expect(whilePaused - baseline).toBeLessThan(firstBytes + restBytes);

      loki.reset(); // Loki answers again
      await waitUntil("every line is in Loki", () => ids().size === events.length, 180_000).catch((err) => {
        throw new Error(`${err.message} (${ids().size} of ${events.length})\n${worker.tail()}`);
      });
      console.log(`backpressure: peak RSS while shipping the ${events.length} lines ${mib(rss.peak())}`);
      await waitUntil("the partitions are resumed", async () => (await worker.metric("kitsune_log_partitions_paused")) === 0);
    } finally {
      rss.stop();
    }
    expect(await worker.stop()).toBe(0);
  }, 300_000);
});
