/**
 * @module log/stdout-sink
 * A `LokiSink` that writes each line to a stream (stdout) instead of pushing it to Loki: what the
 * log-worker uses in dev mode when `LOKI_URL` is unset. One readable line per entry:
 * `app-logs 2026-12-03T14:55:01.123Z INFO  user-service create_user  User registration triggered  id=…`.
 */
import type { LokiEntry } from "./loki-format.ts";
import type { LokiSink, PushResult } from "./loki-sink.ts";

export interface TextOut {
  write(text: string): unknown;
}

/** One entry as a line a person reads; the JSON line Loki would store is parsed back for it. */
export function formatEntry({ labels, ts, line }: LokiEntry): string {
  const millis = Number(BigInt(ts) / 1_000_000n);
  let fields: Record<string, unknown> = {};
  try {
    fields = JSON.parse(line) as Record<string, unknown>;
  } catch {
    fields = { message: line };
  }
  const level = String(fields.level ?? labels.level ?? "info").toUpperCase().padEnd(5);
  const source = labels.source ?? "-";
  const command = String(fields.command ?? labels.command ?? "-");
  return `app-logs ${new Date(millis).toISOString()} ${level} ${source} ${command}  ${String(fields.message ?? "")}  id=${String(fields.id ?? "-")}`;
}

export function createStdoutSink(out: TextOut = process.stdout): LokiSink {
  const bytes = (s: string) => Buffer.byteLength(s);
  return {
    async push(entries: readonly LokiEntry[]): Promise<PushResult> {
      const text = entries.map(formatEntry).join("\n") + "\n";
      out.write(text);
      return { kind: "ok", status: 200, bodyBytes: bytes(text), jsonBytes: bytes(text) };
    },
    async ready() {
      return { ok: true, detail: "ok (lines to stdout)" };
    },
  };
}
