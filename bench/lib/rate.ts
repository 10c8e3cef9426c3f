/**
 * @module bench/lib/rate
 * Counting windows a benchmark applies to both of its sides alike, so that ours and the baseline
 * are timed over the same stretch of their runs, and the small statistics the reports print.
 *
 * @example
 * const seen = [{ at: 0, count: 0 }, { at: 20, count: 7000 }, { at: 1020, count: 107000 }];
 * deliveryWindow(seen, 107000);                   // 100,000 over 1 s: what came after the first sighting
 * batchRate([{ at: 0, rows: 10 }, { at: 1000, rows: 10 }, { at: 2000, rows: 10 }]);  // 20 rows over 2 s
 * roundOrder(2, ["floor", "ours"]);                // ["ours", "floor"]
 */

/** A cumulative count observed at a time (ms). */
export interface Sample {
  at: number;
  count: number;
}

export interface Rate {
  /** What the window counts. */
  count: number;
  seconds: number;
  /** `count / seconds`; 0 when the window is empty. */
  perSecond: number;
}

function rate(count: number, ms: number): Rate {
  const seconds = ms / 1000;
  return { count, seconds, perSecond: seconds > 0 ? count / seconds : 0 };
}

/** What arrived between two observations of a cumulative count. */
export function spanRate(first: Sample, last: Sample): Rate {
  return rate(last.count - first.count, last.at - first.at);
}

/**
 * A run watched from the receiver (samples in time order): from the first sample that saw
 * anything to the first that saw `expected`. What the first sample already saw, and the start-up
 * before it, are left out. Throws when no sample reached `expected` or none saw anything.
 */
export function deliveryWindow(samples: readonly Sample[], expected: number): Rate {
  const first = samples.find((s) => s.count > 0);
  const last = samples.find((s) => s.count >= expected);
  if (!first || !last) throw new Error(`deliveryWindow: the samples never reached ${expected} (last saw ${samples.at(-1)?.count ?? 0})`);
  return spanRate(first, { at: last.at, count: expected });
}

/**
 * Rows per second from the start times of the transactions that wrote them (`processed_at` or
 * `created_at` DEFAULT now(), in ms; any order): from the first transaction's start to the last
 * one's, over the rows of every transaction but the last — whose end is not known, so neither its
 * rows nor its duration count.
 */
export function batchRate(batches: readonly { at: number; rows: number }[]): Rate {
  if (batches.length < 2) return rate(0, 0);
  const sorted = [...batches].sort((a, b) => a.at - b.at);
  let rows = 0;
  for (let i = 0; i < sorted.length - 1; i++) rows += sorted[i]!.rows;
  return rate(rows, sorted.at(-1)!.at - sorted[0]!.at);
}

/** Median of the values (the mean of the middle two for an even count); NaN when empty. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The order of the sides in round `round` (from 1): as given in odd rounds, reversed in even ones. */
export function roundOrder<T>(round: number, sides: readonly T[]): T[] {
  return round % 2 === 1 ? [...sides] : [...sides].reverse();
}

/**
 * Answers that count as throughput: every answer the client received, less those that were not a
 * success — by the client's count or the server's, whichever is larger (the server's may include
 * a few answered after the client stopped counting, so this never counts a failure as success).
 */
export function successes({ answers, clientFailed, serverFailed }: { answers: number; clientFailed: number; serverFailed: number }): number {
  return Math.max(0, answers - Math.max(clientFailed, serverFailed));
}
