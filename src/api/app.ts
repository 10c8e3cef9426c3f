/**
 * @module api/app
 * The api role's Hono app: `POST /execute`, `GET /commands/:id`, `GET /openapi.json`, `GET /docs` (and its files).
 * `/healthz`, `/readyz` and `/metrics` belong to the process (`src/http.ts`), which mounts this app
 * beside them. Built from ports, so tests call `app.request(...)` with a fake sink and an in-memory
 * registry.
 *
 * @example
 * ```ts
 * const app = createApiApp({ config, registry: commands, sink: producer, metrics: new Registry(), logger });
 * const res = await app.request("/execute", { method: "POST", headers, body });
 * ```
 */
import { Hono, type Context } from "hono";
import type { Registry } from "prom-client";
import type { Config } from "../config.ts";
import type { CommandLookup } from "../contracts.ts";
import type { MessageSink } from "../kafka/types.ts";
import type { Logger } from "../logger.ts";
import { bearerCheck } from "./auth.ts";
import { DEFAULT_MAX_DEPTH } from "./body.ts";
import { ProduceBreaker } from "./breaker.ts";
import { statusHandler, type CommandStatuses } from "./status.ts";
import { executeHandler } from "./execute.ts";
import { createApiMetrics, type CounterCell, type HistogramCell } from "./metrics.ts";
import { docsAsset, DOCS_HTML } from "./docs.ts";
import type { EventSchemas } from "./events.ts";
import { buildOpenApi } from "./openapi.ts";
import { ApiError, problemResponse } from "./problems.ts";
import type { ResultWaiters } from "./results.ts";

export interface ApiAppOptions {
  config: Pick<Config, "topics" | "auth" | "maxBodyBytes">;
  registry: CommandLookup;
  sink: MessageSink;
  /** The process's Prometheus registry; the api's `kitsune_*` metrics are registered on it. */
  metrics: Registry;
  logger: Logger;
  /** Where `POST /execute?wait=` waits for results; without it such requests answer 202 at once. */
  results?: ResultWaiters;
  /** Schema ids for the events (`SCHEMA_REGISTRY_URL`); without them events carry none. */
  schemas?: EventSchemas;
  /** Command status for `GET /commands/:id`; without it that route answers 503. */
  statuses?: CommandStatuses;
  now?: () => Date;
  /** Id of each request, used as the command's id: UUIDv7 by default. */
  newId?: () => string;
  /** How long `POST /execute` waits for the broker before answering 503 (default 5000). */
  produceTimeoutMs?: number;
  /** `Retry-After` seconds on 503 (default 1). */
  retryAfterSeconds?: number;
  /** Deepest JSON nesting accepted in a body (default 32). */
  maxDepth?: number;
  /** Fails fast while the broker does not answer; one probe per `Retry-After` by default. */
  breaker?: ProduceBreaker;
}

export const DEFAULT_PRODUCE_TIMEOUT_MS = 5_000;

/** A route's handler: gets the request's id, returns its answer or throws (an `ApiError` for a refusal). */
type RouteHandler = (c: Context, requestId: string) => Response | Promise<Response>;

/** Methods that get 405 (with `Allow`) on a route that has another. */
const OTHER_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

export function createApiApp({
  config,
  registry,
  sink,
  metrics: metricsRegistry,
  logger,
  results,
  schemas,
  statuses,
  now = () => new Date(),
  newId = () => Bun.randomUUIDv7(),
  produceTimeoutMs = DEFAULT_PRODUCE_TIMEOUT_MS,
  retryAfterSeconds = 1,
  maxDepth = DEFAULT_MAX_DEPTH,
  breaker = new ProduceBreaker(retryAfterSeconds * 1000),
}: ApiAppOptions): Hono {
  const metrics = createApiMetrics(metricsRegistry);
  const app = new Hono();

  /**
   * Wraps every route: the request's id, the problem answer for whatever it throws, and the
   * request metrics under the route's own label.
   *
   * NOTE: a wrapper rather than `app.use("*")` and `app.onError`: with one handler per route Hono
   * skips its middleware chain, and a mounted app without its own onError is not wrapped again by
   * `route()` (src/http.ts mounts it) — a few µs of CPU per request (bench/api.ts).
   */
  const instrumented = (route: string, handler: RouteHandler) => {
    const cells = new Map<string, { count: CounterCell; time: HistogramCell }>();
    const cell = (method: string, status: number) => {
      const key = `${method} ${status}`;
      let found = cells.get(key);
      if (!found) {
        const labels = { method, route, status: String(status) };
        found = { count: metrics.requests.cell(labels), time: metrics.duration.cell(labels) };
        cells.set(key, found);
      }
      return found;
    };
    return async (c: Context): Promise<Response> => {
      const started = performance.now();
      const requestId = newId();
      metrics.inFlight.value++;
      let res: Response;
      try {
        res = await handler(c, requestId);
      } catch (err) {
        res = errorResponse(c, err, requestId);
      } finally {
        metrics.inFlight.value--;
      }
      const { count, time } = cell(c.req.method, res.status);
      count.inc();
      time.observe((performance.now() - started) / 1000);
      return res;
    };
  };

  const errorResponse = (c: Context, err: unknown, requestId: string): Response => {
    if (err instanceof ApiError) return problemResponse(c, err, requestId);
    logger.error({ err, request_id: requestId, path: c.req.path }, "unhandled error in api");
    return problemResponse(c, new ApiError("internal", "an unexpected error occurred; it has been logged"), requestId);
  };

  const notAllowed = (path: string, allowed: string) => {
    const others = OTHER_METHODS.filter((m) => m !== allowed);
    app.on(
      others,
      path,
      instrumented(path, () => {
        throw new ApiError("method_not_allowed", `use ${allowed} ${path}`, { headers: { allow: allowed } });
      }),
    );
  };

  // Only the command routes need a token (each checks it itself); docs stay open.
  const authorize = bearerCheck({ tokens: config.auth.tokens, disabled: config.auth.disabled });
  const execute = executeHandler({
    commands: registry,
    sink,
    topics: { events: config.topics.events, logs: config.topics.logs },
    schemas,
    maxBodyBytes: config.maxBodyBytes,
    maxDepth,
    produceTimeoutMs,
    retryAfterSeconds,
    authorize,
    breaker,
    results,
    metrics,
    logger,
    now,
  });
  app.post("/execute", instrumented("/execute", (c, requestId) => execute(c.req.raw, requestId)));
  notAllowed("/execute", "POST");

  const status = statusHandler({ statuses, authorize, retryAfterSeconds, metrics, logger });
  app.get("/commands/:id", instrumented("/commands/:id", (c, requestId) => status(c.req.raw, c.req.param("id") ?? "", requestId)));
  notAllowed("/commands/:id", "GET");

  const openapi = JSON.stringify(buildOpenApi(registry));
  app.get("/openapi.json", instrumented("/openapi.json", (_c, requestId) =>
    new Response(openapi, { headers: { "content-type": "application/json", "x-request-id": requestId } })));
  app.get("/docs", instrumented("/docs", (_c, requestId) =>
    new Response(DOCS_HTML, { headers: { "content-type": "text/html; charset=UTF-8", "x-request-id": requestId } })));
  app.get("/docs/:file", instrumented("/docs/:file", (c) => {
    const res = docsAsset(c.req.param("file") ?? "");
    if (!res) throw new ApiError("not_found", `no file ${c.req.path}`);
    return res;
  }));

  app.notFound(instrumented("unmatched", (c) => {
    throw new ApiError("not_found", `no route for ${c.req.method} ${c.req.path}`);
  }));

  return app;
}
