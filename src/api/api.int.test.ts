/**
 * The api role against the real broker (KAFKA_BROKERS, default 127.0.0.1:9092) and PostgreSQL
 * (POSTGRES_DSN, default the local kitsune database). Every test works on topics of its own
 * (`it-api-<random>.…`, deleted afterwards) and PostgreSQL in a schema of its own.
 *
 * The broker-outage test runs against librdkafka's mock cluster instead, which can be taken down
 * and brought back; librdkafka's mock supports transactions, so both modes are tested there.
 */
import { ORIGINAL_EXAMPLE } from "../../test/fakes.ts";
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import * as v from "valibot";
import { migrate } from "../db/migrations.ts";
import { withSchema, type TestSchema } from "../../test/pg.ts";
import { waitFor } from "../../test/wait.ts";
import { ensureTopics, kafkaConfig, topicSpecs } from "../broker.ts";
import type { Config } from "../config.ts";
import { AcceptedSchema, CommandEventSchema, CommandStatusSchema, LogEventSchema, ProblemSchema, type CommandResult } from "../contracts.ts";
import { Admin } from "../kafka/admin.ts";
import { Consumer } from "../kafka/consumer.ts";
import type { KafkaError } from "../kafka/errors.ts";
import { MockCluster } from "../kafka/mock.ts";
import { ProduceBreaker } from "./breaker.ts";
import { Producer } from "../kafka/producer.ts";
import { TransactionalProducer } from "../kafka/txn-producer.ts";
import type { Message } from "../kafka/types.ts";
import { silentLogger } from "../logger.ts";
import { createRegistry } from "../metrics.ts";
import { start, type ApiDeps } from "../roles/api.ts";
import type { Service } from "../service.ts";

// A shared 2-core machine with a broker on it: tests and their hooks get more than Bun's 5 s.
setDefaultTimeout(30_000);

const BROKERS = (process.env.KAFKA_BROKERS ?? "127.0.0.1:9092").split(",");
const TOKEN = "it-token-0123456789";

const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

function testConfig({ transactions = true, brokers = BROKERS }: { transactions?: boolean; brokers?: string[] } = {}): Config {
  const prefix = `it-api-${Bun.randomUUIDv7().slice(-12)}`;
  return {
    role: "api",
    httpPort: 0,
    kafka: { brokers, overrides: {}, transactions },
    postgresDsn: process.env.POSTGRES_DSN ?? "postgres://kitsune:kitsune@127.0.0.1:5432/kitsune",
    loki: { url: "http://127.0.0.1:3100" },
    sqlDir: "./sql",
    topics: { events: `${prefix}.db-events`, logs: `${prefix}.app-logs`, results: `${prefix}.db-results` },
    auth: { tokens: [TOKEN], disabled: false },
    maxBodyBytes: 65536,
    logLevel: "silent",
  };
}

/** What each test started, released after it: services, clients, topics, schemas. */
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await Promise.resolve(cleanup()).catch(() => {});
});

async function startApi(config: Config, deps: Partial<ApiDeps> = {}): Promise<Service> {
  const service = await start(config, { logger: silentLogger, registry: createRegistry(), ...deps });
  cleanups.push(async () => {
    await service.stop();
    // NOTE: only after stop: a consumer whose topic was deleted under it blocks in close().
    if (!deps.sink) await deleteTopics(config);
  });
  return service;
}

async function deleteTopics(config: Config): Promise<void> {
  const admin = new Admin(kafkaConfig(config));
  try {
    await admin.deleteTopics(topicSpecs(config).map((t) => t.name));
  } finally {
    admin.close();
  }
}

function post(body: unknown, { path = "/execute", headers = {} }: { path?: string; headers?: Record<string, string> } = {}): Request {
  return new Request(`http://kitsune.test${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

const get = (path: string) => new Request(`http://kitsune.test${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });

/** Reads `topics` as `read_committed` (the Consumer's fixed isolation level) from the start until `done` says so. */
async function readCommitted(config: Config, topics: string[], done: (seen: Message[]) => boolean, timeoutMs = 30_000): Promise<Message[]> {
  const consumer = new Consumer({
    ...kafkaConfig(config),
    "group.id": `it-reader-${Bun.randomUUIDv7()}`,
    "auto.offset.reset": "earliest",
  });
  cleanups.push(() => consumer.close(2000));
  consumer.subscribe(topics);
  const seen: Message[] = [];
  const batches = consumer.batches({ maxWaitMs: 20 });
  const deadline = Bun.sleep(timeoutMs).then(() => "timeout" as const);
  while (!done(seen)) {
    const next = await Promise.race([batches.next(), deadline]);
    if (next === "timeout") throw new Error(`read_committed: gave up after ${timeoutMs} ms with ${seen.length} message(s)`);
    if (next.done) break;
    seen.push(...next.value);
  }
  await consumer.close(2000);
  return seen;
}

const text = (bytes: Uint8Array | null) => (bytes ? new TextDecoder().decode(bytes) : "");

describe.each([
  ["transactional", true],
  ["idempotent", false],
])("POST /execute on the real broker (%s)", (_mode, transactions) => {
  test("the original example: 202, and read_committed finds both events where the 202 says, with the documented shapes and headers", async () => {
    const config = testConfig({ transactions });
    const service = await startApi(config);
    const res = await service.app!.request(post(ORIGINAL_EXAMPLE, { headers: { traceparent: TRACEPARENT } }));
    expect(res.status).toBe(202);
    const accepted = v.parse(AcceptedSchema, await res.json());
    expect(accepted).toMatchObject({ idempotency_key: "3f0f8a0e-signup-sahil", status: "accepted" });
    expect(Object.keys(accepted.events).sort()).toEqual([config.topics.logs, config.topics.events].sort());

    const seen = await readCommitted(config, [config.topics.events, config.topics.logs], (ms) =>
      [config.topics.events, config.topics.logs].every((t) => ms.some((m) => m.topic === t && m.headers["kitsune-id"] === accepted.id)),
    );
    const command = seen.find((m) => m.topic === config.topics.events)!;
    const log = seen.find((m) => m.topic === config.topics.logs)!;
    for (const m of [command, log]) {
      expect({ partition: m.partition, offset: m.offset }).toEqual(accepted.events[m.topic]!);
      expect(m.headers).toEqual({ "content-type": "application/json", "kitsune-id": accepted.id, traceparent: TRACEPARENT });
    }
    expect(text(command.key)).toBe("sahil@example.com"); // the registry's `-- key: email`
    expect(log.key).toBeNull();

    const event = v.parse(CommandEventSchema, JSON.parse(text(command.value)));
    expect(event).toEqual({
      id: accepted.id,
      command: "create_user",
      version: "1",
      payload: { name: "Sahil", email: "sahil@example.com" },
      metadata: { idempotency_key: "3f0f8a0e-signup-sahil", timestamp: expect.any(String), source: "user-service" },
    });
    const logEvent = v.parse(LogEventSchema, JSON.parse(text(log.value)));
    expect(logEvent).toEqual({
      id: accepted.id,
      level: "INFO",
      message: "User registration triggered",
      command: "create_user",
      source: "user-service",
      timestamp: event.metadata.timestamp,
      idempotency_key: "3f0f8a0e-signup-sahil",
    });
  });
});

/** Creates the app-logs topic up front with a size limit the log event exceeds: the broker refuses it. */
async function refuseLogs(config: Config): Promise<void> {
  const admin = new Admin(kafkaConfig(config));
  try {
    await admin.createTopics([{ name: config.topics.logs, partitions: 3, config: { "max.message.bytes": "100" } }]);
  } finally {
    admin.close();
  }
}

/** Per partition of `topic`: one marker, produced (and acknowledged) after everything the test did. */
async function markEveryPartition(config: Config, topic: string, partitions: number): Promise<string> {
  const marker = `marker-${Bun.randomUUIDv7()}`;
  const producer = new Producer(kafkaConfig(config));
  try {
    await Promise.all(
      Array.from({ length: partitions }, (_, partition) =>
        producer.send({ topic, partition, key: marker, value: "{}", headers: { "kitsune-id": marker } }),
      ),
    );
  } finally {
    await producer.close(2000);
  }
  return marker;
}

describe("a failure between the two writes", () => {
  test("transactional: the command event is written, then the log event is refused → the transaction aborts → 503, and read_committed never sees the command event", async () => {
    const config = testConfig({ transactions: true });
    await refuseLogs(config);
    // With a sink of its own the role does not create the topics; the others as the role would.
    await ensureTopics(config, silentLogger);
    cleanups.push(() => deleteTopics(config));
    // NOTE: a local queue of one message makes the order causal, not a race: the log event (second
    // in the request's sendAll) only gets into librdkafka once the command event's delivery report
    // came back — it is in the partition's log — and only then does the broker refuse the log
    // event, which aborts the transaction the command event is in.
    const sink = new TransactionalProducer({ ...kafkaConfig(config), "queue.buffering.max.messages": 1 }, { txnTimeoutMs: 20_000, queueFullTimeoutMs: 60_000 });
    cleanups.push(() => sink.close(5000));
    await sink.init();
    const service = await startApi(config, { sink, produceTimeoutMs: 60_000 });

    const res = await service.app!.request(post(ORIGINAL_EXAMPLE));
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    const problem = (await res.json()) as v.InferOutput<typeof ProblemSchema> & { id: string; code: string };
    expect(v.is(ProblemSchema, problem)).toBe(true);
    expect(problem.code).toBe("broker_unavailable");
    expect(sink.aborted).toBe(1);
    expect(sink.committed).toBe(0);

    // The command event was written: its partition holds it and the abort marker (2 offsets); the
    // other five partitions hold nothing. Markers are written by the coordinator after EndTxn
    // returns, so wait for them.
    const admin = new Admin(kafkaConfig(config));
    cleanups.push(() => admin.close());
    /** High watermarks of db-events' partitions; undefined while a new topic's leaders settle. */
    const highs = (): number[] | undefined => {
      try {
        return Array.from({ length: 6 }, (_, p) => admin.watermarks(config.topics.events, p).high);
      } catch (err) {
        if ((err as KafkaError).retriable) return undefined;
        throw err;
      }
    };
    await waitFor(() => (highs()?.reduce((a, b) => a + b, 0) ?? 0) >= 2, "the aborted command event and its abort marker in db-events");
    expect(highs()!.sort()).toEqual([0, 0, 0, 0, 0, 2]);

    // A committed marker on every partition after the 503: reading up to all of them has passed
    // where the aborted command event was written.
    const marker = await markEveryPartition(config, config.topics.events, 6);
    const seen = await readCommitted(config, [config.topics.events], (ms) => ms.filter((m) => m.headers["kitsune-id"] === marker).length === 6);
    expect(seen.filter((m) => m.headers["kitsune-id"] !== marker)).toEqual([]);
    expect(seen.some((m) => m.headers["kitsune-id"] === problem.id)).toBe(false);
  }, 60_000);

  test("idempotent (KAFKA_TRANSACTIONS=false): 503 too, but the command event stays visible — the documented difference", async () => {
    const config = testConfig({ transactions: false });
    await refuseLogs(config);
    const service = await startApi(config);

    const res = await service.app!.request(post(ORIGINAL_EXAMPLE));
    expect(res.status).toBe(503);
    const { id } = (await res.json()) as { id: string };
    const seen = await readCommitted(config, [config.topics.events], (ms) => ms.some((m) => m.headers["kitsune-id"] === id));
    expect(seen.filter((m) => m.headers["kitsune-id"] === id)).toHaveLength(1);
  });
});

describe.each([
  ["idempotent", false],
  ["transactional", true],
])("the broker unreachable (librdkafka mock cluster, %s)", (_mode, transactions) => {
  test("503 with Retry-After while it is down (a produce timeout, then the breaker without producing), 202 again once it is back", async () => {
    const mock = new MockCluster(1);
    cleanups.push(() => mock.close());
    const config = testConfig({ transactions, brokers: [mock.bootstrapServers] });
    for (const t of topicSpecs(config)) mock.createTopic(t.name, t.partitions);
    // NOTE: the sink is built here as the role builds it, because the mock has no controller for
    // CreateTopics (the role's start-up topic creation would wait out socket.timeout.ms).
    const kafka = kafkaConfig(config);
    const sink = transactions ? new TransactionalProducer(kafka, { txnTimeoutMs: 5000 }) : new Producer(kafka);
    cleanups.push(() => sink.close(2000));
    if (sink instanceof TransactionalProducer) await sink.init();
    const registry = createRegistry();
    // The breaker's clock is the test's: the second request below certainly comes within its
    // probe interval, however slow the machine, and probes are allowed only when the test says.
    let clock = 0;
    const breaker = new ProduceBreaker(1000, () => clock);
    const service = await startApi(config, { sink, produceTimeoutMs: 1000, registry, breaker });
    const execute = () => service.app!.request(post({ ...ORIGINAL_EXAMPLE, metadata: { source: "it" } }));
    const produceErrors = async (reason: string) =>
      Number((await registry.metrics()).match(new RegExp(`^kitsune_produce_errors_total\\{reason="${reason}"\\} (\\d+)$`, "m"))?.[1] ?? 0);

    expect((await execute()).status).toBe(202);

    // NOTE: how fast these answers come is for benchmarks; what is asserted is the path each took.
    mock.brokerDown(1);
    const first = await execute();
    expect(first.status).toBe(503);
    expect(first.headers.get("retry-after")).toBe("1");
    expect(await produceErrors("timeout")).toBe(1);
    // Once a write has timed out, the next request does not wait for the broker again: the
    // breaker answers it without producing.
    const second = await execute();
    expect(second.status).toBe(503);
    expect(second.headers.get("retry-after")).toBe("1");
    expect(await produceErrors("breaker_open")).toBe(1);
    expect(await produceErrors("timeout")).toBe(1);

    // Once the broker is back, the probes that the breaker lets through get 202 again (each probe
    // may still time out while the client reconnects).
    mock.brokerUp(1);
    let status = 0;
    await waitFor(async () => {
      clock += 1000;
      status = (await execute()).status;
      if (status !== 202) expect(status).toBe(503);
      return status === 202;
    }, "a 202 after the broker came back", { timeoutMs: 60_000, intervalMs: 100 });
    expect(breaker.isOpen).toBe(false);
    expect((await execute()).status).toBe(202);
  }, 90_000);
});

/** A PostgreSQL schema of the test's own, dropped after it. */
async function schema(): Promise<TestSchema> {
  const db = await withSchema();
  cleanups.push(() => db.drop());
  return db;
}

describe("GET /commands/:id", () => {
  test("pending until the db-worker has the command, then its status and result from idempotency_log", async () => {
    const db = await schema();
    // The db-worker's migrations create idempotency_log; the api only reads it.
    await migrate(db.sql, "./sql");
    const config = testConfig();
    const service = await startApi(config, { sql: db.sql });

    const accepted = (await (await service.app!.request(post(ORIGINAL_EXAMPLE))).json()) as { id: string; idempotency_key: string };
    let res = await service.app!.request(get(`/commands/${accepted.id}`));
    expect(res.status).toBe(200);
    expect(v.parse(CommandStatusSchema, await res.json())).toEqual({ id: accepted.id, status: "pending" });

    // What the db-worker records when it has applied the command.
    await db.sql`INSERT INTO idempotency_log (key, event_id, command, version, status, rows_affected)
      VALUES (${accepted.idempotency_key}, ${accepted.id}, 'create_user', '1', 'applied', 1)`;
    res = await service.app!.request(get(`/commands/${accepted.id.toUpperCase()}`));
    expect(res.status).toBe(200);
    expect(v.parse(CommandStatusSchema, await res.json())).toEqual({
      id: accepted.id,
      status: "applied",
      idempotency_key: "3f0f8a0e-signup-sahil",
      command: "create_user",
      version: "1",
      rows_affected: 1,
      error: null,
      processed_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });

    const failedId = Bun.randomUUIDv7();
    await db.sql`INSERT INTO idempotency_log (key, event_id, command, version, status, rows_affected, error)
      VALUES ('other-key', ${failedId}, 'create_user', '1', 'failed', 0, ${db.sql.json({ sqlstate: "23505", message: "duplicate key" })})`;
    const failed = (await (await service.app!.request(get(`/commands/${failedId}`))).json()) as Record<string, unknown>;
    expect(failed).toMatchObject({ id: failedId, status: "failed", rows_affected: 0, error: { sqlstate: "23505", message: "duplicate key" } });
  });

  test("an id that is not a UUID: 404 problem; no token: 401", async () => {
    const config = testConfig();
    const service = await startApi(config, { sql: (await schema()).sql });
    const res = await service.app!.request(get("/commands/not-a-uuid"));
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(((await res.json()) as { code: string }).code).toBe("not_found");
    expect((await service.app!.request(`/commands/${Bun.randomUUIDv7()}`)).status).toBe(401);
  });

  test("the table missing (db-worker not migrated yet): 503, not 500", async () => {
    const service = await startApi(testConfig(), { sql: (await schema()).sql });
    const res = await service.app!.request(get(`/commands/${Bun.randomUUIDv7()}`));
    expect(res.status).toBe(503);
    expect(((await res.json()) as { code: string }).code).toBe("database_unavailable");
  });
});

describe("POST /execute?wait=<ms>", () => {
  /** Waits until the api's db-results consumer has its partitions (it reads from the latest offset). */
  async function resultsReady(service: Service): Promise<void> {
    const deadline = performance.now() + 30_000;
    while ((await service.ready()).checks.results !== "ok") {
      if (performance.now() > deadline) throw new Error("the db-results consumer never got its partitions");
      await Bun.sleep(100);
    }
  }

  test("answers 200 with the CommandResult once it is on db-results (published by hand, as the db-worker would)", async () => {
    const config = testConfig();
    const service = await startApi(config);
    await resultsReady(service);

    const answer = service.app!.request(post(ORIGINAL_EXAMPLE, { path: "/execute?wait=20000" }));
    // Play the db-worker: take the command event off db-events, publish its result.
    const [event] = await readCommitted(config, [config.topics.events], (ms) => ms.length > 0);
    const command = v.parse(CommandEventSchema, JSON.parse(text(event!.value)));
    const result: CommandResult = {
      id: command.id,
      idempotency_key: command.metadata.idempotency_key,
      command: command.command,
      version: command.version,
      status: "applied",
      rows_affected: 1,
      finished_at: new Date().toISOString(),
    };
    const producer = new Producer(kafkaConfig(config));
    cleanups.push(() => producer.close(2000));
    // Another command's result first: the waiter must pick its own.
    await producer.send({ topic: config.topics.results, key: "x", value: JSON.stringify({ ...result, id: Bun.randomUUIDv7() }), headers: { "kitsune-id": "someone-else" } });
    await producer.send({ topic: config.topics.results, key: event!.key, value: JSON.stringify(result), headers: { "content-type": "application/json", "kitsune-id": command.id } });

    const res = await answer;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(result);
  }, 60_000);

  test("no result in time: 202 as usual after the wait; wait over 30000 or not a number: 422", async () => {
    const config = testConfig();
    const registry = createRegistry();
    const service = await startApi(config, { registry });
    const res = await service.app!.request(post(ORIGINAL_EXAMPLE, { path: "/execute?wait=300" }));
    expect(res.status).toBe(202);
    v.parse(AcceptedSchema, await res.json());
    // It waited and ran out of time (the unit tests check how long, on a fake clock).
    expect(await registry.metrics()).toContain('kitsune_result_waits_total{outcome="timeout"} 1');

    for (const wait of ["30001", "abc", "-1", "1.5", ""]) {
      const bad = await service.app!.request(post(ORIGINAL_EXAMPLE, { path: `/execute?wait=${wait}` }));
      expect(bad.status).toBe(422);
      expect(((await bad.json()) as { errors: { path: string }[] }).errors[0]!.path).toBe("query:wait");
    }
  }, 30_000);
});
