/**
 * @module backoff
 * How the retry loops wait: exponential backoff with equal jitter, and a sleep that an
 * AbortSignal (shutdown, rebalance) cuts short.
 */

export interface BackoffOptions {
  /** Delay before the first retry. */
  initialMs: number;
  /** Cap of the exponential delay. */
  maxMs: number;
}

/** Exponential backoff with "equal jitter": between half and all of the capped delay. */
export function backoffDelay(attempt: number, { initialMs, maxMs }: BackoffOptions, random: () => number = Math.random): number {
  const capped = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(capped / 2 + (capped / 2) * random());
}

/** Resolves after `ms`, or rejects with `signal.reason` as soon as `signal` aborts. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
