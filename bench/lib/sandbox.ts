/**
 * @module bench/lib/sandbox
 * One isolated Kitsune deployment on the shared local services: topics, consumer groups and a
 * PostgreSQL schema of its own (named after the run), a fake Loki receiver, and a SQL directory.
 * Other runs and other engineers' tests on the same broker and database never see it.
 *
 * The db-worker reaches its schema through the DSN: postgres.js sends unknown URL query
 * parameters as startup parameters, so `?search_path=<schema>` works (tested with postgres.js
 * 3.4.9 and PostgreSQL 15), and `application_name` marks the run's connections so the PostgreSQL
 * chaos scenario can terminate exactly those.
 *
 * @example
 * await using box = await createSandbox({ name: "e2e" });
 * const api = await box.spawn("api");
 * // … load …
 * await box.cleanup();
 */
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres, { type Sql } from "postgres";
import { Admin } from "../../src/kafka/admin.ts";
import { startFakeLoki, type FakeLoki } from "../../test/fake-loki.ts";
import { spawnRole, waitUntilReady, type RoleName, type RoleProcess, type SpawnOptions } from "./procs.ts";

const REPO = join(import.meta.dir, "../..");

/** The PostgreSQL the services run (`scripts/services.sh`), as the role `kitsune`. */
export const BASE_DSN = process.env.BENCH_POSTGRES_DSN ?? "postgres://kitsune:kitsune@127.0.0.1:5432/kitsune";
// NOTE: KAFKA_BROKERS too: CI runs its brokers on ports of their own, and nothing may be assumed on 9092.
export const BROKERS = process.env.BENCH_KAFKA_BROKERS ?? process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";

/**
 * A command whose effect has no unique constraint: `users.email` is UNIQUE, so a second apply
 * of `create_user` would fail (and be dead-lettered) instead of showing up as a duplicate row.
 * With this one, an effect applied twice is two rows with the same email.
 */
export const APPEND_COMMAND = {
  file: "chaos_append.v1.sql",
  text: `-- command: chaos_append
-- version: 1
-- key: email
-- description: Benchmark/chaos only: append a row; no constraint stops a second apply.
INSERT INTO chaos_effects (name, email) VALUES (:name, :email);
`,
  table: `CREATE TABLE IF NOT EXISTS chaos_effects (
  id bigserial PRIMARY KEY, name text NOT NULL, email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
};

export interface SandboxOptions {
  /** Short label in every name, e.g. `e2e` or `chaos1`. */
  name: string;
  brokers?: string;
  /** Keep the schema, topics and log directory afterwards (default: keep only the logs on failure). */
  keep?: boolean;
  /** Extra environment for every role. */
  env?: Record<string, string>;
  /** Keep Loki's entries (default true); false only counts them (cheaper, no duplicate detection). */
  lokiStore?: boolean;
}

export interface Sandbox {
  /** `kb_e2e_<random>`: prefix of the topics and groups, the schema name, the application_name. */
  id: string;
  schema: string;
  dir: string;
  sqlDir: string;
  brokers: string;
  topics: { events: string; logs: string; results: string };
  groups: { db: string; log: string };
  /** A pool on the sandbox schema (max 4 connections), for counting; its application_name differs from the roles'. */
  sql: Sql;
  loki: FakeLoki;
  /** The environment of a role in this sandbox. */
  env(role: RoleName, extra?: Record<string, string>): Record<string, string>;
  spawn(role: RoleName, options?: Partial<SpawnOptions> & { env?: Record<string, string> }): Promise<RoleProcess>;
  /** Every role process spawned (killed ones too). */
  readonly processes: RoleProcess[];
  /** Stops live roles, drops the schema and topics (unless kept), stops Loki. */
  cleanup(options?: { keepLogs?: boolean }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export function withParams(dsn: string, params: Record<string, string>): string {
  const url = new URL(dsn);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

export async function createSandbox({ name, brokers = BROKERS, keep = false, env: extraEnv = {}, lokiStore = true }: SandboxOptions): Promise<Sandbox> {
  const id = `kb_${name}_${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
  const schema = id;
  const dir = join(process.env.BENCH_TMP ?? join(tmpdir(), "kitsune-bench"), id);
  mkdirSync(dir, { recursive: true });

  // The repository's registry and migrations, plus the append-only chaos command.
  const sqlDir = join(dir, "sql");
  cpSync(join(REPO, "sql"), sqlDir, { recursive: true });
  writeFileSync(join(sqlDir, "commands", APPEND_COMMAND.file), APPEND_COMMAND.text);

  const admin = postgres(BASE_DSN, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE SCHEMA ${schema}`);
    // The db-worker's registry check prepares every command at start-up, so the table exists first.
    await admin.unsafe(`SET search_path = ${schema}; ${APPEND_COMMAND.table}`);
  } finally {
    await admin.end();
  }
  const sql = postgres(withParams(BASE_DSN, { search_path: schema, application_name: `${id}-bench` }), {
    max: 4,
    onnotice: () => {},
  });

  const loki = startFakeLoki({ recordRequests: false, store: lokiStore });
  const topics = { events: `${id}.db-events`, logs: `${id}.app-logs`, results: `${id}.db-results` };
  const groups = { db: `${id}.db-worker`, log: `${id}.log-worker` };
  const processes: RoleProcess[] = [];

  const env = (role: RoleName, extra: Record<string, string> = {}): Record<string, string> => ({
    KAFKA_BROKERS: brokers,
    TOPIC_EVENTS: topics.events,
    TOPIC_LOGS: topics.logs,
    TOPIC_RESULTS: topics.results,
    SQL_DIR: sqlDir,
    AUTH_DISABLED: "true",
    LOKI_URL: loki.url,
    LOG_LEVEL: "info",
    POSTGRES_DSN: withParams(BASE_DSN, { search_path: schema, application_name: `${id}-${role}` }),
    ...(role === "db-worker" ? { KAFKA_GROUP_ID: groups.db } : role === "log-worker" ? { KAFKA_GROUP_ID: groups.log } : {}),
    ...extraEnv,
    ...extra,
  });

  let cleaned: Promise<void> | undefined;
  const cleanup = ({ keepLogs = false }: { keepLogs?: boolean } = {}) =>
    (cleaned ??= (async () => {
      await Promise.allSettled(processes.map((p) => p.stop(12_000)));
      await sql.end({ timeout: 2 }).catch(() => {});
      await loki.stop();
      if (keep) return;
      const admin = postgres(BASE_DSN, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } catch {
        // best effort: a later run does not depend on it
      } finally {
        await admin.end({ timeout: 2 }).catch(() => {});
      }
      await deleteTopics(brokers, [topics.events, topics.logs, topics.results, `${topics.events}.dlq`, `${topics.logs}.dlq`]);
      if (!keepLogs) rmSync(dir, { recursive: true, force: true });
    })());

  return {
    id,
    schema,
    dir,
    sqlDir,
    brokers,
    topics,
    groups,
    sql,
    loki,
    env,
    processes,
    async spawn(role, { waitReady = true, readyTimeoutMs, env: extra, ...options } = {}) {
      if (cleaned) throw new Error(`sandbox ${id} is cleaned up; not starting ${role}`);
      // Tracked before it is ready, so a cleanup racing with start-up still stops it.
      const p = await spawnRole(role, env(role, extra), { dir, ...options, waitReady: false });
      processes.push(p);
      if (waitReady) {
        try {
          await waitUntilReady(p, readyTimeoutMs);
        } catch (err) {
          p.kill("SIGKILL");
          throw err;
        }
      }
      if (cleaned) p.kill("SIGKILL");
      return p;
    },
    cleanup,
    [Symbol.asyncDispose]: () => cleanup(),
  };
}

async function deleteTopics(brokers: string, names: string[]): Promise<void> {
  let admin: Admin | undefined;
  try {
    admin = new Admin({ "bootstrap.servers": brokers });
    await admin.deleteTopics(names, 10_000);
  } catch {
    // best effort
  } finally {
    admin?.close();
  }
}

/** Messages written to a topic: the sum of its partitions' high watermarks (non-transactional producers only). */
export function topicCount(brokers: string, topic: string): number | undefined {
  let admin: Admin | undefined;
  try {
    admin = new Admin({ "bootstrap.servers": brokers });
    const t = admin.metadata(5000).topics.find((x) => x.name === topic);
    if (!t) return 0;
    let sum = 0;
    for (const p of t.partitions) sum += admin.watermarks(topic, p.id, 5000).high;
    return sum;
  } catch {
    return undefined;
  } finally {
    admin?.close();
  }
}
