/**
 * The sub-commands as users run them (`bun src/main.ts <command>`), against the local Kafka and
 * PostgreSQL, on topics and a schema of their own.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Admin } from "../kafka/admin.ts";
import { Consumer } from "../kafka/consumer.ts";
import { Producer } from "../kafka/producer.ts";
import { DLQ_HEADERS } from "../pipeline/dead-letter.ts";
import { TEST_DSN, withSchema, type TestSchema } from "../../test/pg.ts";
import { HAVE_GCC, nativeSharedObject } from "../../test/native-so.ts";

setDefaultTimeout(60_000);

const brokers = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";
const run = crypto.randomUUID().slice(0, 8);
const topics = { events: `cli-${run}-events`, logs: `cli-${run}-logs`, results: `cli-${run}-results` };
let db: TestSchema;

function env(): Record<string, string> {
  const dsn = new URL(TEST_DSN);
  dsn.searchParams.set("search_path", db.schema);
  return {
    PATH: process.env.PATH ?? "",
    KAFKA_BROKERS: brokers,
    TOPIC_EVENTS: topics.events,
    TOPIC_LOGS: topics.logs,
    TOPIC_RESULTS: topics.results,
    POSTGRES_DSN: dsn.toString(),
  };
}

async function kitsune(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  return kitsuneWith({}, ...args);
}

async function kitsuneWith(extra: Record<string, string>, ...args: string[]): Promise<{ out: string; err: string; code: number }> {
  const proc = Bun.spawn(["bun", "src/main.ts", ...args], { env: { ...env(), ...extra }, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { out, err, code };
}

beforeAll(async () => {
  db = await withSchema();
});

afterAll(async () => {
  const admin = new Admin({ "bootstrap.servers": brokers });
  await admin
    .deleteTopics([topics.events, topics.logs, topics.results, `${topics.events}.dlq`, `${topics.logs}.dlq`])
    .catch(() => {})
    .finally(() => admin.close());
  await db?.drop();
});

describe("kitsune sub-commands", () => {
  test("--help of each command exits 0 and says how to use it", async () => {
    for (const cmd of [["--help"], ["migrate", "--help"], ["topics", "--help"], ["commands", "--help"], ["dlq", "--help"]]) {
      const { out, code } = await kitsune(...cmd);
      expect(code).toBe(0);
      expect(out).toContain("usage");
    }
    const { err, code } = await kitsune("nonsense");
    expect(code).toBe(2);
    expect(err).toContain('unknown command "nonsense"');
  });

  test("version names kitsune, bun, librdkafka and the consumer's fetch path", async () => {
    const { out, code } = await kitsune("version");
    expect(code).toBe(0);
    expect(out).toMatch(/^kitsune \d+\.\d+\.\d+ \(bun 1\.4\.5, librdkafka 2\.\d+\.\d+ from \/\S+ \((project build|system|LIBRDKAFKA_PATH)\), native fetch loop: TinyCC\)/);
    expect((await kitsuneWith({ KITSUNE_NATIVE: "0" }, "version")).out).toContain("plain FFI fetch: KITSUNE_NATIVE=0");
    // A shared object that cannot be loaded is named, and TinyCC builds the loop instead.
    const missing = (await kitsuneWith({ KITSUNE_NATIVE_LIB: "/nonexistent/native.so" }, "version")).out;
    expect(missing).toContain("native fetch loop: TinyCC; not loaded: /nonexistent/native.so: ");
  });

  test.skipIf(!HAVE_GCC)("version reports native.c compiled ahead of time (KITSUNE_NATIVE_LIB) as the fetch path", async () => {
    const so = nativeSharedObject();
    const { out, code } = await kitsuneWith({ KITSUNE_NATIVE_LIB: so }, "version");
    expect(code).toBe(0);
    expect(out).toContain(`native fetch loop: AOT ${so})`);
    // An object built from another native.c is refused, and TinyCC builds the loop instead.
    const stale = nativeSharedObject("f".repeat(64));
    const refused = (await kitsuneWith({ KITSUNE_NATIVE_LIB: stale }, "version")).out;
    expect(refused).toContain(`native fetch loop: TinyCC; not loaded: ${stale}: built from another native.c`);
  });

  test("migrate applies the migrations once", async () => {
    const first = await kitsune("migrate");
    expect(first.code).toBe(0);
    expect(first.out).toContain("applied  0001_init");
    const again = await kitsune("migrate");
    expect(again.out).toMatch(/schema is up to date \(version \d+\)/);
  });

  test("commands lists the registry with parameters", async () => {
    const { out, code } = await kitsune("commands", "--json");
    expect(code).toBe(0);
    const defs = JSON.parse(out) as { command: string; version: string; params: { name: string }[]; key?: string }[];
    const v1 = defs.find((d) => d.command === "create_user" && d.version === "1");
    expect(v1?.params.map((p) => p.name)).toEqual(["name", "email"]);
    expect(v1?.key).toBe("email");
  });

  test("topics create makes the five topics with their partition counts; describe shows them", async () => {
    const created = await kitsune("topics", "create");
    expect(created.code).toBe(0);
    expect(created.out.match(/^created /gm)?.length).toBe(5);
    const described = await kitsune("topics", "describe");
    expect(described.code).toBe(0);
    expect(described.out).toContain(`${topics.events}: 6 partition(s)`);
    expect(described.out).toContain(`${topics.logs}: 3 partition(s)`);
    expect(described.out).toContain(`${topics.events}.dlq: 1 partition(s)`);
  });

  test("dlq list shows a dead letter with its error; replay re-drives it and clears its failed record", async () => {
    const key = `cli-${run}-key`;
    const event = {
      id: crypto.randomUUID(),
      command: "create_user",
      version: "1",
      payload: { name: "Dee", email: `dee-${run}@example.com` },
      metadata: { idempotency_key: key, timestamp: new Date().toISOString(), source: "cli-test" },
    };
    await db.sql`INSERT INTO idempotency_log (key, event_id, command, version, status, rows_affected, error)
                 VALUES (${key}, ${event.id}, 'create_user', '1', 'failed', 0, ${db.sql.json({ sqlstate: "23505", message: "dup" })})`;
    const producer = new Producer({ "bootstrap.servers": brokers });
    await producer.send({
      topic: `${topics.events}.dlq`,
      key: event.payload.email,
      value: JSON.stringify(event),
      headers: {
        [DLQ_HEADERS.error]: "duplicate key value violates unique constraint",
        [DLQ_HEADERS.sqlstate]: "23505",
        [DLQ_HEADERS.topic]: topics.events,
        [DLQ_HEADERS.partition]: "0",
        [DLQ_HEADERS.offset]: "7",
        "kitsune-id": event.id,
      },
    });
    await producer.close();

    const listed = await kitsune("dlq", "list");
    expect(listed.code).toBe(0);
    expect(listed.out).toContain("sqlstate=23505");
    expect(listed.out).toContain("error: duplicate key value violates unique constraint");
    expect(listed.out).toContain(`from ${topics.events}[0]@7`);

    const replayed = await kitsune("dlq", "replay");
    expect(replayed.code).toBe(0);
    expect(replayed.out).toContain("replayed 1 dead letter(s)");
    expect((await db.sql`SELECT 1 FROM idempotency_log WHERE key = ${key}`).length).toBe(0);

    const consumer = new Consumer({ "bootstrap.servers": brokers, "group.id": `cli-${run}-check` });
    consumer.subscribe([topics.events]);
    const deadline = Date.now() + 30_000;
    let found: Record<string, string> | undefined;
    for await (const batch of consumer.batches({ maxWaitMs: 100 })) {
      const m = batch.find((x) => x.value && new TextDecoder().decode(x.value).includes(event.id));
      if (m) found = m.headers;
      if (found || Date.now() > deadline) break;
    }
    await consumer.close();
    expect(found?.["kitsune-id"]).toBe(event.id);
    expect(found?.[DLQ_HEADERS.error]).toBeUndefined();

    // A second replay has nothing left: the replay group committed past it.
    const again = await kitsune("dlq", "replay");
    expect(again.out).toContain("replayed 0 dead letter(s)");
  });
});
