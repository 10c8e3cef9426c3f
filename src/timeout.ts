/**
 * @module timeout
 * Bounded waits: the one place a promise is raced against a timer (readiness checks, status
 * lookups, a rebalance waiting for the batch in flight). The timer is always cleared.
 */

/** `promise`'s outcome, or a rejection with `message` once `ms` passed without one. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message = `no answer within ${ms} ms`): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `promise` to settle, but no longer than `ms`; never rejects. */
export async function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise.catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
