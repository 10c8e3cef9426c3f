/**
 * @module api/request
 * Parsing the `POST /execute` envelope: `ExecuteRequestSchema` (valibot) decides, but a body that
 * is plainly valid takes a hand-written path that returns exactly what the schema would.
 *
 * NOTE: the fast path only ever *accepts* — anything unusual (an unknown key, surrounding spaces
 * where the schema trims, a `__proto__` field, a wrong type) returns undefined and valibot runs,
 * with its error messages. It accepts a subset of what the schema accepts, with identical output;
 * request.test.ts checks that on thousands of generated bodies. It exists because valibot's
 * envelope parse was the largest single cost of POST /execute under load (bench/api.ts).
 *
 * @example
 * ```ts
 * const parsed = parseExecuteRequest(body); // { success: true, output } or valibot's { success: false, issues }
 * ```
 */
import * as v from "valibot";
import { ExecuteRequestSchema, IDEMPOTENCY_KEY_MAX, LOG_LEVELS, type ExecuteRequest } from "../contracts.ts";

type Parsed = { success: true; output: ExecuteRequest } | { success: false; issues: [v.BaseIssue<unknown>, ...v.BaseIssue<unknown>[]] };

/** Every issue, not only the first: the 422 lists all of them. */
const ALL_ISSUES = { abortEarly: false } as const;

export function parseExecuteRequest(body: unknown): Parsed {
  const output = fastExecuteRequest(body);
  if (output) return { success: true, output };
  const parsed = v.safeParse(ExecuteRequestSchema, body, ALL_ISSUES);
  return parsed.success ? { success: true, output: parsed.output } : { success: false, issues: parsed.issues };
}

const TOP_KEYS = new Set(["command", "version", "payload", "log", "metadata"]);
const LOG_KEYS = new Set(["level", "message"]);
const LEVELS = new Set<string>(LOG_LEVELS);
const COMMAND = /^[a-z][a-z0-9_]*$/;
const VERSION = /^[1-9][0-9]{0,8}$/;

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && Object.getPrototypeOf(value) === Object.prototype;

/** `v.pipe(v.string(), v.trim(), v.nonEmpty(), v.maxLength(max))`, or undefined. */
function trimmedName(value: unknown, max: number): string | undefined {
  if (typeof value !== "string") return undefined;
  const trimmed = value.trim();
  return trimmed.length > 0 && trimmed.length <= max ? trimmed : undefined;
}

/** `ExecuteRequestSchema`'s output for a plainly valid body; undefined means "ask valibot". */
export function fastExecuteRequest(body: unknown): ExecuteRequest | undefined {
  if (!isPlainObject(body)) return undefined;
  for (const key in body) if (!TOP_KEYS.has(key)) return undefined;

  const { command, version, payload, log, metadata } = body;
  // The pattern admits no whitespace, so the schema's trim changes nothing.
  if (typeof command !== "string" || command.length > 128 || !COMMAND.test(command)) return undefined;

  let outVersion: string | undefined;
  if ("version" in body) {
    if (typeof version === "string") outVersion = version;
    else if (typeof version === "number" && Number.isInteger(version)) outVersion = String(version);
    else return undefined;
    if (!VERSION.test(outVersion)) return undefined;
  }

  // valibot's record() leaves out these keys silently; let it decide what such a payload means.
  if (!isPlainObject(payload) || Object.hasOwn(payload, "__proto__") || Object.hasOwn(payload, "prototype") || Object.hasOwn(payload, "constructor")) {
    return undefined;
  }

  let outLog: ExecuteRequest["log"];
  if ("log" in body) {
    if (!isPlainObject(log)) return undefined;
    for (const key in log) if (!LOG_KEYS.has(key)) return undefined;
    const { level = "INFO", message } = log;
    if (typeof message !== "string" || message.length > 8192 || typeof level !== "string") return undefined;
    const upper = level.toUpperCase();
    if (!LEVELS.has(upper)) return undefined;
    outLog = { level: upper as (typeof LOG_LEVELS)[number], message };
  }

  let outMetadata: ExecuteRequest["metadata"];
  if ("metadata" in body) {
    // A plain object schema: other keys are allowed and left out of the output.
    if (!isPlainObject(metadata)) return undefined;
    outMetadata = {};
    if ("idempotency_key" in metadata) {
      const key = trimmedName(metadata.idempotency_key, IDEMPOTENCY_KEY_MAX);
      if (key === undefined) return undefined;
      outMetadata.idempotency_key = key;
    }
    if ("source" in metadata) {
      const source = trimmedName(metadata.source, 128);
      if (source === undefined) return undefined;
      outMetadata.source = source;
    }
  }

  // Keys in the schema's order, present only when the input has them: as valibot builds it.
  const out: ExecuteRequest = { command } as ExecuteRequest;
  if (outVersion !== undefined) out.version = outVersion;
  // NOTE: valibot's record() would copy the payload; nothing mutates it, so the parsed object serves.
  out.payload = payload;
  if (outLog !== undefined) out.log = outLog;
  if (outMetadata !== undefined) out.metadata = outMetadata;
  return out;
}
