/**
 * @module http
 * The one HTTP server of a process: /healthz, /readyz and /metrics for every role, plus the
 * routes of roles that have an API (mounted at the root).
 */
import { Hono } from "hono";
import type { Registry } from "prom-client";
import { ApiError, problemResponse } from "./api/problems.ts";
import type { Readiness, Service } from "./service.ts";

export function buildApp(services: Service[], registry: Registry): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const results = await Promise.all(
      services.map(async (s): Promise<[string, Readiness]> => {
        try {
          return [s.name, await s.ready()];
        } catch (err) {
          return [s.name, { ok: false, checks: { error: String((err as Error)?.message ?? err) } }];
        }
      }),
    );
    const ok = results.every(([, r]) => r.ok);
    return c.json({ status: ok ? "ready" : "not ready", services: Object.fromEntries(results) }, ok ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    c.header("content-type", registry.contentType);
    return c.body(await registry.metrics());
  });
  for (const s of services) if (s.app) app.route("/", s.app);
  // NOTE: a mounted app's own notFound is not used by this app; unknown paths end here.
  app.notFound((c) => problemResponse(c, new ApiError("not_found", `no route for ${c.req.method} ${c.req.path}`), Bun.randomUUIDv7()));
  return app;
}
