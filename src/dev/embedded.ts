/**
 * @module dev/embedded
 * `kitsune dev`: every role in one process, on embedded parts wherever the environment names no
 * real one. Only this sub-command does this: `ROLE=…` never falls back to embedded parts.
 *
 * | unset          | embedded part                                                              |
 * |----------------|----------------------------------------------------------------------------|
 * | `KAFKA_BROKERS`| librdkafka's mock cluster in this process, topics created at start, in memory only |
 * | `POSTGRES_DSN` | PGlite, data in `$KITSUNE_DEV_DIR/pgdata` (or memory with `--memory`), served on a local port |
 * | `LOKI_URL`     | the log-worker prints the lines it would push to Loki on stdout             |
 * | `API_TOKENS`   | the bearer token `dev-token` (unless `AUTH_DISABLED=true`)                  |
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { topicSpecs } from "../broker.ts";
import type { Config } from "../config.ts";
import type { LokiSink } from "../log/loki-sink.ts";

export const DEV_TOKEN = "dev-token";
/** The file in the dev directory that tells `kitsune sql` where the running dev mode's PostgreSQL is. */
export const POSTGRES_URL_FILE = "postgres.url";

export interface DevOptions {
  /** PGlite in memory instead of `<dir>/pgdata`. */
  memory: boolean;
  /** `KITSUNE_DEV_DIR`, default `./.kitsune`. */
  dir: string;
  /** `KITSUNE_DEV_PG_PORT`, default 0 (any free port). */
  pgPort: number;
}

/** Which parts are embedded, decided from the environment alone (pure, for tests). */
export function embeddedParts(env: Record<string, string | undefined>) {
  const unset = (name: string) => (env[name] ?? "").trim() === "";
  return {
    kafka: unset("KAFKA_BROKERS"),
    postgres: unset("POSTGRES_DSN"),
    loki: unset("LOKI_URL"),
    devToken: unset("API_TOKENS") && !/^(true|1|yes)$/i.test((env.AUTH_DISABLED ?? "").trim()),
  };
}

export function devOptions(args: string[], env: Record<string, string | undefined>): DevOptions {
  const port = Number(env.KITSUNE_DEV_PG_PORT ?? 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`KITSUNE_DEV_PG_PORT=${JSON.stringify(env.KITSUNE_DEV_PG_PORT)}: expected a port number`);
  }
  return { memory: args.includes("--memory"), dir: resolve(env.KITSUNE_DEV_DIR || ".kitsune"), pgPort: port };
}

export interface Embedded {
  /** The environment the roles are configured from: the given one with the embedded parts filled in. */
  env: Record<string, string | undefined>;
  /** Adjusts the parsed configuration (topics already made on the mock cluster). */
  adjust(config: Config): void;
  logSink?: LokiSink;
  /** Lines of the start-up banner, one per embedded part. */
  describe(config: Config, port: number): string;
  stop(): Promise<void>;
}

/** Starts the embedded parts the environment leaves out. */
export async function startEmbedded(given: Record<string, string | undefined>, options: DevOptions): Promise<Embedded> {
  const parts = embeddedParts(given);
  const env: Record<string, string | undefined> = { ...given, ROLE: "all" };
  if (!env.LOG_LEVEL) env.LOG_LEVEL = "warn";
  if (parts.devToken) env.API_TOKENS = DEV_TOKEN;
  const stops: (() => unknown)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await Promise.resolve().then(s).catch(() => {});
  };

  try {
    mkdirSync(options.dir, { recursive: true });
    claimDir(options.dir);
    stops.push(() => rmSync(resolve(options.dir, "dev.pid"), { force: true }));

    let mock: import("../kafka/mock.ts").MockCluster | undefined;
    if (parts.kafka) {
      const { MockCluster } = await import("../kafka/mock.ts");
      mock = new MockCluster(1);
      const m = mock;
      stops.push(() => m.close());
      env.KAFKA_BROKERS = mock.bootstrapServers;
    }

    let pg: { url: string; version: string } | undefined;
    if (parts.postgres) {
      const { PGlite } = await import("@electric-sql/pglite");
      const { startPgliteServer } = await import("./pglite-server.ts");
      const { pgliteFiles } = await import("./pglite-files.ts");
      const dataDir = options.memory ? "memory://" : resolve(options.dir, "pgdata");
      const db = await PGlite.create(dataDir, await pgliteFiles());
      stops.push(() => db.close());
      const server = await startPgliteServer(db, { port: options.pgPort });
      stops.push(() => server.stop());
      const urlFile = resolve(options.dir, POSTGRES_URL_FILE);
      writeFileSync(urlFile, server.url + "\n");
      stops.push(() => rmSync(urlFile, { force: true }));
      const [{ version }] = (await db.query<{ version: string }>("SELECT version()")).rows as [{ version: string }];
      pg = { url: server.url, version: version.replace(/ on .*/, "") };
      env.POSTGRES_DSN = server.url;
    }

    let logSink: LokiSink | undefined;
    if (parts.loki) {
      const { createStdoutSink } = await import("../log/stdout-sink.ts");
      logSink = createStdoutSink();
    }

    return {
      env,
      logSink,
      stop,
      adjust(config) {
        if (!mock) return;
        for (const t of topicSpecs(config)) mock.createTopic(t.name, t.partitions);
        config.kafka.topicsCreated = true;
      },
      describe(config, port) {
        const base = `http://localhost:${port}`;
        const rel = (p: string) => (p.startsWith(process.cwd() + "/") ? `./${p.slice(process.cwd().length + 1)}` : p);
        const lines = [
          `kitsune dev: every role in one process (api, db-worker, log-worker)`,
          `  api         ${base}/execute   docs ${base}/docs`,
          parts.devToken
            ? `              bearer token: ${DEV_TOKEN} (set API_TOKENS for others)`
            : config.auth.disabled
              ? `              no bearer token needed (AUTH_DISABLED=true)`
              : `              bearer tokens from API_TOKENS`,
          mock
            ? `  Kafka       embedded: librdkafka's mock cluster in this process (${mock.bootstrapServers}), topics made at start;\n` +
              `              it holds data IN MEMORY ONLY: every event is gone when kitsune stops`
            : `  Kafka       ${config.kafka.brokers.join(",")} (KAFKA_BROKERS)`,
          pg
            ? `  PostgreSQL  embedded: ${pg.version} in this process, data ${options.memory ? "in memory only (--memory)" : `in ${rel(resolve(options.dir, "pgdata"))}`};\n` +
              `              at ${pg.url} (kitsune sql "select * from users", or psql)`
            : `  PostgreSQL  POSTGRES_DSN`,
          logSink
            ? `  Loki        not used: the log-worker prints each line it would push, as "app-logs …" below`
            : `  Loki        ${config.loki.url} (LOKI_URL)`,
          `  own logs    JSON on stdout at LOG_LEVEL=${config.logLevel}`,
          `Set KAFKA_BROKERS, POSTGRES_DSN or LOKI_URL to use real ones. Ctrl-C stops.`,
        ];
        return lines.join("\n");
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** One dev mode per directory: PGlite's files must not be opened twice. */
function claimDir(dir: string): void {
  const pidFile = resolve(dir, "dev.pid");
  let other: number | undefined;
  try {
    other = Number(readFileSync(pidFile, "utf8").trim());
  } catch {}
  if (other && other !== process.pid && alive(other)) {
    throw new Error(`another kitsune dev (pid ${other}) uses ${dir}; stop it, or set KITSUNE_DEV_DIR to another directory`);
  }
  writeFileSync(pidFile, `${process.pid}\n`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
