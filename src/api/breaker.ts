/**
 * @module api/breaker
 * Fail fast while the broker does not answer. Once a produce has timed out, requests get their
 * 503 at once instead of each waiting out the produce timeout and piling more messages into the
 * client's queue — except one probe per `probeEveryMs`, which does try the broker. The first
 * produce that succeeds (a probe, or a write that was still in flight) closes the breaker.
 *
 * Only timeouts open it: a rejected write already answers quickly.
 */
export class ProduceBreaker {
  private openedAt: number | undefined;
  private lastProbe = 0;

  constructor(
    private readonly probeEveryMs = 1000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get isOpen(): boolean {
    return this.openedAt !== undefined;
  }

  /** True when this request may try the broker. */
  allow(): boolean {
    if (this.openedAt === undefined) return true;
    const t = this.now();
    if (t - this.lastProbe < this.probeEveryMs) return false;
    this.lastProbe = t;
    return true;
  }

  succeeded(): void {
    this.openedAt = undefined;
  }

  timedOut(): void {
    const t = this.now();
    this.openedAt ??= t;
    this.lastProbe = t;
  }
}
