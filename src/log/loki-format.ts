/**
 * @module log/loki-format
 * How a `LogEvent` looks in Loki, and the bytes of a push request. Pure: no I/O.
 *
 * - Stream labels are low-cardinality only: `service="kitsune"`, `level` (lower-case), `source`,
 *   `command`. Ids never become labels (every id would be a new stream).
 * - The line is JSON (`level`, `message`, `command`, `id`, `idempotency_key`) so LogQL `| json` works.
 * - The timestamp is the event's own, converted exactly to unix nanoseconds.
 *
 * The log-worker and the throughput benchmark ("floor": the same batches posted straight to Loki)
 * both build their requests with `toLokiEntry` + `encodePush`.
 *
 * @example
 * const { body, headers } = encodePush(events.map(toLokiEntry));
 * await fetch(`${url}${LOKI_PUSH_PATH}`, { method: "POST", body, headers: { ...headers, ...lokiAuthHeaders({ tenant }) } });
 */
import type { LogEvent } from "../contracts.ts";

export const LOKI_PUSH_PATH = "/loki/api/v1/push";
export const LOKI_READY_PATH = "/ready";

/** The `service` label of every stream Kitsune writes. */
export const SERVICE_LABEL = "kitsune";

export type LokiLabels = Record<string, string>;

/** One log line on its way to Loki. */
export interface LokiEntry {
  labels: LokiLabels;
  /** Unix time in nanoseconds, as a decimal string (Loki's wire format). */
  ts: string;
  line: string;
}

export interface LokiStream {
  stream: LokiLabels;
  values: [ts: string, line: string][];
}

/** Body of `POST /loki/api/v1/push` (JSON flavour). */
export interface LokiPushRequest {
  streams: LokiStream[];
}

// NOTE: the fraction is kept as digits, never as a float — `Date.parse` would round to milliseconds
// and a float of nanoseconds since 1970 loses precision (2^53 ns is ~104 days). Exact timestamps
// matter beyond tidiness: Loki treats an entry with the same stream, timestamp and line as a
// duplicate, which makes re-pushing a batch after a retry or a split harmless.
const ISO_DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?([Zz]|([+-])(\d{2}):?(\d{2}))$/;

/**
 * ISO 8601 / RFC 3339 date-time with an offset → unix nanoseconds as a decimal string, exactly
 * (digits past the ninth are dropped). `undefined` when the text is not such a date-time.
 *
 * @example isoToUnixNanos("2024-05-01T12:00:00.123456789+02:00") // "1714557600123456789"
 */
export function isoToUnixNanos(iso: string): string | undefined {
  const fast = sameSecondUtc(iso);
  if (fast !== undefined) return fast;
  const m = ISO_DATE_TIME.exec(iso);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6]);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 || minute > 59 || second > 60) {
    return undefined;
  }
  let seconds = daysFromCivil(year, month, day) * 86_400 + (hour * 60 + minute) * 60 + second;
  if (m[9]) {
    const offsetHours = Number(m[10]);
    const offsetMins = Number(m[11]);
    if (offsetHours > 23 || offsetMins > 59) return undefined;
    seconds -= (m[9] === "-" ? -1 : 1) * (offsetHours * 60 + offsetMins) * 60;
  }
  const digits = m[7] ?? "";
  const fraction = nineDigits(digits);
  // Whole seconds followed by the nine fraction digits: exact without BigInt, which costs more than
  // the rest of this function. At or before 1970 BigInt does the arithmetic.
  if (seconds > 0) {
    if (!m[9] && m[8] === "Z" && iso.charCodeAt(10) === 84 /* T */) lastSecond = { prefix: iso.slice(0, 19), seconds };
    return `${seconds}${fraction}`;
  }
  return (BigInt(seconds) * 1_000_000_000n + BigInt(fraction)).toString();
}

/** The last UTC `YYYY-MM-DDTHH:MM:SS` converted, and its unix seconds. */
let lastSecond = { prefix: "", seconds: 0 };

/**
 * Lines come in bursts within one second: `<the last prefix>Z` or `<the last prefix>.<digits>Z`
 * skips the regular expression and the calendar (~220 → ~60 ns a line). `undefined` otherwise.
 */
function sameSecondUtc(iso: string): string | undefined {
  const n = iso.length;
  if (n < 20 || iso.charCodeAt(n - 1) !== 90 /* Z */ || lastSecond.prefix === "" || !iso.startsWith(lastSecond.prefix)) return undefined;
  if (n === 20) return `${lastSecond.seconds}${NINE_ZEROS}`;
  if (iso.charCodeAt(19) !== 46 /* . */ || n === 21) return undefined;
  for (let i = 20; i < n - 1; i++) {
    const c = iso.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  return `${lastSecond.seconds}${nineDigits(iso.slice(20, n - 1))}`;
}

const NINE_ZEROS = "000000000";

/** A fraction of a second's digits as exactly nine (nanoseconds): padded, or cut past the ninth. */
function nineDigits(digits: string): string {
  return digits.length >= 9 ? digits.slice(0, 9) : digits + NINE_ZEROS.slice(digits.length);
}

function daysInMonth(year: number, month: number): number {
  if (month !== 2) return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
}

/**
 * Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`). Plain
 * arithmetic: a `Date` per line cost more than the rest of the conversion, and `Date.UTC` maps
 * years 0-99 to 1900-1999.
 */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

// Loki refuses label values over 2048 bytes (max_label_value_length); 512 UTF-16 units stay under
// that in UTF-8. The api already limits command and source to 128 characters: this is a guard for
// events written by something else.
const MAX_LABEL_VALUE = 512;

function labelValue(raw: string): string {
  const s = raw.trim();
  // An empty value means "no such label" in Loki's (Prometheus') label model: keep the set uniform.
  if (s === "") return "unknown";
  if (s.length <= MAX_LABEL_VALUE) return s;
  const cut = /[\uD800-\uDBFF]/.test(s[MAX_LABEL_VALUE - 1] ?? "") ? MAX_LABEL_VALUE - 1 : MAX_LABEL_VALUE;
  return s.slice(0, cut);
}

/** Label sets handed out so far, by the event's raw level, source and command. */
let interned = new Map<string, Map<string, Map<string, LokiLabels>>>();
let internedCount = 0;
/** Far above any sane label cardinality; only an abusive producer fills it, and then it restarts. */
const MAX_INTERNED = 10_000;

/**
 * Stream labels of an event: never ids, only values with few distinct values. Equal label sets
 * are the same frozen object, which lets `buildPushRequest` group lines without building a key
 * per line (and saves normalising the same values for every line).
 */
export function toLokiLabels(event: LogEvent): LokiLabels {
  const bySource = interned.get(event.level);
  const byCommand = bySource?.get(event.source);
  const cached = byCommand?.get(event.command);
  if (cached) return cached;
  if (internedCount >= MAX_INTERNED) {
    interned = new Map();
    internedCount = 0;
  }
  const labels: LokiLabels = Object.freeze({
    service: SERVICE_LABEL,
    level: event.level.toLowerCase(),
    source: labelValue(event.source),
    command: labelValue(event.command),
  });
  let sources = interned.get(event.level);
  if (!sources) interned.set(event.level, (sources = new Map()));
  let commands = sources.get(event.source);
  if (!commands) sources.set(event.source, (commands = new Map()));
  commands.set(event.command, labels);
  internedCount++;
  return labels;
}

/** The log line: JSON, so `{service="kitsune"} | json | id="…"` finds one command's lines. */
export function toLokiLine(event: LogEvent): string {
  return JSON.stringify({
    level: event.level.toLowerCase(),
    message: event.message,
    command: event.command,
    id: event.id,
    idempotency_key: event.idempotency_key,
  });
}

/** Throws a `RangeError` when the event's timestamp is not an ISO 8601 date-time with an offset. */
export function toLokiEntry(event: LogEvent): LokiEntry {
  const ts = isoToUnixNanos(event.timestamp);
  if (ts === undefined) {
    throw new RangeError(`timestamp ${JSON.stringify(event.timestamp)} is not an ISO 8601 date-time with an offset`);
  }
  return { labels: toLokiLabels(event), ts, line: toLokiLine(event) };
}

/** Compares two nanosecond strings numerically without BigInt in the common (non-negative) case. */
export function compareNanos(a: string, b: string): number {
  const negA = a.startsWith("-");
  const negB = b.startsWith("-");
  if (!negA && !negB) return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
  const d = BigInt(a) - BigInt(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/** A stable key for a label set, independent of the order of its names. */
export function streamKey(labels: LokiLabels): string {
  let key = "";
  // Length-prefixed rather than escaped: unambiguous for any value, and cheap per line.
  for (const name of Object.keys(labels).sort()) {
    const value = labels[name]!;
    key += `${name.length}:${name}${value.length}:${value}`;
  }
  return key;
}

/** Groups entries into one stream per label set, values sorted by time (stable for equal times). */
export function buildPushRequest(entries: readonly LokiEntry[]): LokiPushRequest {
  const byKey = new Map<string, LokiStream>();
  // Entries from `toLokiEntry` share label objects: one key per distinct object, not per entry.
  const byObject = new Map<LokiLabels, LokiStream>();
  for (const e of entries) {
    let stream = byObject.get(e.labels);
    if (!stream) {
      const key = streamKey(e.labels);
      stream = byKey.get(key);
      if (!stream) byKey.set(key, (stream = { stream: e.labels, values: [] }));
      byObject.set(e.labels, stream);
    }
    stream.values.push([e.ts, e.line]);
  }
  for (const s of byKey.values()) if (!isSorted(s.values)) s.values.sort((a, b) => compareNanos(a[0], b[0]));
  return { streams: [...byKey.values()] };
}

/** Lines of one partition mostly arrive in time order already; checking is cheaper than sorting. */
function isSorted(values: LokiStream["values"]): boolean {
  for (let i = 1; i < values.length; i++) if (compareNanos(values[i - 1]![0], values[i]![0]) > 0) return false;
  return true;
}

/**
 * NOTE: level 1, not 6: on Kitsune's lines libdeflate's level 1 compresses ~11:1 against ~12:1 at
 * level 6, in less than half the time (bench/log-worker.ts prints both) — and compression is the
 * costliest step of a push on the worker's one JavaScript thread.
 */
export const DEFAULT_GZIP_LEVEL = 1;

export interface EncodeOptions {
  /** libdeflate level 0-12; 0 sends the JSON uncompressed. Default `DEFAULT_GZIP_LEVEL`. */
  gzipLevel?: number;
}

export interface EncodedPush {
  body: Uint8Array<ArrayBuffer>;
  /** `content-type`, and `content-encoding` when compressed. */
  headers: Record<string, string>;
  /** Size of the JSON before compression. */
  jsonBytes: number;
}

/** The exact body and content headers of a push request for these entries. */
export function encodePush(entries: readonly LokiEntry[], { gzipLevel = DEFAULT_GZIP_LEVEL }: EncodeOptions = {}): EncodedPush {
  const json = JSON.stringify(buildPushRequest(entries));
  if (gzipLevel <= 0) {
    const body = new TextEncoder().encode(json);
    return { body, headers: { "content-type": "application/json" }, jsonBytes: body.byteLength };
  }
  const level = Math.min(12, Math.round(gzipLevel)) as 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12;
  return {
    // gzipSync takes the string and encodes it as UTF-8 itself (one copy fewer).
    body: Bun.gzipSync(json, { library: "libdeflate", level }),
    headers: { "content-type": "application/json", "content-encoding": "gzip" },
    jsonBytes: Buffer.byteLength(json),
  };
}

export interface LokiAuth {
  /** Sent as `X-Scope-OrgID` (multi-tenant Loki). */
  tenant?: string;
  /** Basic auth, sent when a username is set (Grafana Cloud: instance id + token). */
  username?: string;
  password?: string;
}

/** Tenant and authorization headers for any request to Loki. */
export function lokiAuthHeaders({ tenant, username, password }: LokiAuth): Record<string, string> {
  const headers: Record<string, string> = {};
  if (tenant) headers["x-scope-orgid"] = tenant;
  if (username !== undefined) {
    headers.authorization = `Basic ${Buffer.from(`${username}:${password ?? ""}`).toString("base64")}`;
  }
  return headers;
}
