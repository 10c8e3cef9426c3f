/**
 * @module service
 * What every role hands back to `main`: a name, a readiness probe, a way to stop, and (for roles
 * with an HTTP API of their own) a Hono app that `main` mounts beside /healthz, /readyz, /metrics.
 */
import type { Hono } from "hono";
import type { Registry } from "prom-client";
import type { Logger } from "./logger.ts";

/** What `main` hands every role: its logger and the one metrics registry. */
export interface Deps {
  logger: Logger;
  registry: Registry;
}

export interface Readiness {
  ok: boolean;
  /** One entry per dependency, e.g. `{ kafka: "ok", postgres: "connection refused" }`. */
  checks: Record<string, string>;
}

export interface Service {
  name: string;
  ready(): Promise<Readiness>;
  /** Stop taking work, finish or hand back what is in flight, release everything. Idempotent. */
  stop(): Promise<void>;
  app?: Hono;
}
