/**
 * Waiting on a condition instead of a fixed sleep: tests poll what they need to see and give up
 * only after a generous deadline, so a busy machine makes them slower, never red.
 */

/** Polls `check` until it returns true; throws with `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, { timeoutMs = 30_000, intervalMs = 25 } = {}): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(intervalMs);
  }
}

/** Polls `fn` until it returns something other than undefined, and returns that; throws with `what` after `timeoutMs`. */
export async function waitForValue<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, { timeoutMs = 30_000, intervalMs = 200 } = {}): Promise<T> {
  let value: T | undefined;
  await waitFor(async () => (value = await fn()) !== undefined, what, { timeoutMs, intervalMs });
  return value!;
}
