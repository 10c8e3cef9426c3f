/**
 * @module metrics
 * One Prometheus registry for the process; every metric is prefixed `kitsune_`.
 */
import { Registry, collectDefaultMetrics } from "prom-client";

export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "kitsune_process_" });
  return registry;
}
