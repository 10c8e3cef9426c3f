/**
 * @module log/loki-sink
 * The Loki adapter: one push request per call, its outcome classified for the shipper.
 * It never retries by itself — retry, split and dead-letter decisions live in `ship.ts`.
 *
 * @example
 * const sink = createLokiSink({ url: "http://localhost:3100", tenant: "kitsune", timeoutMs: 10_000 });
 * const result = await sink.push(entries);
 * if (result.kind === "retriable") await sleep(result.retryAfterMs ?? 1000);
 */
import {
  DEFAULT_GZIP_LEVEL,
  encodePush,
  LOKI_PUSH_PATH,
  LOKI_READY_PATH,
  lokiAuthHeaders,
  type LokiAuth,
  type LokiEntry,
} from "./loki-format.ts";

/** What the sink needs of `fetch`; tests and benchmarks may pass their own. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface LokiSinkOptions extends LokiAuth {
  /** Base URL, e.g. `http://localhost:3100` (a trailing slash is fine). */
  url: string;
  fetch?: FetchLike;
  /** Per request, including reading the answer. Default 10 s. */
  timeoutMs?: number;
  /** See `encodePush`. Default `DEFAULT_GZIP_LEVEL`. */
  gzipLevel?: number;
}

export type PushResult =
  /** Loki holds every entry (2xx). */
  | { kind: "ok"; status: number; bodyBytes: number; jsonBytes: number }
  /** Nothing learned about the entries; the same push may succeed later (429, 5xx, network, timeout, auth). */
  | {
      kind: "retriable";
      /** For metrics and logs: the HTTP status, or `network` / `timeout`. */
      cause: string;
      reason: string;
      status?: number;
      /** From `Retry-After`, when Loki (or a proxy) sent one. */
      retryAfterMs?: number;
    }
  /**
   * Loki refused at least one entry (400, 413, 422). NOTE: Loki stores the valid entries of a
   * request it answers 400 to; pushing them again is harmless (identical entries are deduplicated).
   */
  | { kind: "rejected"; status: number; reason: string };

export interface LokiSink {
  /**
   * One push request. Resolves with the classified outcome; rejects only when `signal` aborts
   * (with the signal's reason) — a timeout is a `retriable` result, not a rejection.
   */
  push(entries: readonly LokiEntry[], options?: { signal?: AbortSignal }): Promise<PushResult>;
  /** `GET /ready`; `detail` is "ok" or why not. */
  ready(options?: { signal?: AbortSignal }): Promise<{ ok: boolean; detail: string }>;
}

const MAX_REASON = 2048;

// NOTE: 400/413/422 describe the request itself; anything else (401/403/404 included) is treated as
// retriable: a wrong password or URL is fixed by an operator, and until then the worker keeps its
// partitions paused instead of dead-lettering every log line.
const REJECTED = new Set([400, 413, 422]);

export function createLokiSink({
  url,
  tenant,
  username,
  password,
  fetch: doFetch = fetch,
  timeoutMs = 10_000,
  gzipLevel = DEFAULT_GZIP_LEVEL,
}: LokiSinkOptions): LokiSink {
  const base = url.replace(/\/+$/, "");
  const auth = lokiAuthHeaders({ tenant, username, password });

  type Answer = { res: Response; text: string } | { error: "timeout" | "network"; reason: string };

  async function request(path: string, init: RequestInit, signal?: AbortSignal): Promise<Answer> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      const res = await doFetch(`${base}${path}`, { ...init, signal: combined });
      // Read the whole answer under the same deadline; it also frees the connection for reuse.
      const text = await res.text();
      return { res, text };
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (timeout.aborted) return { error: "timeout", reason: `no answer from Loki within ${timeoutMs} ms` };
      return { error: "network", reason: `network error: ${(err as Error)?.message ?? String(err)}` };
    }
  }

  return {
    async push(entries, options = {}) {
      const { body, headers, jsonBytes } = encodePush(entries, { gzipLevel });
      const r = await request(
        LOKI_PUSH_PATH,
        { method: "POST", body, headers: { ...headers, ...auth } },
        options.signal,
      );
      if ("error" in r) return { kind: "retriable", cause: r.error, reason: r.reason };
      const { res, text } = r;
      if (res.ok) return { kind: "ok", status: res.status, bodyBytes: body.byteLength, jsonBytes };
      const reason = describe(res.status, text);
      if (REJECTED.has(res.status)) return { kind: "rejected", status: res.status, reason };
      const retryAfterMs = parseRetryAfter(res.headers.get("retry-after"));
      return {
        kind: "retriable",
        cause: String(res.status),
        reason,
        status: res.status,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      };
    },

    async ready(options = {}) {
      const r = await request(LOKI_READY_PATH, { method: "GET", headers: auth }, options.signal);
      if ("error" in r) return { ok: false, detail: r.reason };
      return r.res.ok ? { ok: true, detail: "ok" } : { ok: false, detail: describe(r.res.status, r.text) };
    },
  };
}

function describe(status: number, text: string): string {
  const body = text.trim();
  const reason = body ? `HTTP ${status}: ${body}` : `HTTP ${status}`;
  return reason.length > MAX_REASON ? `${reason.slice(0, MAX_REASON - 1)}…` : reason;
}

/** `Retry-After` as delay-seconds or an HTTP date → milliseconds from now. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
