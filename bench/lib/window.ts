/**
 * @module bench/lib/window
 * Sending many messages with a bounded number unsettled: at most `window` in flight, resuming once
 * half of them settled (so the loop does not wake for every single delivery).
 */

/**
 * Calls `send(i)` for i = 0 … count-1 with at most `window` unsettled at once, and resolves once all
 * have settled. The first failure stops further sends and is thrown once those in flight settled.
 */
export async function sendWindowed(count: number, window: number, send: (i: number) => Promise<unknown>): Promise<void> {
  let inFlight = 0;
  let failed: { err: unknown } | undefined;
  let resume: (() => void) | undefined;
  const settled = () => {
    inFlight--;
    if (resume && (inFlight <= window / 2 || inFlight === 0)) {
      const r = resume;
      resume = undefined;
      r();
    }
  };
  const onError = (err: unknown) => {
    failed ??= { err };
    settled();
  };
  for (let i = 0; i < count && !failed; i++) {
    if (inFlight >= window) await new Promise<void>((r) => (resume = r));
    if (failed) break;
    inFlight++;
    send(i).then(settled, onError);
  }
  while (inFlight > 0) await new Promise<void>((r) => (resume = r));
  if (failed) throw failed.err;
}
