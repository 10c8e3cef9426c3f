import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { startFakeLoki } from "../../test/fake-loki.ts";
import type { LogEvent } from "../contracts.ts";
import type { DeliveryReport, Message, MessageSink, OutgoingMessage } from "../kafka/types.ts";
import { silentLogger } from "../logger.ts";
import { createLokiSink } from "./loki-sink.ts";
import { createLogMetrics } from "./metrics.ts";
import * as v from "valibot";
import { rng } from "../../test/fakes.ts";
import { LogEventSchema } from "../contracts.ts";
import { toLokiEntry } from "./loki-format.ts";
import { abortableSleep, backoffDelay, decodeLogMessage, isPlainLogEvent, LOG_BATCH, shipBatch, splitPushes, type ShipDeps } from "./ship.ts";
import { deadLetter } from "../pipeline/dead-letter.ts";

/** Records every `sendAll`; can fail the next N calls. */
class FakeDlq implements MessageSink {
  calls: OutgoingMessage[][] = [];
  failures = 0;
  async sendAll(messages: OutgoingMessage[]): Promise<DeliveryReport[]> {
    if (this.failures > 0) {
      this.failures--;
      throw new Error("broker transport failure");
    }
    this.calls.push(messages);
    return messages.map((m, i) => ({ topic: m.topic, partition: 0, offset: i }));
  }
  get messages(): OutgoingMessage[] {
    return this.calls.flat();
  }
}

const loki = startFakeLoki({ tenant: "kitsune" });
afterAll(() => loki.stop());

let dlq: FakeDlq;
let registry: Registry;
let sleeps: number[];
let deps: ShipDeps;
beforeEach(() => {
  loki.reset();
  dlq = new FakeDlq();
  registry = new Registry();
  sleeps = [];
  deps = {
    sink: createLokiSink({ url: loki.url, tenant: "kitsune", timeoutMs: 2000 }),
    dlq,
    dlqTopic: "app-logs.dlq",
    logger: silentLogger,
    metrics: createLogMetrics(registry),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
  };
});

const enc = new TextEncoder();
const dec = new TextDecoder();

function logEvent(i: number, over: Partial<LogEvent> = {}): LogEvent {
  return {
    id: `id-${i}`,
    level: i % 2 ? "WARN" : "INFO",
    message: `line ${i}`,
    command: "create_user",
    source: "user-service",
    timestamp: new Date(Date.UTC(2024, 4, 1, 12, 0, 0, i)).toISOString(),
    idempotency_key: `key-${i}`,
    ...over,
  };
}

function message(offset: number, value: unknown, partition = 0): Message {
  return {
    topic: "app-logs",
    partition,
    offset,
    key: null,
    value: value === null ? null : enc.encode(typeof value === "string" ? value : JSON.stringify(value)),
    headers: { "content-type": "application/json", "kitsune-id": `id-${offset}` },
    timestamp: Date.UTC(2024, 4, 1),
  };
}

/**
 * The real, abortable sleep, watched: how long each wait was asked to last, whether it ended by
 * its timer or by an abort, and a way to wait until `n` waits have started.
 */
function trackedSleeps() {
  const log: { ms: number; end?: "elapsed" | "aborted" }[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  return {
    log,
    get pending() {
      return log.filter((w) => !w.end).length;
    },
    sleep(ms: number, signal?: AbortSignal): Promise<void> {
      const entry: (typeof log)[number] = { ms };
      log.push(entry);
      for (const w of waiters.filter((w) => log.length >= w.n)) w.resolve();
      return abortableSleep(ms, signal).then(
        () => void (entry.end = "elapsed"),
        (err) => {
          entry.end = "aborted";
          throw err;
        },
      );
    },
    started(n: number): Promise<void> {
      if (log.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
  };
}

const batch = (n: number) => Array.from({ length: n }, (_, i) => message(i, logEvent(i)));
const metric = async (name: string) => (await registry.getSingleMetricAsString(name)).split("\n").filter((l) => !l.startsWith("#"));

describe("shipBatch delivers", () => {
  test("every line with the right labels, exact timestamp and JSON line", async () => {
    await shipBatch(batch(4), deps);
    expect(loki.entries).toHaveLength(4);
    const first = loki.entries.find((e) => e.line.includes('"id":"id-0"'))!;
    expect(first.labels).toEqual({ service: "kitsune", level: "info", source: "user-service", command: "create_user" });
    expect(first.ts).toBe("1714564800000000000");
    expect(JSON.parse(first.line)).toEqual({ level: "info", message: "line 0", command: "create_user", id: "id-0", idempotency_key: "key-0" });
    const warn = loki.entries.find((e) => e.line.includes('"id":"id-1"'))!;
    expect(warn.labels.level).toBe("warn");
    expect(warn.ts).toBe("1714564800001000000");
    expect(loki.requests).toHaveLength(1);
    expect(loki.requests[0]?.gzip).toBe(true);
    expect(dlq.calls).toHaveLength(0);
    expect(await metric("kitsune_log_lines_total")).toEqual(["kitsune_log_lines_total 4"]);
    expect(await metric("kitsune_log_batches_total")).toEqual(["kitsune_log_batches_total 1"]);
  });

  test("in pushes of at most maxPushBytes of JSON", async () => {
    await shipBatch(batch(100), { ...deps, maxPushBytes: 4096 });
    expect(loki.entries).toHaveLength(100);
    expect(loki.requests.length).toBeGreaterThan(3);
    for (const r of loki.requests) expect(r.entries).toBeLessThan(100);
    expect(new Set(loki.entries.map((e) => JSON.parse(e.line).id)).size).toBe(100);
    expect(loki.counters.duplicates).toBe(0);
  });

  test("limits: 20,000 messages or 1 s per batch, ~1 MiB per push, two pushes at once", () => {
    expect(LOG_BATCH).toEqual({ maxMessages: 20_000, maxWaitMs: 1000, maxPushBytes: 1024 * 1024, maxInFlight: 2 });
  });

  test("an empty batch does nothing", async () => {
    await shipBatch([], deps);
    expect(loki.requests).toHaveLength(0);
    expect(dlq.calls).toHaveLength(0);
  });
});

describe("shipBatch retries", () => {
  test("429 then 200: retried, nothing dropped, Retry-After honoured", async () => {
    loki.failNext(429, 2, { retryAfter: "2" });
    await shipBatch(batch(10), deps);
    expect(loki.counters.pushesFailed).toBe(2);
    expect(loki.entries).toHaveLength(10);
    expect(sleeps).toHaveLength(2);
    expect(sleeps.every((ms) => ms >= 2000)).toBe(true);
    expect(dlq.calls).toHaveLength(0);
    expect(await metric("kitsune_log_push_retries_total")).toEqual(['kitsune_log_push_retries_total{cause="429"} 2']);
  });

  test("500: retried with growing, capped backoff", async () => {
    loki.failNext(500, 6);
    await shipBatch(batch(3), { ...deps, backoff: { initialMs: 100, maxMs: 1000 }, random: () => 0.999 });
    expect(loki.entries).toHaveLength(3);
    expect(sleeps).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(dlq.calls).toHaveLength(0);
  });

  test("Loki unreachable: retried until it is back", async () => {
    const gone = startFakeLoki();
    const url = gone.url;
    await gone.stop();
    let attempts = 0;
    const sink = createLokiSink({ url, timeoutMs: 1000 });
    await shipBatch(batch(2), {
      ...deps,
      sink: {
        push: (entries, options) => (++attempts < 3 ? sink.push(entries, options) : deps.sink.push(entries, options)),
      },
    });
    expect(attempts).toBe(3);
    expect(loki.entries).toHaveLength(2);
  });

  test("an abort interrupts the wait and rejects; nothing is dead-lettered", async () => {
    loki.failNext(503, 1000);
    const controller = new AbortController();
    const waits = trackedSleeps();
    const shipping = shipBatch(batch(2), {
      ...deps,
      signal: controller.signal,
      sleep: waits.sleep, // the real, abortable sleep, watched
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    // Aborted once the batch is really waiting for its retry (not before its first push).
    await waits.started(1);
    controller.abort(new Error("shutdown"));
    await expect(shipping).rejects.toThrow("shutdown");
    // The 30–60 s wait ended by the abort, not by its timer.
    expect(waits.log).toEqual([{ ms: expect.any(Number), end: "aborted" }]);
    expect(waits.log[0]!.ms).toBeGreaterThanOrEqual(30_000);
    expect(dlq.calls).toHaveLength(0);
    expect(await metric("kitsune_log_batches_total")).toEqual(["kitsune_log_batches_total 0"]);
  });

  test("a failing DLQ write is retried until it succeeds", async () => {
    dlq.failures = 2;
    await shipBatch([message(0, "not json")], deps);
    expect(dlq.messages).toHaveLength(1);
    expect(sleeps).toHaveLength(2);
  });
});

describe("shipBatch dead-letters", () => {
  test("a 400 for two lines: exactly those go to the DLQ with Loki's reason, the rest is delivered", async () => {
    const refused = new Set(['"id":"id-3"', '"id":"id-11"']);
    loki.rejectWhen((e) => [...refused].some((s) => e.line.includes(s)) && "line too long for tenant 'kitsune'");
    const messages = batch(16);
    await shipBatch(messages, deps);

    expect(dlq.calls).toHaveLength(1);
    const dead = dlq.messages;
    expect(dead.map((m) => m.headers?.["kitsune-original-offset"]).sort()).toEqual(["11", "3"]);
    for (const m of dead) {
      expect(m.topic).toBe("app-logs.dlq");
      expect(m.headers?.["kitsune-error"]).toContain("line too long for tenant 'kitsune'");
      const original = messages[Number(m.headers?.["kitsune-original-offset"])]!;
      expect(m.value).toEqual(original.value);
    }
    const delivered = new Set(loki.entries.map((e) => JSON.parse(e.line).id));
    expect(delivered.size).toBe(14);
    expect(delivered.has("id-3") || delivered.has("id-11")).toBe(false);
    // Loki stored the valid entries of each refused push too; re-pushing them was harmless.
    expect(loki.counters.duplicates).toBeGreaterThan(0);
    expect(loki.entries).toHaveLength(14);
    expect(await metric("kitsune_log_lines_total")).toEqual(["kitsune_log_lines_total 14"]);
    expect(await metric("kitsune_log_dead_letters_total")).toEqual(['kitsune_log_dead_letters_total{reason="rejected"} 2']);
  });

  test("an unparseable value goes straight to the DLQ with its original bytes and context", async () => {
    const bad = { ...message(7, "{not json", 2), key: enc.encode("k") };
    const notAnEvent = message(8, { hello: "world" }, 2);
    const badTime = message(9, logEvent(9, { timestamp: "yesterday" }), 2);
    const tombstone = message(10, null, 2);
    await shipBatch([message(6, logEvent(6), 2), bad, notAnEvent, badTime, tombstone], deps);

    expect(loki.entries).toHaveLength(1);
    expect(dlq.calls).toHaveLength(1);
    const [first, second, third, fourth] = dlq.messages;
    expect(first?.key).toEqual(enc.encode("k"));
    expect(dec.decode(first?.value as Uint8Array)).toBe("{not json");
    expect(first?.headers).toMatchObject({
      "content-type": "application/json",
      "kitsune-id": "id-7",
      "kitsune-original-topic": "app-logs",
      "kitsune-original-partition": "2",
      "kitsune-original-offset": "7",
    });
    expect(first?.headers?.["kitsune-error"]).toStartWith("value is not JSON");
    expect(second?.headers?.["kitsune-error"]).toStartWith("value is not a LogEvent");
    expect(third?.headers?.["kitsune-error"]).toContain("yesterday");
    expect(fourth?.value).toBeNull();
    expect(fourth?.headers?.["kitsune-error"]).toContain("tombstone");
    expect(await metric("kitsune_log_dead_letters_total")).toEqual(['kitsune_log_dead_letters_total{reason="decode"} 4']);
  });

  test("a batch Loki refuses entirely ends up entirely in the DLQ, and nothing is stored", async () => {
    loki.rejectWhen(() => "timestamp too old");
    await shipBatch(batch(5), deps);
    expect(dlq.messages).toHaveLength(5);
    expect(loki.entries).toHaveLength(0);
  });
});

describe("helpers", () => {
  test("decodeLogMessage accepts any-case levels", () => {
    const decoded = decodeLogMessage(message(0, { ...logEvent(0), level: "error" }));
    expect(decoded.ok && decoded.entry.labels.level).toBe("error");
  });

  test("a dead letter without a content type says octet-stream and caps the error", () => {
    const m = { ...message(1, "x"), headers: {} };
    const now = new Date();
    const out = deadLetter(m, "app-logs.dlq", { error: "e".repeat(10_000), attempts: 1, firstFailure: now, lastFailure: now });
    expect(out.headers?.["content-type"]).toBe("application/octet-stream");
    expect(out.headers?.["kitsune-error"]!.length).toBe(2048);
  });

  test("backoffDelay: equal jitter, capped", () => {
    const opts = { initialMs: 100, maxMs: 1000 };
    expect(backoffDelay(0, opts, () => 0)).toBe(50);
    expect(backoffDelay(0, opts, () => 0.999999)).toBe(100);
    expect(backoffDelay(3, opts, () => 0)).toBe(400);
    expect(backoffDelay(50, opts, () => 0)).toBe(500);
    expect(backoffDelay(50, opts, () => 0.999999)).toBe(1000);
  });
});

describe("shipBatch while Loki is unavailable", () => {
  test("onRetry before every wait, onRecovered once the retried push is answered", async () => {
    loki.failNext(503, 2);
    const calls: string[] = [];
    await shipBatch(batch(5), {
      ...deps,
      onRetry: ({ attempt, cause }) => calls.push(`retry ${attempt} ${cause}`),
      onRecovered: () => calls.push("recovered"),
    });
    expect(calls).toEqual(["retry 1 503", "retry 2 503", "recovered"]);
    expect(loki.entries).toHaveLength(5);
  });

  test("no hook calls when every push succeeds at once", async () => {
    const calls: string[] = [];
    await shipBatch(batch(5), { ...deps, onRetry: () => calls.push("retry"), onRecovered: () => calls.push("recovered") });
    expect(calls).toEqual([]);
  });

  test("with several pushes failing, onRecovered comes only when none is waiting any more", async () => {
    loki.failNext(429, 2); // both pushes in flight fail once
    const calls: string[] = [];
    await shipBatch(batch(200), {
      ...deps,
      maxPushBytes: 8192,
      maxInFlight: 2,
      onRetry: () => calls.push("retry"),
      onRecovered: () => calls.push("recovered"),
    });
    expect(calls.filter((c) => c === "recovered")).toHaveLength(1);
    expect(calls.at(-1)).toBe("recovered");
    expect(calls.lastIndexOf("retry")).toBeLessThan(calls.indexOf("recovered"));
    expect(new Set(loki.entries.map((e) => JSON.parse(e.line).id)).size).toBe(200);
  });

  test("a failing DLQ write counts as unavailable too", async () => {
    dlq.failures = 1;
    const calls: string[] = [];
    await shipBatch([message(0, "not json")], { ...deps, onRetry: ({ cause }) => calls.push(cause), onRecovered: () => calls.push("recovered") });
    expect(calls).toEqual(["dlq", "recovered"]);
  });
});

describe("shipBatch pipelines its pushes", () => {
  test("at most maxInFlight pushes at once, every line delivered", async () => {
    let inFlight = 0;
    let peak = 0;
    const sink = deps.sink;
    await shipBatch(batch(300), {
      ...deps,
      maxPushBytes: 4096,
      maxInFlight: 3,
      sink: {
        push: async (entries, options) => {
          peak = Math.max(peak, ++inFlight);
          await Bun.sleep(2);
          try {
            return await sink.push(entries, options);
          } finally {
            inFlight--;
          }
        },
      },
    });
    expect(peak).toBe(3);
    expect(new Set(loki.entries.map((e) => JSON.parse(e.line).id)).size).toBe(300);
    expect(loki.counters.duplicates).toBe(0);
  });

  test("one push at a time with maxInFlight 1", async () => {
    let inFlight = 0;
    let peak = 0;
    const sink = deps.sink;
    await shipBatch(batch(100), {
      ...deps,
      maxPushBytes: 2048,
      maxInFlight: 1,
      sink: {
        push: async (entries, options) => {
          peak = Math.max(peak, ++inFlight);
          await Bun.sleep(1);
          try {
            return await sink.push(entries, options);
          } finally {
            inFlight--;
          }
        },
      },
    });
    expect(peak).toBe(1);
    expect(loki.entries).toHaveLength(100);
  });

  test("an abort stops every push of the batch and rejects once", async () => {
    loki.failNext(503, 1000);
    const controller = new AbortController();
    const waits = trackedSleeps();
    let pushing = 0;
    const sink = deps.sink;
    const shipping = shipBatch(batch(100), {
      ...deps,
      maxPushBytes: 2048,
      signal: controller.signal,
      sleep: waits.sleep,
      backoff: { initialMs: 60_000, maxMs: 60_000 },
      sink: {
        push: async (entries, options) => {
          pushing++;
          try {
            return await sink.push(entries, options);
          } finally {
            pushing--;
          }
        },
      },
    });
    // Both pushes in flight (maxInFlight 2) are waiting for their retry when the abort comes.
    await waits.started(2);
    controller.abort(new Error("revoked"));
    await expect(shipping).rejects.toThrow("revoked");
    // Nothing keeps retrying in the background: when shipBatch has rejected, no push is on its
    // way and every wait ended by the abort (none is left whose timer could start another push).
    expect(pushing).toBe(0);
    expect(waits.pending).toBe(0);
    expect(waits.log.map((w) => w.end)).toEqual(["aborted", "aborted"]);
    expect(loki.counters.pushesFailed).toBe(2);
    expect(dlq.calls).toHaveLength(0);
  });

  test("splitPushes cuts at maxBytes and keeps order", () => {
    const items = Array.from({ length: 50 }, (_, i) => ({ entry: { labels: {}, ts: "1", line: "x".repeat(100) }, bytes: 100, i }));
    const pushes = splitPushes(items, 1000);
    expect(pushes.flat().map((p) => p.i)).toEqual(items.map((p) => p.i));
    for (const p of pushes) expect(p.length).toBeLessThanOrEqual(9); // 109 bytes each
    expect(splitPushes([{ entry: { labels: {}, ts: "1", line: "big" }, bytes: 5000 }], 1000)).toHaveLength(1);
  });
});

describe("isPlainLogEvent, the shortcut past LogEventSchema", () => {
  test("accepts only what the schema accepts, and the usual event; decoding gives the schema's entry", () => {
    const r = rng(7);
    const anyValue = () => r.pick<unknown>(["s", "", 1, null, true, [], {}, undefined, "INFO", "info", "Warn", "TRACE"]);
    const fields = ["id", "level", "message", "command", "source", "timestamp", "idempotency_key"];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const x: Record<string, unknown> = {
        id: "0193a2b4", level: r.pick(["INFO", "ERROR", "info", "Warn", "TRACE"]), message: "m", command: "create_user",
        source: "it", timestamp: "2025-01-01T00:00:00.123Z", idempotency_key: "k",
      };
      for (let k = r.int(3); k > 0; k--) {
        const f = r.pick(fields);
        if (r.int(4) === 0) delete x[f];
        else x[f] = anyValue();
      }
      if (r.int(10) === 0) x.extra = anyValue();
      const value = r.int(50) === 0 ? r.pick<unknown>([null, [], "s", 1]) : x;
      if (isPlainLogEvent(value)) {
        accepted++;
        expect([value, v.is(LogEventSchema, value)]).toEqual([value, true]);
        const m = { value: new TextEncoder().encode(JSON.stringify(value)) } as Message;
        let viaSchema: ReturnType<typeof decodeLogMessage>;
        try {
          viaSchema = { ok: true as const, entry: toLokiEntry(v.parse(LogEventSchema, value)) };
        } catch (err) {
          viaSchema = { ok: false as const, error: `value is not a LogEvent: ${(err as Error).message}` };
        }
        expect(decodeLogMessage(m)).toEqual(viaSchema);
      }
    }
    expect(accepted).toBeGreaterThan(1000);
  });
});
