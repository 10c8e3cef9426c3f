/**
 * @module api/metrics
 * The api's Prometheus metrics, registered on the process registry passed in. The ones touched on
 * every request are "cell" metrics: bound once to their label values, each observation is a few
 * additions, and prom-client sees the totals when scraped.
 *
 * NOTE: prom-client's own `observe`/`inc` hash and validate the labels and allocate on every call;
 * with four per request that was ~10% of POST /execute's CPU (bench/api.ts).
 *
 * @example
 * ```ts
 * const metrics = createApiMetrics(registry);
 * const ok = metrics.produceDuration.cell({ outcome: "ok" }); // once
 * ok.observe(0.004);                                          // per request
 * ```
 */
import { Counter, Gauge, Histogram, type CounterConfiguration, type HistogramConfiguration, type Registry } from "prom-client";

export interface ApiMetrics {
  requests: CellCounter<"method" | "route" | "status">;
  duration: CellHistogram<"method" | "route" | "status">;
  inFlight: InFlightGauge;
  produceDuration: CellHistogram<"outcome">;
  produceErrors: Counter<"reason">;
  accepted: CellCounter<"command" | "version">;
  /** `POST /execute?wait=…`: whether the command's result came in time. */
  resultWaits: Counter<"outcome">;
  /** `GET /commands/:id` lookups by outcome (found, pending, unavailable). */
  statusLookups: Counter<"outcome">;
}

/**
 * Returns the metric already registered under `name` when there is one, so two apps built on one
 * registry (tests, `ROLE=all` restarts) share it instead of throwing on the duplicate name.
 */
function once<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createApiMetrics(registry: Registry): ApiMetrics {
  const registers = [registry];
  return {
    requests: once(registry, "kitsune_http_requests_total", () =>
      new CellCounter({
        name: "kitsune_http_requests_total",
        help: "HTTP requests answered by the api, by route and status.",
        labelNames: ["method", "route", "status"] as const,
        registers,
      })),
    duration: once(registry, "kitsune_http_request_duration_seconds", () =>
      new CellHistogram({
        name: "kitsune_http_request_duration_seconds",
        help: "Time from receiving an api request to its answer.",
        labelNames: ["method", "route", "status"] as const,
        buckets: LATENCY_BUCKETS,
        registers,
      })),
    inFlight: once(registry, "kitsune_http_requests_in_flight", () =>
      new InFlightGauge({
        name: "kitsune_http_requests_in_flight",
        help: "Api requests being handled now.",
        registers,
      })),
    produceDuration: once(registry, "kitsune_produce_duration_seconds", () =>
      new CellHistogram({
        name: "kitsune_produce_duration_seconds",
        help: "Time for the broker to acknowledge both events of a command (outcome ok, error or timeout).",
        labelNames: ["outcome"] as const,
        buckets: LATENCY_BUCKETS,
        registers,
      })),
    produceErrors: once(registry, "kitsune_produce_errors_total", () =>
      new Counter({
        name: "kitsune_produce_errors_total",
        help: "Commands answered 503 because the broker rejected the write (rejected), did not acknowledge it in time (timeout), or had just timed out (breaker_open).",
        labelNames: ["reason"] as const,
        registers,
      })),
    accepted: once(registry, "kitsune_commands_accepted_total", () =>
      new CellCounter({
        name: "kitsune_commands_accepted_total",
        help: "Commands durably written to the broker and answered 202.",
        labelNames: ["command", "version"] as const,
        registers,
      })),
    resultWaits: once(registry, "kitsune_result_waits_total", () =>
      new Counter({
        name: "kitsune_result_waits_total",
        help: "POST /execute?wait=… calls by outcome: result (answered 200) or timeout (answered 202).",
        labelNames: ["outcome"] as const,
        registers,
      })),
    statusLookups: once(registry, "kitsune_status_lookups_total", () =>
      new Counter({
        name: "kitsune_status_lookups_total",
        help: "GET /commands/:id lookups by outcome: found, pending or unavailable (PostgreSQL did not answer).",
        labelNames: ["outcome"] as const,
        registers,
      })),
  };
}

type Labels<T extends string> = Record<T, string>;

/** Label values in `labelNames` order, as one string: the key of a cell. */
function cellKey(names: readonly string[], labels: Record<string, string | number | undefined>): string {
  let key = "";
  for (const n of names) key += `${labels[n] ?? ""}\u0000`;
  return key;
}

export interface CounterCell {
  inc(n?: number): void;
}

/** A Counter with `cell(labels)`: increments add to a plain number, handed to prom-client when scraped. */
export class CellCounter<T extends string> extends Counter<T> {
  private readonly cells = new Map<string, { labels: Labels<T>; pending: number }>();
  private readonly names: readonly T[];

  constructor(config: CounterConfiguration<T>) {
    super({
      ...config,
      collect(this: Counter<T>) {
        (this as CellCounter<T>).flush();
      },
    });
    this.names = config.labelNames ?? [];
  }

  cell(labels: Labels<T>): CounterCell {
    const key = cellKey(this.names, labels);
    let cell = this.cells.get(key);
    if (!cell) {
      cell = { labels: { ...labels }, pending: 0 };
      this.cells.set(key, cell);
    }
    const c = cell;
    return {
      inc(n = 1) {
        c.pending += n;
      },
    };
  }

  private flush(): void {
    for (const cell of this.cells.values()) {
      if (cell.pending === 0) continue;
      // Public API: one inc per label set and scrape, however many requests there were.
      this.inc(cell.labels, cell.pending);
      cell.pending = 0;
    }
  }

  override reset(): void {
    // NOTE: `?.`: prom-client's constructor calls reset() before this class's fields exist.
    for (const cell of this.cells?.values() ?? []) cell.pending = 0;
    super.reset();
  }
}

export interface HistogramCell {
  observe(value: number): void;
}

interface HistogramState<T extends string> {
  labels: Labels<T>;
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A Histogram whose observations go into cells (`cell(labels)`, or `observe` as usual); prom-client's
 * own storage is not used: `get` reports the cells in prom-client's format.
 */
export class CellHistogram<T extends string> extends Histogram<T> {
  private readonly cells = new Map<string, HistogramState<T>>();
  private readonly names: readonly T[];
  private readonly bounds: number[];
  private readonly metricName: string;
  private readonly helpText: string;

  constructor(config: HistogramConfiguration<T> & { buckets: number[] }) {
    super(config);
    this.names = config.labelNames ?? [];
    this.bounds = [...config.buckets].sort((a, b) => a - b);
    this.metricName = config.name;
    this.helpText = config.help;
    // NOTE: prom-client's constructor sets `observe` on the instance, hiding any override.
    this.observe = (labelsOrValue: Partial<Record<T, string | number>> | number | object, value?: number) => {
      if (typeof labelsOrValue === "number") this.cell({} as Labels<T>).observe(labelsOrValue);
      else this.cell(labelsOrValue as Labels<T>).observe(value!);
    };
  }

  private state(labels: Labels<T>): HistogramState<T> {
    const key = cellKey(this.names, labels);
    let state = this.cells.get(key);
    if (!state) {
      state = { labels: { ...labels }, counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
      this.cells.set(key, state);
    }
    return state;
  }

  cell(labels: Labels<T>): HistogramCell {
    const state = this.state(labels);
    const bounds = this.bounds;
    return {
      observe(value: number) {
        let i = 0;
        while (i < bounds.length && value > bounds[i]!) i++;
        state.counts[i]!++;
        state.sum += value;
        state.count++;
      },
    };
  }

  override zero(labels: Partial<Record<T, string | number>>): void {
    const state = this.state(labels as Labels<T>);
    state.counts.fill(0);
    state.sum = 0;
    state.count = 0;
  }

  override reset(): void {
    // NOTE: `?.`: prom-client's constructor calls reset() before this class's fields exist.
    this.cells?.clear();
    super.reset();
  }

  override async get(): ReturnType<Histogram<T>["get"]> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const { labels, counts, sum, count } of this.cells.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += counts[i]!;
        values.push({ labels: { ...labels, le: this.bounds[i]! }, value: cumulative, metricName: `${this.metricName}_bucket` });
      }
      values.push({ labels: { ...labels, le: "+Inf" }, value: count, metricName: `${this.metricName}_bucket` });
      values.push({ labels: { ...labels }, value: sum, metricName: `${this.metricName}_sum` });
      values.push({ labels: { ...labels }, value: count, metricName: `${this.metricName}_count` });
    }
    // NOTE: the cast: prom-client's typings require `collect` on the result and know no `le` label.
    return { name: this.metricName, help: this.helpText, type: "histogram", values, aggregator: "sum" } as unknown as Awaited<ReturnType<Histogram<T>["get"]>>;
  }

  /** NOTE: prom-client's registry prefers this over `get` when rendering text. */
  getForPromString() {
    return this.get();
  }
}

/** Requests in flight: a plain number, read by prom-client when scraped. */
export class InFlightGauge extends Gauge {
  value = 0;

  constructor(config: { name: string; help: string; registers: Registry[] }) {
    super({
      ...config,
      collect(this: Gauge) {
        this.set((this as InFlightGauge).value);
      },
    });
  }
}
