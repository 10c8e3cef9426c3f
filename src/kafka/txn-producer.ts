/**
 * @module kafka/txn-producer
 * A transactional producer that commits groups of `sendAll` calls: while one transaction commits,
 * new calls queue up and go into the next one. Each call's messages are in exactly one
 * transaction, so a `read_committed` reader sees all of them or none.
 *
 * It keeps several "lanes" (librdkafka handles with their own transactional ids, 3 by default)
 * and starts each group on the lane that finished longest ago. NOTE: two reasons, both measured
 * (bench/txn.ts):
 * - light load: a call that arrives while a transaction commits (~3–4 ms here: AddPartitionsToTxn,
 *   one Produce per partition, EndTxn) starts at once on another lane instead of waiting for it
 *   (1,000 calls/s: p50 4.5–5.0 ms with 3 lanes, 6.4–7.2 ms with one);
 * - a lane rests between its transactions: the coordinator answers EndTxn before it has written
 *   the markers, and an AddPartitionsToTxn for the same transactional id until then gets
 *   CONCURRENT_TRANSACTIONS, which librdkafka retries after a fixed 20 ms (rdkafka_txnmgr.c) — the
 *   p90 of back-to-back transactions on one lane was 16–23 ms on a busy machine, 3.5–4 ms on two.
 * Under heavy load every extra transaction costs CPU on both sides (50 callers: 11–13k sendAll/s
 * with 1 lane, 7k with 2), so once calls queue up in numbers (`overlapBelow`) only one
 * transaction runs at a time, still rotating over the lanes, and groups stay large.
 *
 * The blocking librdkafka calls (init/commit/abort) run on a Worker thread (`txn-worker.ts`);
 * producing and delivery reports stay on this thread. NOTE: commit waits for delivery reports to
 * be *served*, which this thread does while the worker blocks — so they must stay split like this.
 */
import { hostname } from "node:os";
import { ERR, libraryPath } from "./ffi.ts";
import { KafkaError } from "./errors.ts";
import { closedError, Producer, PRODUCER_SAFETY, type ProducerOptions } from "./producer.ts";
import { startTxnWorker, type TxnError, type TxnOp, type TxnReply, type TxnRequest } from "./txn-worker.ts";
import type { DeliveryReport, KafkaConfig, MessageSink, OutgoingMessage } from "./types.ts";

export interface TransactionalOptions extends ProducerOptions {
  /** Defaults to `kitsune-<host>-<pid>-<n>`: unique per producer, stable across restarts of a container. */
  transactionalId?: string;
  /** Transactions that may be open at once, each on its own handle (default 3). */
  lanes?: number;
  /** Most `sendAll` calls in one transaction. */
  maxGroup?: number;
  /**
   * A transaction starts while another one is still committing only if fewer than this many calls
   * were waiting when the last one ended (light load: overlap for latency); with more (heavy load)
   * groups wait for the running one, so they stay large and the broker commits fewer of them.
   */
  overlapBelow?: number;
  /** Budget for init/commit/abort, each. */
  txnTimeoutMs?: number;
}

interface Request {
  messages: OutgoingMessage[];
  resolve(r: DeliveryReport[]): void;
  reject(e: KafkaError): void;
}

let instances = 0;

export const DEFAULT_LANES = 3;
/** A transaction running longer than this no longer keeps the other lanes from starting under heavy load. */
const STALLED_MS = 1000;

function toKafkaError(e: TxnError): KafkaError {
  return new KafkaError(e.code, e.message.replace(/^[^:]*: /, ""), e);
}

/** One transactional handle and the worker thread that makes its blocking calls. */
class TxnLane extends Producer {
  private readonly worker: Worker;
  private readonly calls = new Map<number, { resolve(r: TxnReply): void; reject(e: KafkaError): void }>();
  /** A transaction is open (begun by the worker after init/commit/abort). */
  private inTransaction = false;
  private nextCall = 1;
  private ready: Promise<void>;
  private broken: KafkaError | undefined;
  private readonly txnTimeoutMs: number;
  stopped = false;
  committed = 0;
  aborted = 0;

  /** When the last transaction of this lane ended, and when the current one began (performance.now()). */
  idleSince = 0;
  runningSince = 0;

  constructor(config: KafkaConfig, options: TransactionalOptions, transactionalId: string) {
    super(config, options, { ...PRODUCER_SAFETY, "transactional.id": transactionalId });
    this.txnTimeoutMs = options.txnTimeoutMs ?? 10_000;
    this.worker = startTxnWorker();
    this.worker.onmessage = (e: MessageEvent<TxnReply>) => {
      const call = this.calls.get(e.data.id);
      if (!call) return;
      this.calls.delete(e.data.id);
      const err = e.data.error;
      if (!err) call.resolve(e.data);
      else call.reject(toKafkaError(err));
    };
    // A worker that dies (it should not) must not leave calls hanging.
    this.worker.onerror = (e) => {
      const err = new KafkaError(ERR.FATAL, `transaction worker failed: ${e.message}`, { fatal: true });
      this.broken = err;
      for (const c of this.calls.values()) c.reject(err);
      this.calls.clear();
    };
    this.ready = this.call("init");
    this.ready.catch((err) => (this.broken = err));
  }

  /** Resolves once the producer has its transactional id registered with the coordinator. */
  init(): Promise<void> {
    return this.ready;
  }

  get fatalError(): KafkaError | undefined {
    return this.broken;
  }

  /** Runs `op` (then begin) on the worker; records whether a transaction is open afterwards. */
  private call(op: TxnOp): Promise<void> {
    return this.post(op).then((reply) => {
      this.inTransaction = !reply.beginError;
      if (reply.beginError) {
        const err = toKafkaError(reply.beginError);
        if (err.fatal) this.broken = err;
      }
    });
  }

  private post(op: TxnOp): Promise<TxnReply> {
    return new Promise((resolve, reject) => {
      const id = this.nextCall++;
      this.calls.set(id, { resolve, reject });
      const req: TxnRequest = { id, op, rk: this.client.rk as unknown as number, timeoutMs: this.txnTimeoutMs, libPath: libraryPath() };
      this.worker.postMessage(req);
    });
  }

  /** Runs one group as one transaction; settles every request of it. */
  async run(group: Request[]): Promise<void> {
    this.runningSince = performance.now();
    try {
      await this.ready.catch(() => {});
      if (this.broken) {
        for (const r of group) r.reject(this.broken);
        return;
      }
      await this.transaction(group);
    } finally {
      this.idleSince = performance.now();
    }
  }

  private async transaction(group: Request[]): Promise<void> {
    if (!this.inTransaction) {
      try {
        await this.call("begin");
        if (!this.inTransaction) throw this.broken ?? new KafkaError(ERR.STATE, "cannot begin a transaction", { retriable: true });
      } catch (err) {
        for (const r of group) r.reject(err as KafkaError);
        return;
      }
    }
    let refused: KafkaError | undefined;
    const deliveries = group.map((r) =>
      Promise.allSettled(
        r.messages.map((m) =>
          super.send(m).catch((err: KafkaError) => {
            refused ??= err;
            throw err;
          }),
        ),
      ),
    );
    // Into librdkafka now rather than at the end of the task: the commit follows right away.
    this.produceStaged();
    try {
      // Every message must be inside librdkafka before the commit: one still waiting for room in
      // its queue would land after it, outside this transaction.
      while (this.waitingForRoom > 0 && !refused) await Bun.sleep(1);
      // A message librdkafka refused outright (too large, …) is not part of the transaction as
      // librdkafka sees it, so committing would publish the others alone: abort instead.
      await new Promise((r) => setImmediate(r));
      if (refused) throw refused;
      await this.commitWithRetry();
      const results = await Promise.all(deliveries);
      this.committed++;
      group.forEach((r, i) => {
        const failed = results[i]!.find((s) => s.status === "rejected");
        // A committed transaction holds every message; a failed report here would be a librdkafka bug.
        if (failed) r.reject(failed.reason);
        else r.resolve(results[i]!.map((s) => (s as PromiseFulfilledResult<DeliveryReport>).value));
      });
    } catch (e) {
      const err = e instanceof KafkaError ? e : new KafkaError(-1, String(e));
      await this.abort(err);
      for (const r of group) r.reject(err);
      await Promise.all(deliveries);
    }
  }

  /** A commit that timed out continues in the background; calling again resumes it. */
  private async commitWithRetry(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.call("commit");
      } catch (e) {
        const err = e as KafkaError;
        if (err.retriable && !err.txnRequiresAbort && !err.fatal && attempt < 2 && !this.stopped) continue;
        throw err;
      }
    }
  }

  private async abort(cause: KafkaError): Promise<void> {
    if (cause.fatal) {
      this.broken = cause;
      return;
    }
    // An abort can time out while messages are still in flight to an unreachable broker; it
    // resumes when called again, so keep trying (this lane stays busy, the others serve).
    for (let attempt = 0; attempt < 12; attempt++) {
      try {
        await this.call("abort");
        this.aborted++;
        return;
      } catch (e) {
        const err = e as KafkaError;
        if (err.fatal) {
          this.broken = err;
          return;
        }
        if (this.stopped) return;
        await Bun.sleep(Math.min(5000, 250 * 2 ** attempt));
      }
    }
    // NOTE: abort kept failing: the producer cannot start another transaction safely.
    this.broken = new KafkaError(ERR.FATAL, `transaction could not be aborted after: ${cause.message}`, { fatal: true });
  }

  override async close(timeoutMs = 10_000): Promise<void> {
    this.stopped = true;
    const deadline = Date.now() + timeoutMs;
    while (this.calls.size > 0 && Date.now() < deadline) await Bun.sleep(5);
    if (this.calls.size > 0) {
      // NOTE: the worker is still inside a blocking call on this handle (e.g. init with the broker
      // unreachable). Freeing the handle under it would be a use-after-free: leave it to the
      // process's exit instead.
      for (const c of this.calls.values()) c.reject(new KafkaError(ERR.DESTROY, "producer closed"));
      this.calls.clear();
      this.worker.unref();
      return;
    }
    await super.close(Math.max(0, deadline - Date.now()));
    this.worker.terminate();
    for (const c of this.calls.values()) c.reject(new KafkaError(ERR.DESTROY, "producer closed"));
    this.calls.clear();
  }
}

export class TransactionalProducer implements MessageSink {
  private readonly lanes: TxnLane[];
  private readonly queue: Request[] = [];
  private readonly busy = new Set<TxnLane>();
  private readonly maxGroup: number;
  private readonly overlapBelow: number;
  /** Calls were waiting in numbers when the last transaction ended (see `overlapBelow`). */
  private heavy = false;
  private stopped = false;
  private idle: (() => void)[] = [];

  constructor(config: KafkaConfig, options: TransactionalOptions = {}) {
    const base = options.transactionalId ?? `kitsune-${hostname()}-${process.pid}-${++instances}`;
    const n = Math.max(1, options.lanes ?? DEFAULT_LANES);
    this.maxGroup = options.maxGroup ?? 500;
    this.overlapBelow = options.overlapBelow ?? 16;
    this.lanes = Array.from({ length: n }, (_, i) => new TxnLane(config, options, n === 1 ? base : `${base}-${i}`));
  }

  /** Resolves once every lane has its transactional id registered with the coordinator. */
  async init(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.init()));
  }

  /** A fatal error that made a lane unusable (the process should be restarted). */
  get fatalError(): KafkaError | undefined {
    return this.lanes.find((l) => l.fatalError)?.fatalError;
  }

  get connected(): boolean | undefined {
    return this.lanes[0]!.connected;
  }

  get stats(): Record<string, any> | undefined {
    return this.lanes[0]!.stats;
  }

  /** Transactions committed and aborted so far, over all lanes. */
  get committed(): number {
    return this.lanes.reduce((n, l) => n + l.committed, 0);
  }

  get aborted(): number {
    return this.lanes.reduce((n, l) => n + l.aborted, 0);
  }

  /** Transactions running now (at most one per lane). */
  get running(): number {
    return this.busy.size;
  }

  sendAll(messages: OutgoingMessage[]): Promise<DeliveryReport[]> {
    if (this.stopped) return Promise.reject(closedError());
    const broken = this.fatalError;
    if (broken) return Promise.reject(broken);
    return new Promise((resolve, reject) => {
      this.queue.push({ messages, resolve, reject });
      this.dispatch();
    });
  }

  send(message: OutgoingMessage): Promise<DeliveryReport> {
    return this.sendAll([message]).then((r) => r[0]!);
  }

  /**
   * Some lane is in a transaction that began less than `STALLED_MS` ago. NOTE: a lane that takes
   * longer (an abort retried against an unreachable broker) must not hold the others back.
   */
  private committing(): boolean {
    const now = performance.now();
    for (const l of this.busy) if (now - l.runningSince < STALLED_MS) return true;
    return false;
  }

  /** Starts queued groups on free lanes, the one idle longest first. */
  private dispatch(): void {
    while (this.queue.length > 0) {
      let lane: TxnLane | undefined;
      for (const l of this.lanes) if (!this.busy.has(l) && (!lane || l.idleSince < lane.idleSince)) lane = l;
      if (!lane || (this.heavy && this.committing())) return;
      const group = this.queue.splice(0, this.maxGroup);
      this.busy.add(lane);
      const chosen = lane;
      void chosen.run(group).finally(() => {
        this.busy.delete(chosen);
        this.heavy = this.queue.length >= this.overlapBelow;
        if (this.busy.size === 0 && this.queue.length === 0) for (const w of this.idle.splice(0)) w();
        this.dispatch();
      });
    }
  }

  /** Waits for queued and running transactions, then frees every lane. Idempotent. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.stopped = true;
    if (this.busy.size > 0 || this.queue.length > 0) {
      await Promise.race([new Promise<void>((r) => this.idle.push(r)), Bun.sleep(timeoutMs)]);
    }
    for (const r of this.queue.splice(0)) r.reject(new KafkaError(ERR.DESTROY, "producer closed", { retriable: true }));
    await Promise.all(this.lanes.map((l) => l.close(timeoutMs)));
  }
}
