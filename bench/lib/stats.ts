/**
 * @module bench/lib/stats
 * Percentiles of latency samples (exact: sorted copies, no histogram buckets) and the summary the
 * reports print.
 *
 * @example
 * const s = summarize(latenciesMs);  // { count, min, p50, p90, p99, p999, max, mean }
 */

export interface Summary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** Sorts a copy ascending; NaN samples are dropped. */
export function sorted(samples: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(samples as ArrayLike<number>).filter((x) => !Number.isNaN(x));
  return out.sort();
}

/** Nearest-rank percentile (`q` in [0, 1]) of an ascending array; NaN when empty. */
export function percentile(ascending: Float64Array, q: number): number {
  if (ascending.length === 0) return Number.NaN;
  const rank = Math.min(ascending.length - 1, Math.max(0, Math.ceil(q * ascending.length) - 1));
  return ascending[rank]!;
}

export function summarize(samples: ArrayLike<number>): Summary {
  const s = sorted(samples);
  let sum = 0;
  for (const x of s) sum += x;
  return {
    count: s.length,
    min: s.length ? s[0]! : Number.NaN,
    mean: s.length ? sum / s.length : Number.NaN,
    p50: percentile(s, 0.5),
    p90: percentile(s, 0.9),
    p99: percentile(s, 0.99),
    p999: percentile(s, 0.999),
    max: s.length ? s[s.length - 1]! : Number.NaN,
  };
}

/**
 * Points of a percentile-distribution curve (HdrHistogram style): percentiles spaced evenly on
 * -log10(1 - p) up to `maxNines` (3 → 99.9 %), for plotting.
 */
export function distribution(ascending: Float64Array, maxNines = 3, steps = 120): { p: number; value: number }[] {
  if (ascending.length === 0) return [];
  // Never claim a percentile finer than the samples can show.
  const nines = Math.min(maxNines, Math.log10(ascending.length));
  const out: { p: number; value: number }[] = [];
  for (let i = 0; i <= steps; i++) {
    const p = 1 - 10 ** (-(nines * i) / steps);
    out.push({ p, value: percentile(ascending, p) });
  }
  return out;
}

/** `1234.5` → `"1,235"`; small values keep significant digits (`0.0312` → `"0.031"`). */
export function fmt(x: number, digits = 1): string {
  if (!Number.isFinite(x)) return "–";
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString("en-US");
  if (Math.abs(x) >= 10) return x.toFixed(digits);
  return x.toPrecision(Math.max(2, digits + 1));
}
