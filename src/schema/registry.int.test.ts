/**
 * Kitsune against a real schema registry (SCHEMA_REGISTRY_URL: `REGISTRY=1 scripts/services.sh up`
 * starts Apicurio Registry 3.3.3; .ci/run does), the local Kafka and PostgreSQL. Every test run
 * uses subjects of its own (`SCHEMA_SUBJECT_PREFIX=it-<run>.`, topics `it-schema-<run>-…`) and a
 * copy of sql/ it may edit, so runs never collide.
 *
 * The processes are the executable itself (`bun src/main.ts`), as users run it.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Subprocess } from "bun";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFakeLoki, type FakeLoki } from "../../test/fake-loki.ts";
import { TEST_DSN, withSchema, type TestSchema } from "../../test/pg.ts";
import { ORIGINAL_EXAMPLE } from "../../test/fakes.ts";
import { Admin } from "../kafka/admin.ts";
import { Consumer } from "../kafka/consumer.ts";
import type { Message } from "../kafka/types.ts";
import type { SchemaRegistryConfig } from "../config.ts";
import { SchemaRegistryClient } from "./client.ts";
import { publishSubjects, SchemaRefusedError } from "./publish.ts";
import { envelopeSchemas, type JsonSchema } from "./subjects.ts";
import { SCHEMA_ID_HEADER, wireSchemaId } from "./wire.ts";
import { waitForValue } from "../../test/wait.ts";
// A port the OS just handed out: a random one collided with another process in a CI run.
import { freePort } from "../../bench/lib/procs.ts";

// A shared 2-core machine with a broker and a JVM registry on it: generous deadlines.
setDefaultTimeout(60_000);

const REGISTRY_URL = process.env.SCHEMA_REGISTRY_URL ?? "";
// NOTE: skipped only when unset; a registry that is set but does not answer fails the tests.
if (REGISTRY_URL === "") {
  console.warn(
    "schema registry tests skipped: SCHEMA_REGISTRY_URL is not set (REGISTRY=1 scripts/services.sh up; then SCHEMA_REGISTRY_URL=$(scripts/services.sh registry-url))",
  );
}

const run = crypto.randomUUID().slice(0, 8);
const PREFIX = `it-${run}.`;
const TOPICS = { events: `it-schema-${run}-events`, logs: `it-schema-${run}-logs`, results: `it-schema-${run}-results` };
const TOKEN = "schema-test-token";
const BROKERS = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";
const registry: SchemaRegistryConfig = {
  url: REGISTRY_URL.replace(/\/+$/, ""),
  subjectPrefix: PREFIX,
  compatibility: { commands: "FULL_TRANSITIVE", events: "BACKWARD" },
  wireFormat: "json",
};
const client = new SchemaRegistryClient(registry);

let db: TestSchema;
let loki: FakeLoki;
let sqlDir: string;

function env(extra: Record<string, string> = {}): Record<string, string> {
  const dsn = new URL(TEST_DSN);
  dsn.searchParams.set("search_path", db.schema);
  return {
    ...(process.env as Record<string, string>),
    ROLE: "all",
    API_TOKENS: TOKEN,
    KAFKA_BROKERS: BROKERS,
    KAFKA_GROUP_ID: `it-schema-${run}`,
    TOPIC_EVENTS: TOPICS.events,
    TOPIC_LOGS: TOPICS.logs,
    TOPIC_RESULTS: TOPICS.results,
    POSTGRES_DSN: dsn.toString(),
    LOKI_URL: loki.url,
    SQL_DIR: sqlDir,
    SCHEMA_REGISTRY_URL: REGISTRY_URL,
    SCHEMA_SUBJECT_PREFIX: PREFIX,
    LOG_LEVEL: "warn",
    ...extra,
  };
}


/** Starts `bun src/main.ts`; resolves once /readyz answers 200, rejects with its stderr if it exits first. */
async function startKitsune(extra: Record<string, string> = {}): Promise<{ proc: Subprocess<"ignore", "ignore", "pipe">; port: number }> {
  const port = freePort();
  const proc = Bun.spawn(["bun", "src/main.ts"], { env: env({ HTTP_PORT: String(port), ...extra }), stdout: "ignore", stderr: "pipe" });
  const deadline = Date.now() + 45_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`kitsune exited ${proc.exitCode}: ${await new Response(proc.stderr).text()}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) return { proc, port };
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error("kitsune did not become ready within 45 s");
    }
    await Bun.sleep(200);
  }
}

/** Runs `bun src/main.ts <args>` to the end. */
async function kitsune(args: string[], extra: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(["bun", "src/main.ts", ...args], { env: env(extra), stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

const waitFor = <T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 45_000): Promise<T> => waitForValue(what, fn, { timeoutMs: ms });

async function registryGet(path: string): Promise<any> {
  const r = await fetch(`${registry.url}${path}`);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Every message of `topics` from the start, until `done` says so. */
async function readTopics(topics: string[], done: (seen: Message[]) => boolean): Promise<Message[]> {
  const consumer = new Consumer({ "bootstrap.servers": BROKERS, "group.id": `it-schema-reader-${Bun.randomUUIDv7()}`, "auto.offset.reset": "earliest" });
  try {
    consumer.subscribe(topics);
    const seen: Message[] = [];
    const batches = consumer.batches({ maxWaitMs: 50 });
    const deadline = Bun.sleep(45_000).then(() => "timeout" as const);
    while (!done(seen)) {
      const next = await Promise.race([batches.next(), deadline]);
      if (next === "timeout") throw new Error(`gave up reading ${topics.join(", ")} with ${seen.length} message(s)`);
      if (next.done) break;
      seen.push(...next.value);
    }
    return seen;
  } finally {
    await consumer.close(2000);
  }
}

function execute(port: number, body: unknown, wait = 0): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/execute${wait ? `?wait=${wait}` : ""}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  });
}

async function stop(proc: Subprocess): Promise<void> {
  proc.kill("SIGTERM");
  await proc.exited;
}

/** Rewrites a file of the test's copy of sql/. */
async function editSql(name: string, edit: (text: string) => string): Promise<string> {
  const file = join(sqlDir, "commands", name);
  await writeFile(file, edit(await readFile(file, "utf8")));
  return file;
}

describe.skipIf(REGISTRY_URL === "")("schema registry", () => {
  beforeAll(async () => {
    const answer = await fetch(`${registry.url}/subjects`, { signal: AbortSignal.timeout(10_000) }).then(
      (r) => `${r.status}`,
      (err: Error) => err.message,
    );
    if (answer !== "200") throw new Error(`SCHEMA_REGISTRY_URL=${REGISTRY_URL} does not answer GET /subjects (${answer}): is the registry up?`);
    db = await withSchema();
    loki = startFakeLoki();
    sqlDir = await mkdtemp(join(tmpdir(), "kitsune-schema-"));
    await cp("sql", sqlDir, { recursive: true });
    const migrate = await kitsune(["migrate"]);
    if (migrate.code !== 0) throw new Error(`migrate failed: ${migrate.stderr}`);
  });

  afterAll(async () => {
    loki?.stop();
    await db?.drop();
    if (sqlDir) await rm(sqlDir, { recursive: true, force: true });
    const admin = new Admin({ "bootstrap.servers": BROKERS });
    try {
      await admin.deleteTopics([...Object.values(TOPICS), `${TOPICS.events}.dlq`, `${TOPICS.logs}.dlq`]).catch(() => {});
    } finally {
      admin.close();
    }
  });

  test("start-up registers every command version and envelope, with their compatibility levels; events carry the ids and both wire formats go end to end", async () => {
    const { proc, port } = await startKitsune();
    let sentJson: string;
    try {
      const subjects = (await registryGet("/subjects")) as string[];
      const ours = subjects.filter((s) => s.startsWith(PREFIX)).sort();
      expect(ours).toEqual([`${PREFIX}create_user.v1`, `${PREFIX}create_user.v2`, `${PREFIX}delete_user.v1`, `${PREFIX}update_user.v1`]);
      for (const t of Object.values(TOPICS)) expect(subjects).toContain(`${t}-value`);
      const level = async (s: string) => {
        const c = await registryGet(`/config/${s}`);
        return c.compatibilityLevel ?? c.compatibility;
      };
      expect(await level(`${PREFIX}create_user.v1`)).toBe("FULL_TRANSITIVE");
      expect(await level(`${TOPICS.events}-value`)).toBe("BACKWARD");

      const res = await execute(port, { ...ORIGINAL_EXAMPLE, payload: { name: "J", email: `json-${run}@example.com` }, metadata: { ...ORIGINAL_EXAMPLE.metadata, idempotency_key: `json-${run}` } }, 20_000);
      expect(res.status).toBe(200); // the db-worker read the event, the api's reader its result
      sentJson = ((await res.json()) as { id: string }).id;
    } finally {
      await stop(proc);
    }

    // The same topics, now written in Confluent's format: the workers read both kinds side by side.
    const second = await startKitsune({ SCHEMA_WIRE_FORMAT: "confluent" });
    let sentConfluent: string;
    try {
      const res = await execute(second.port, { ...ORIGINAL_EXAMPLE, payload: { name: "C", email: `confluent-${run}@example.com` }, metadata: { ...ORIGINAL_EXAMPLE.metadata, idempotency_key: `confluent-${run}` } }, 20_000);
      expect(res.status).toBe(200);
      sentConfluent = ((await res.json()) as { id: string }).id;
      for (const id of [sentJson, sentConfluent]) await waitFor(`the log line of ${id} in Loki`, () => loki.entries.find((e) => e.line.includes(id)));
    } finally {
      await stop(second.proc);
    }

    const ids = {
      events: (await registryGet(`/subjects/${TOPICS.events}-value/versions/latest`)).id as number,
      logs: (await registryGet(`/subjects/${TOPICS.logs}-value/versions/latest`)).id as number,
      results: (await registryGet(`/subjects/${TOPICS.results}-value/versions/latest`)).id as number,
      payload: (await registryGet(`/subjects/${PREFIX}create_user.v1/versions/latest`)).id as number,
    };
    const seen = await readTopics(Object.values(TOPICS), (s) => s.length >= 6);
    const of = (topic: string, id: string) => seen.find((m) => m.topic === topic && m.headers["kitsune-id"] === id)!;
    for (const [id, confluent] of [[sentJson, false], [sentConfluent, true]] as const) {
      for (const [topic, schemaId] of [[TOPICS.events, ids.events], [TOPICS.logs, ids.logs], [TOPICS.results, ids.results]] as const) {
        const m = of(topic, id);
        expect([topic, m.headers[SCHEMA_ID_HEADER]]).toEqual([topic, String(schemaId)]);
        expect([topic, wireSchemaId(m.value!)]).toEqual([topic, confluent ? schemaId : undefined]);
      }
      expect(of(TOPICS.events, id).headers["kitsune-payload-schema-id"]).toBe(String(ids.payload));
    }
  }, 180_000);

  test("a compatible edit is accepted: a new version of the subject", async () => {
    const subject = `${PREFIX}delete_user.v1`;
    await kitsune(["schemas", "push"]);
    const before = ((await registryGet(`/subjects/${subject}/versions`)) as number[]).length;
    await editSql("delete_user.v1.sql", (t) => t.replace(/^-- description: .*$/m, "-- description: Remove a user by e-mail (reworded)."));
    const check = await kitsune(["schemas", "check"]);
    expect([check.code, check.stderr]).toEqual([0, ""]);
    expect(check.stdout).toContain(`${subject}  compatible`);
    expect(((await registryGet(`/subjects/${subject}/versions`)) as number[]).length).toBe(before); // check registers nothing
    const push = await kitsune(["schemas", "push"]);
    expect([push.code, push.stderr]).toEqual([0, ""]);
    expect(push.stdout).toContain(`${subject}  id`);
    expect(((await registryGet(`/subjects/${subject}/versions`)) as number[]).length).toBe(before + 1);
  });

  test("an incompatible edit of a command's SQL file stops start-up, naming the file, the subject, the registry's reason and what to do", async () => {
    const subject = `${PREFIX}create_user.v1`;
    await kitsune(["schemas", "push"]);
    const versions = ((await registryGet(`/subjects/${subject}/versions`)) as number[]).length;
    // A new parameter: every producer of create_user v1 would now be refused.
    const file = await editSql("create_user.v1.sql", (t) => t.replace("INSERT INTO users (name, email) VALUES (:name, :email)", "INSERT INTO users (name, email, display_name) VALUES (:name, :email, :display_name::text)"));
    try {
      const check = await kitsune(["schemas", "check"]);
      expect(check.code).toBe(1);
      expect(check.stderr).toContain(`${file}: subject ${subject} (FULL_TRANSITIVE)`);
      expect(check.stderr).toContain('change: "display_name" added (required)');

      const proc = Bun.spawn(["bun", "src/main.ts"], { env: env({ ROLE: "api", HTTP_PORT: String(freePort()) }), stdout: "ignore", stderr: "pipe" });
      const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
      console.log(`the refusal, as a person sees it:\n${stderr.split("\n").filter((l) => !l.startsWith("{")).join("\n")}`);
      expect(code).toBe(1);
      expect(stderr).toContain("kitsune: start-up failed: schema registry");
      expect(stderr).toContain(`${file}: subject ${subject} (FULL_TRANSITIVE): `);
      expect(stderr).toMatch(/required property was added|incompatible/i); // the registry's own reason
      expect(stderr).toContain('change: "display_name" added (required)');
      expect(stderr).toContain(`put the change in a new version, ${join(sqlDir, "commands", "create_user.v3.sql")}`);
      expect(((await registryGet(`/subjects/${subject}/versions`)) as number[]).length).toBe(versions);
    } finally {
      await editSql("create_user.v1.sql", (t) => t.replace("INSERT INTO users (name, email, display_name) VALUES (:name, :email, :display_name::text)", "INSERT INTO users (name, email) VALUES (:name, :email)"));
    }
  }, 90_000);

  test("envelopes evolve under BACKWARD: a new optional field is accepted (closed schemas), a removed field refused", async () => {
    const subject = { subject: `it-${run}-evolving-value`, kind: "event" as const, source: `topic it-${run}-evolving` };
    const v1 = envelopeSchemas().logs;
    await publishSubjects(registry, [{ ...subject, schema: v1 }]);
    const props = v1.properties as Record<string, JsonSchema>;
    const added = { ...v1, properties: { ...props, region: { type: "string" } } };
    const { ids } = await publishSubjects(registry, [{ ...subject, schema: added }]);
    expect(ids.get(subject.subject)).toBeNumber();

    const { message: _, ...fewer } = added.properties as Record<string, JsonSchema>;
    const removed = { ...added, properties: fewer, required: (v1.required as string[]).filter((r) => r !== "message") };
    const err = await publishSubjects(registry, [{ ...subject, schema: removed }]).catch((e) => e);
    expect(err).toBeInstanceOf(SchemaRefusedError);
    expect((err as SchemaRefusedError).refusals[0]).toMatchObject({ subject: subject.subject, compatibility: "BACKWARD", changes: ['"message" removed'] });
    expect((await client.latest(subject.subject))?.schema).toEqual(added);
  });
});
