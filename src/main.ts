#!/usr/bin/env bun
/**
 * @module main
 * The one executable. With no sub-command it runs the role named by `ROLE`
 * (`api`, `log-worker`, `db-worker` or `all`) behind one HTTP server; sub-commands are tools.
 */
import { ConfigError, loadConfig, type Config, type Role } from "./config.ts";
import { buildApp } from "./http.ts";
import { createLogger, type Logger } from "./logger.ts";
import { createRegistry } from "./metrics.ts";
import type { Deps, Service } from "./service.ts";
import { isConnectionError } from "./db/errors.ts";
import type { LokiSink } from "./log/loki-sink.ts";
import pkg from "../package.json" with { type: "json" };

/** What `kitsune dev` hands the roles besides the configuration. */
export interface Extras {
  /** The log-worker's sink instead of Loki. */
  logSink?: LokiSink;
}

type Starter = (config: Config, deps: Deps) => Promise<Service>;

const STARTERS: Record<Exclude<Role, "all">, () => Promise<Starter>> = {
  api: async () => (await import("./roles/api.ts")).start,
  "log-worker": async () => (await import("./roles/log-worker.ts")).start,
  "db-worker": async () => (await import("./roles/db-worker.ts")).start,
};

const SHUTDOWN_BUDGET_MS = 10_000;

export async function run(config: Config, logger: Logger, extras: Extras = {}): Promise<{ stop(): Promise<void>; port: number }> {
  const registry = createRegistry();
  const roles = config.role === "all" ? (Object.keys(STARTERS) as Exclude<Role, "all">[]) : [config.role];
  const services: Service[] = [];
  try {
    for (const role of roles) {
      const start = await STARTERS[role]();
      services.push(await start(config, { logger: logger.child({ role }), registry, ...extras }));
    }
  } catch (err) {
    await Promise.allSettled(services.map((s) => s.stop()));
    throw err;
  }
  const app = buildApp(services, registry);
  const server = Bun.serve({ port: config.httpPort, hostname: "0.0.0.0", fetch: app.fetch, idleTimeout: 60 });
  logger.info({ role: config.role, port: server.port, version: pkg.version }, "kitsune started");
  let stopping: Promise<void> | undefined;
  return {
    port: server.port ?? config.httpPort,
    stop: () =>
      (stopping ??= (async () => {
        // Stop taking requests first, then let each role drain and release what it holds.
        await server.stop(false);
        const results = await Promise.allSettled([...services].reverse().map((s) => s.stop()));
        for (const r of results) if (r.status === "rejected") logger.error({ err: r.reason }, "stop failed");
        server.stop(true);
      })()),
  };
}

/** `kitsune dev`'s embedded parts, started before the roles and stopped after them. */
interface Setup {
  env: Record<string, string | undefined>;
  adjust?(config: Config): void;
  extras?: Extras;
  started?(config: Config, port: number): void;
  stop?(): Promise<void>;
}

async function runRole(setup: Setup = { env: process.env }): Promise<void> {
  let config: Config;
  const fail = async (code: number, message: string) => {
    console.error(message);
    await setup.stop?.();
    process.exit(code);
  };
  try {
    config = loadConfig(setup.env);
    setup.adjust?.(config);
  } catch (err) {
    if (err instanceof ConfigError) return fail(2, `kitsune: ${err.message}`);
    throw err;
  }
  const logger = createLogger(config.logLevel);
  let inner: Awaited<ReturnType<typeof run>>;
  try {
    inner = await run(config, logger, setup.extras);
  } catch (err) {
    logger.fatal({ err }, "start-up failed");
    return fail(1, `kitsune: start-up failed: ${(err as Error)?.message ?? err}`);
  }
  setup.started?.(config, inner.port);
  const handle = { stop: () => inner.stop().finally(() => setup.stop?.()) };
  // NOTE: postgres.js 3.4.9 on Bun can surface a connection's error outside any awaited query
  // after the connection closed (porsager/postgres#1208): thrown from a socket callback, or as
  // the rejection of a pipelined query nobody awaits any more. The batch that used the
  // connection already failed and is retried, so such a stray error is logged, not fatal.
  // Anything else still ends the process.
  const stray = (kind: string) => (err: unknown) => {
    if (isConnectionError(err)) {
      logger.warn({ err: (err as Error)?.message }, `ignored a stray PostgreSQL connection error (${kind})`);
      return;
    }
    logger.fatal({ err }, kind);
    process.exit(1);
  };
  process.on("uncaughtException", stray("uncaught exception"));
  process.on("unhandledRejection", stray("unhandled rejection"));
  let signals = 0;
  const onSignal = (signal: string) => {
    if (++signals > 1) {
      logger.warn({ signal }, "second signal: exiting at once");
      process.exit(130);
    }
    logger.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      logger.error("shutdown took longer than 10 s; exiting");
      process.exit(1);
    }, SHUTDOWN_BUDGET_MS);
    handle.stop().then(
      () => {
        clearTimeout(timer);
        logger.info("stopped");
        process.exit(0);
      },
      (err) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
}

const USAGE = `kitsune ${pkg.version}: HTTP-to-Kafka command gateway

usage:
  ROLE=api|log-worker|db-worker|all kitsune     run a role (configuration from the environment)
  kitsune dev [--memory]                        every role in one process, on embedded parts where
                                                KAFKA_BROKERS, POSTGRES_DSN, LOKI_URL are unset
  kitsune sql "select …"                        run a query on POSTGRES_DSN (else the running dev mode's)
  kitsune migrate                               apply pending sql/migrations to POSTGRES_DSN
  kitsune topics create|describe                create or show the Kafka topics
  kitsune commands                              list the command registry with its parameters
  kitsune dlq list|replay                       show dead letters, or re-drive them
  kitsune schemas push|check|print              publish (or only check) the schemas in SCHEMA_REGISTRY_URL
  kitsune version                               print the version (and librdkafka's, and where it is from)
  kitsune <command> --help                      help for one command

Every setting comes from the environment (see README: Configuration).
`;

const DEV_USAGE = `usage: kitsune dev [--memory]

Runs the api, the db-worker and the log-worker in one process. Whatever the environment leaves out
is embedded: KAFKA_BROKERS unset → librdkafka's mock cluster in this process (in memory only);
POSTGRES_DSN unset → PGlite with its data in $KITSUNE_DEV_DIR/pgdata (default ./.kitsune; --memory
keeps it in memory), on a local port (KITSUNE_DEV_PG_PORT, default any free one); LOKI_URL unset →
the log lines on stdout; API_TOKENS unset → the bearer token dev-token. HTTP_PORT as usual (8080).
`;

async function runDev(args: string[]): Promise<void> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(DEV_USAGE);
    return;
  }
  const unknown = args.filter((a) => a !== "--memory");
  const role = process.env.ROLE?.trim();
  const problems = [
    ...unknown.map((a) => `unknown option ${a}`),
    ...(role && role !== "all" ? [`ROLE=${role}: kitsune dev runs every role (leave ROLE unset, or run ROLE=${role} kitsune without dev)`] : []),
  ];
  if (problems.length) {
    console.error(`kitsune dev: ${problems.join("; ")}\n\n${DEV_USAGE}`);
    process.exit(2);
  }
  const { devOptions, startEmbedded } = await import("./dev/embedded.ts");
  let embedded: Awaited<ReturnType<typeof startEmbedded>>;
  try {
    embedded = await startEmbedded(process.env, devOptions(args, process.env));
  } catch (err) {
    console.error(`kitsune dev: ${(err as Error)?.message ?? err}`);
    process.exit(1);
  }
  return runRole({
    env: embedded.env,
    adjust: embedded.adjust,
    extras: { logSink: embedded.logSink },
    started: (config, port) => console.log(`\n${embedded.describe(config, port)}\n`),
    stop: embedded.stop,
  });
}

async function cli(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const tool = async (load: () => Promise<(args: string[]) => Promise<number>>) => {
    try {
      process.exit(await (await load())(rest));
    } catch (err) {
      console.error(`kitsune ${cmd}: ${(err as Error)?.message ?? err}`);
      process.exit(1);
    }
  };
  switch (cmd) {
    case undefined:
      return runRole();
    case "dev":
      return runDev(rest);
    case "sql":
      return tool(async () => (await import("./cli/sql.ts")).sqlCommand);
    case "migrate":
      return tool(async () => (await import("./cli/db.ts")).migrateCommand);
    case "commands":
      return tool(async () => (await import("./cli/db.ts")).commandsCommand);
    case "topics":
      return tool(async () => (await import("./cli/topics.ts")).topicsCommand);
    case "dlq":
      return tool(async () => (await import("./cli/dlq.ts")).dlqCommand);
    case "schemas":
      return tool(async () => (await import("./cli/schemas.ts")).schemasCommand);
    case "version":
    case "--version": {
      let librdkafka: string;
      let fetch = "";
      try {
        const ffi = await import("./kafka/ffi.ts");
        librdkafka = `${ffi.librdkafkaVersion()} from ${ffi.loadedLibraryFile()} (${ffi.loadedLibrary().source})`;
        const loader = await import("./kafka/native.ts");
        fetch = loader.native() ? `, native fetch loop: ${loader.nativeBuild}` : `, plain FFI fetch: ${loader.nativeUnavailable}`;
      } catch (err) {
        librdkafka = `not loaded: ${(err as Error).message}`;
      }
      console.log(`kitsune ${pkg.version} (bun ${Bun.version}, librdkafka ${librdkafka}${fetch})`);
      return;
    }
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return;
    default:
      console.error(`kitsune: unknown command "${cmd}"\n\n${USAGE}`);
      process.exit(2);
  }
}

if (import.meta.main) await cli(process.argv.slice(2));
