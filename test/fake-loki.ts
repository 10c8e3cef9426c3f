/**
 * @module test/fake-loki
 * A small local Loki for tests and the benchmark: `POST /loki/api/v1/push` (JSON, plain or gzip)
 * and `GET /ready`, validated the way Loki validates them, with failures on demand.
 *
 * Like Loki it stores the valid entries of a request even when it refuses others (answering 400
 * with one line per refused entry), and it keeps an entry with the same stream, timestamp and line
 * only once (`counters.duplicates` counts the repeats).
 *
 * Run on its own (`bun test/fake-loki.ts [--port N] [--no-store]`) it prints `{"url": …}` as its
 * first line and serves `GET /fake/counters` (the counters as JSON): the benchmark's receiver,
 * in a process of its own so that it does not share a CPU thread with what it measures.
 *
 * @example
 * const loki = startFakeLoki({ tenant: "t1" });
 * loki.failNext(429, 2);                                  // the next two pushes answer 429
 * loki.rejectWhen((e) => e.line.includes("old") && "timestamp too old");
 * // … push …
 * expect(loki.entries.map((e) => e.line)).toEqual([...]);
 * await loki.stop();
 */

export interface ReceivedEntry {
  labels: Record<string, string>;
  /** Unix nanoseconds, as sent. */
  ts: string;
  line: string;
  /** Structured metadata (third element of a value), when sent. */
  metadata?: Record<string, string>;
}

export interface ReceivedRequest {
  method: string;
  path: string;
  /** Lower-case names. */
  headers: Record<string, string>;
  gzip: boolean;
  /** Bytes on the wire (compressed when gzip). */
  bodyBytes: number;
  /** Entries in the request (0 when the body was invalid or the request was failed on demand). */
  entries: number;
  status: number;
}

/** Returns the reason to refuse an entry, or a falsy value to accept it. */
export type Rejecter = (entry: ReceivedEntry) => string | false | null | undefined;

export interface FakeLokiOptions {
  /** When set, pushes must carry this `X-Scope-OrgID` (401 otherwise, like Loki with auth). */
  tenant?: string;
  /** When set, pushes must carry this basic auth (401 otherwise, like a gateway in front of Loki). */
  auth?: { username: string; password: string };
  /** Keep every request in `requests` (default true; the benchmark may turn it off). */
  recordRequests?: boolean;
  /**
   * Keep the entries (default true). When false only the counters move: no `entries`, and no
   * duplicate detection (every valid entry counts as accepted) — the benchmark's counting mode.
   */
  store?: boolean;
  /** Port to listen on (default: any free one). */
  port?: number;
}

export interface FakeLokiCounters {
  /** Every HTTP request, any path. */
  requests: number;
  /** Push requests answered 204. */
  pushesOk: number;
  /** Push requests answered 400 because some entries were refused by `rejectWhen`. */
  pushesRejected: number;
  /** Push requests answered 400/401 because the request itself was invalid or unauthorized. */
  pushesInvalid: number;
  /** Push requests failed on demand (`failNext`). */
  pushesFailed: number;
  /** Entries stored. */
  accepted: number;
  /** Entries refused by `rejectWhen`. */
  refused: number;
  /** Entries that repeated a stored one (same labels, timestamp and line) and were not stored again. */
  duplicates: number;
  /** Uncompressed bytes of stored lines. */
  bytes: number;
  /** Requests delayed by `delayNext` whose client went away meanwhile: dropped unhandled (499). */
  abandoned: number;
}

export interface FakeLoki {
  readonly url: string;
  readonly port: number;
  /** Stored entries in arrival order. */
  readonly entries: ReceivedEntry[];
  readonly requests: ReceivedRequest[];
  readonly counters: FakeLokiCounters;
  /** The next `count` pushes answer `status` without storing anything. */
  failNext(status: number, count?: number, options?: { retryAfter?: string; body?: string }): void;
  /** The next `count` requests wait `ms` before being handled (nothing is stored meanwhile). */
  delayNext(ms: number, count?: number): void;
  /**
   * The next `count` pushes are handled (their entries stored) at once, but answered only after
   * `ms`: the window between "Loki has the lines" and "the client knows it".
   */
  delayAnswerNext(ms: number, count?: number): void;
  /**
   * Every push stored from now on is answered only once `hook(n)` resolves (n = 1 for the first
   * such push): the test decides when each answer goes out, e.g. to hold the second push of a
   * batch while answering the first. `undefined` stops holding pushes that come after.
   */
  holdAnswers(hook: ((n: number) => Promise<unknown>) | undefined): void;
  /** Resolves once `counters[name]` reaches `value` (polling; rejects after `timeoutMs`, default 30 s). */
  waitFor(name: keyof FakeLokiCounters, value: number, timeoutMs?: number): Promise<void>;
  /** Refuse entries the predicate names a reason for; `undefined` stops refusing. */
  rejectWhen(predicate: Rejecter | undefined): void;
  /** What `GET /ready` answers (default true → 200 "ready"; false → 503). */
  setReady(ready: boolean): void;
  /** Forget entries, requests, counters and pending failures. */
  reset(): void;
  stop(): Promise<void>;
}

const PUSH_PATH = "/loki/api/v1/push";
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

class BadRequest extends Error {}

function emptyCounters(): FakeLokiCounters {
  return { requests: 0, pushesOk: 0, pushesRejected: 0, pushesInvalid: 0, pushesFailed: 0, accepted: 0, refused: 0, duplicates: 0, bytes: 0, abandoned: 0 };
}

/** Prometheus-style `{a="x", b="y"}`, names sorted, as Loki prints a stream. */
export function formatLabels(labels: Record<string, string>): string {
  return `{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(", ")}}`;
}

function isStringRecord(x: unknown): x is Record<string, string> {
  return typeof x === "object" && x !== null && !Array.isArray(x) && Object.values(x).every((v) => typeof v === "string");
}

/** Parses a push body the way Loki's JSON decoder and distributor validation would; throws `BadRequest`. */
function parsePush(json: unknown): ReceivedEntry[] {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new BadRequest("push request must be a JSON object");
  const streams = (json as { streams?: unknown }).streams;
  if (streams === undefined || streams === null) return [];
  if (!Array.isArray(streams)) throw new BadRequest("streams must be an array");
  const out: ReceivedEntry[] = [];
  streams.forEach((s, i) => {
    if (typeof s !== "object" || s === null || Array.isArray(s)) throw new BadRequest(`streams[${i}] must be an object`);
    const { stream, values } = s as { stream?: unknown; values?: unknown };
    const labels = stream ?? {};
    if (!isStringRecord(labels)) throw new BadRequest(`streams[${i}].stream must be an object of string label values`);
    const names = Object.keys(labels);
    if (names.length === 0) throw new BadRequest("error at least one label pair is required per stream");
    for (const name of names) {
      if (!LABEL_NAME.test(name)) throw new BadRequest(`error parsing labels: invalid label name ${JSON.stringify(name)}`);
    }
    if (values === undefined || values === null) return;
    if (!Array.isArray(values)) throw new BadRequest(`streams[${i}].values must be an array`);
    values.forEach((value, j) => {
      const where = `streams[${i}].values[${j}]`;
      if (!Array.isArray(value) || value.length < 2 || value.length > 3) {
        throw new BadRequest(`${where}: an entry must be [ "<unix ns>", "<line>" ] with optional structured metadata`);
      }
      const [ts, line, metadata] = value as unknown[];
      if (typeof ts !== "string" || !/^[+-]?\d+$/.test(ts)) throw new BadRequest(`${where}: error reading entry timestamp: ${JSON.stringify(ts)}`);
      const n = BigInt(ts);
      if (n < INT64_MIN || n > INT64_MAX) throw new BadRequest(`${where}: error reading entry timestamp: value out of range`);
      if (typeof line !== "string") throw new BadRequest(`${where}: the line must be a string`);
      if (metadata !== undefined && !isStringRecord(metadata)) throw new BadRequest(`${where}: structured metadata must be an object of strings`);
      out.push({ labels, ts: n.toString(), line, ...(metadata === undefined ? {} : { metadata }) });
    });
  });
  return out;
}

export function startFakeLoki({ tenant, auth, recordRequests = true, store = true, port = 0 }: FakeLokiOptions = {}): FakeLoki {
  const entries: ReceivedEntry[] = [];
  const requests: ReceivedRequest[] = [];
  let counters = emptyCounters();
  let seen = new Set<string>();
  let failures: { status: number; retryAfter?: string; body?: string }[] = [];
  let delays: number[] = [];
  let answerDelays: number[] = [];
  let answerHook: ((n: number) => Promise<unknown>) | undefined;
  let held = 0;
  let rejecter: Rejecter | undefined;
  let ready = true;
  const expectedAuth = auth ? `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}` : undefined;

  async function push(req: Request, record: ReceivedRequest): Promise<Response> {
    const text = (status: number, body: string, headers: Record<string, string> = {}) => {
      record.status = status;
      return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8", ...headers } });
    };
    const raw = new Uint8Array(await req.arrayBuffer());
    record.bodyBytes = raw.byteLength;

    if (expectedAuth && req.headers.get("authorization") !== expectedAuth) {
      counters.pushesInvalid++;
      return text(401, "Unauthorized\n", { "www-authenticate": 'Basic realm="loki"' });
    }
    if (tenant !== undefined && req.headers.get("x-scope-orgid") !== tenant) {
      counters.pushesInvalid++;
      return text(401, "no org id\n");
    }
    const failure = failures.shift();
    if (failure) {
      counters.pushesFailed++;
      const body = failure.body ?? (failure.status === 429 ? "Ingestion rate limit exceeded (fake-loki)\n" : `fake-loki: failing on demand\n`);
      return text(failure.status, body, failure.retryAfter === undefined ? {} : { "retry-after": failure.retryAfter });
    }

    let received: ReceivedEntry[];
    try {
      const encoding = (req.headers.get("content-encoding") ?? "").trim().toLowerCase();
      let body: Uint8Array;
      if (encoding === "") body = raw;
      else if (encoding === "gzip") {
        record.gzip = true;
        try {
          body = Bun.gunzipSync(raw);
        } catch (err) {
          throw new BadRequest(`gzip: invalid header: ${(err as Error).message}`);
        }
      } else throw new BadRequest(`Content-Encoding "${encoding}" not supported`);
      const type = (req.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      if (type !== "application/json") {
        // Loki reads anything but application/json as snappy-compressed protobuf.
        throw new BadRequest(`fake-loki speaks JSON only; content-type ${JSON.stringify(type)} would be read as snappy protobuf`);
      }
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(body));
      } catch (err) {
        throw new BadRequest(`loghttp.PushRequest: ${(err as Error).message}`);
      }
      received = parsePush(json);
    } catch (err) {
      if (!(err instanceof BadRequest)) throw err;
      counters.pushesInvalid++;
      return text(400, `${err.message}\n`);
    }
    record.entries = received.length;

    const refusals: string[] = [];
    for (const entry of received) {
      const reason = rejecter?.(entry);
      if (reason) {
        counters.refused++;
        refusals.push(`entry with timestamp ${entry.ts} for stream '${formatLabels(entry.labels)}' was refused: ${reason}`);
        continue;
      }
      if (!store) {
        counters.accepted++;
        counters.bytes += Buffer.byteLength(entry.line);
        continue;
      }
      const key = `${formatLabels(entry.labels)}\u0000${entry.ts}\u0000${entry.line}`;
      if (seen.has(key)) {
        counters.duplicates++;
        continue;
      }
      seen.add(key);
      entries.push(entry);
      counters.accepted++;
      counters.bytes += Buffer.byteLength(entry.line);
    }
    if (refusals.length > 0) {
      counters.pushesRejected++;
      return text(400, `${refusals.join("\n")}\ntotal ignored: ${refusals.length} out of ${received.length}\n`);
    }
    counters.pushesOk++;
    record.status = 204;
    const answerDelay = answerDelays.shift();
    if (answerDelay) await Bun.sleep(answerDelay);
    if (answerHook) await answerHook(++held);
    return new Response(null, { status: 204 });
  }

  const server = Bun.serve({
    port,
    hostname: "127.0.0.1",
    // A test may hold an answer back for a long while (delayAnswerNext).
    idleTimeout: 0,
    async fetch(req) {
      counters.requests++;
      const url = new URL(req.url);
      const delay = delays.shift();
      if (delay) {
        await Bun.sleep(delay);
        // The client gave up (timeout, abort): a real server might still ingest, but tests want
        // nothing to land after they have moved on.
        if (req.signal.aborted) {
          counters.abandoned++;
          return new Response(null, { status: 499 });
        }
      }
      if (url.pathname === "/ready") {
        return req.method === "GET" ? new Response(ready ? "ready\n" : "Ingester not ready\n", { status: ready ? 200 : 503 }) : new Response(null, { status: 405 });
      }
      if (url.pathname === "/fake/counters") return Response.json(counters);
      if (url.pathname !== PUSH_PATH) return new Response("404 page not found\n", { status: 404 });
      if (req.method !== "POST") return new Response(null, { status: 405 });
      const record: ReceivedRequest = {
        method: req.method,
        path: url.pathname,
        headers: Object.fromEntries(req.headers),
        gzip: false,
        bodyBytes: 0,
        entries: 0,
        status: 0,
      };
      if (recordRequests) requests.push(record);
      return push(req, record);
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}`,
    port: server.port!,
    entries,
    requests,
    get counters() {
      return counters;
    },
    failNext(status, count = 1, options = {}) {
      for (let i = 0; i < count; i++) failures.push({ status, ...options });
    },
    delayNext(ms, count = 1) {
      for (let i = 0; i < count; i++) delays.push(ms);
    },
    delayAnswerNext(ms, count = 1) {
      for (let i = 0; i < count; i++) answerDelays.push(ms);
    },
    holdAnswers(hook) {
      answerHook = hook;
      held = 0;
    },
    async waitFor(name, value, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (counters[name] < value) {
        if (Date.now() > deadline) throw new Error(`fake-loki: counters.${name} is ${counters[name]}, not ${value}, after ${timeoutMs} ms`);
        await Bun.sleep(10);
      }
    },
    rejectWhen(predicate) {
      rejecter = predicate;
    },
    setReady(value) {
      ready = value;
    },
    reset() {
      entries.length = 0;
      requests.length = 0;
      counters = emptyCounters();
      seen = new Set();
      failures = [];
      delays = [];
      answerDelays = [];
      answerHook = undefined;
      held = 0;
      rejecter = undefined;
      ready = true;
    },
    async stop() {
      await server.stop(true);
    },
  };
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const portArg = args.indexOf("--port");
  const loki = startFakeLoki({
    port: portArg >= 0 ? Number(args[portArg + 1]) : 0,
    store: !args.includes("--no-store"),
    recordRequests: false,
  });
  console.log(JSON.stringify({ url: loki.url }));
}
