/**
 * @module bench/lib/broker
 * A private single-node Kafka (KRaft) for the broker-outage chaos scenario, run from the jars
 * `scripts/services.sh up` caches, with the configuration that script writes (`kafka-config`),
 * on ports of its own with a data directory of its own. Stopping it disturbs nobody else — the
 * shared broker on 9092 keeps serving other tests.
 *
 * @example
 * const broker = await startBroker({ dir });
 * await broker.stop();        // SIGTERM, as `services.sh down` does (or broker.freeze() for SIGSTOP)
 * await broker.start();       // same data directory: topics, offsets and transactions survive
 * await broker.destroy();
 */
import { closeSync, existsSync, openSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "./procs.ts";

const SERVICES = new URL("../../scripts/services.sh", import.meta.url).pathname;

/** Runs a `scripts/services.sh` sub-command; returns what it printed. */
function services(...args: string[]): string {
  const r = Bun.spawnSync(["bash", SERVICES, ...args], { stdout: "pipe", stderr: "pipe" });
  if (!r.success) throw new Error(`scripts/services.sh ${args.join(" ")} failed: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

export interface PrivateBroker {
  /** `127.0.0.1:<port>` */
  bootstrap: string;
  readonly pid: number | undefined;
  /** Starts (again) on the same ports and data; resolves when metadata answers. */
  start(): Promise<void>;
  /** SIGTERM and wait for the exit (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<void>;
  kill(): Promise<void>;
  freeze(): void;
  thaw(): void;
  destroy(): Promise<void>;
}

export async function startBroker({ dir }: { dir: string }): Promise<PrivateBroker> {
  const home = services("kafka-home");
  if (!existsSync(join(home, "libs", ".complete"))) {
    throw new Error(`no Kafka jars in ${home}/libs: run scripts/services.sh up once (it fetches them)`);
  }
  const port = freePort();
  const controller = freePort();
  // The shared broker's configuration, on these ports and in this directory.
  services("kafka-config", dir, String(port), String(controller));
  const props = join(dir, "kafka.properties");
  // services.sh writes both logging configurations: log4j 1 for Kafka 3.x, log4j2 for 4.x.
  const log4j = join(dir, "log4j.properties");
  const log4j2 = join(dir, "log4j2.properties");
  const java = (args: string[], out: string) => {
    const fd = openSync(out, "a");
    try {
      return Bun.spawn(
        ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true", `-Dlog4j.configuration=file:${log4j}`, `-Dlog4j2.configurationFile=${log4j2}`, "-cp", `${home}/libs/*`, ...args],
        { stdin: "ignore", stdout: fd, stderr: fd },
      );
    } finally {
      closeSync(fd);
    }
  };

  // A KRaft cluster id is 16 random bytes, base64url without padding.
  const clusterId = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64url");
  const format = java(["kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", clusterId, "-c", props], join(dir, "format.out"));
  if ((await format.exited) !== 0) throw new Error(`kafka StorageTool format failed: ${await Bun.file(join(dir, "format.out")).text()}`);

  let proc: Subprocess | undefined;
  let runs = 0;
  const bootstrap = `127.0.0.1:${port}`;

  const ready = async (timeoutMs = 120_000) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (proc?.exitCode !== null && proc?.exitCode !== undefined) throw new Error(`private Kafka exited (${proc.exitCode}); see ${dir}/kafka-${runs}.out`);
      // kcat asks for metadata the way clients will; the port opens before the broker serves it.
      const r = Bun.spawnSync(["kcat", "-b", bootstrap, "-L", "-m", "2"], { stdout: "ignore", stderr: "ignore" });
      if (r.success) return;
      await Bun.sleep(300);
    }
    throw new Error(`private Kafka not ready within ${timeoutMs} ms`);
  };

  const broker: PrivateBroker = {
    bootstrap,
    get pid() {
      return proc?.pid;
    },
    async start() {
      runs++;
      proc = java(["kafka.Kafka", props], join(dir, `kafka-${runs}.out`));
      await ready();
    },
    async stop(graceMs = 30_000) {
      if (!proc || proc.exitCode !== null) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc?.kill("SIGKILL"), graceMs);
      await proc.exited;
      clearTimeout(timer);
    },
    async kill() {
      if (!proc || proc.exitCode !== null) return;
      proc.kill("SIGKILL");
      await proc.exited;
    },
    freeze() {
      proc?.kill("SIGSTOP");
    },
    thaw() {
      proc?.kill("SIGCONT");
    },
    async destroy() {
      broker.thaw();
      await broker.kill();
    },
  };
  if (!Bun.which("kcat")) throw new Error("kcat is needed to tell when the private Kafka is ready (apt-get install kcat)");
  await broker.start();
  return broker;
}
