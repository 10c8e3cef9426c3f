/**
 * @module bench/lib/results-topic
 * Reads a run's `db-results` topic from the start and counts the `CommandResult` statuses. A
 * `duplicate` is a delivery the idempotency log turned away: the proof that a disruption really
 * made the db-worker see commands a second time.
 *
 * @example
 * const { byStatus } = await readResults(box.brokers, box.topics.results, expected);
 */
import { Consumer } from "../../src/kafka/consumer.ts";

export interface ResultsCount {
  messages: number;
  byStatus: Record<string, number>;
}

/** Consumes `topic` from the beginning until `expected` messages were read or nothing came for `idleMs`. */
export async function readResults(brokers: string, topic: string, expected: number, { idleMs = 5000, timeoutMs = 60_000 } = {}): Promise<ResultsCount> {
  const consumer = new Consumer({
    "bootstrap.servers": brokers,
    "group.id": `${topic}.bench-reader-${crypto.randomUUID().slice(0, 8)}`,
    "auto.offset.reset": "earliest",
  });
  consumer.subscribe([topic]);
  const decoder = new TextDecoder();
  const byStatus: Record<string, number> = {};
  let messages = 0;
  let last = Date.now();
  const started = Date.now();
  const watchdog = setInterval(() => {
    if ((messages >= expected && Date.now() - last > 500) || Date.now() - last > idleMs || Date.now() - started > timeoutMs) void consumer.close(5000);
  }, 200);
  try {
    for await (const batch of consumer.batches({ maxMessages: 5000, maxWaitMs: 100 })) {
      for (const m of batch) {
        messages++;
        let status = "unreadable";
        try {
          status = (JSON.parse(decoder.decode(m.value ?? new Uint8Array())) as { status?: string }).status ?? "unreadable";
        } catch {}
        byStatus[status] = (byStatus[status] ?? 0) + 1;
      }
      last = Date.now();
    }
  } finally {
    clearInterval(watchdog);
    await consumer.close(5000).catch(() => {});
  }
  return { messages, byStatus };
}
