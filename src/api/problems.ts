/**
 * @module api/problems
 * The api's one error vocabulary: a closed union of codes, each with its HTTP status and title,
 * and one RFC 9457 `application/problem+json` envelope (`ProblemSchema` in contracts.ts) for
 * every failure.
 *
 * @example
 * ```ts
 * throw new ApiError("unknown_command", 'no command "drop_table" is registered', {
 *   errors: [{ path: "command", message: "registered: create_user" }],
 * });
 * ```
 */
import type { Context } from "hono";
import * as v from "valibot";
import type { Problem } from "../contracts.ts";

export const PROBLEMS = {
  malformed_json: { status: 400, title: "Malformed JSON" },
  nesting_too_deep: { status: 400, title: "JSON nested too deeply" },
  unauthorized: { status: 401, title: "Unauthorized" },
  not_found: { status: 404, title: "Not found" },
  method_not_allowed: { status: 405, title: "Method not allowed" },
  payload_too_large: { status: 413, title: "Request body too large" },
  unsupported_media_type: { status: 415, title: "Unsupported media type" },
  invalid_request: { status: 422, title: "Invalid request" },
  unknown_command: { status: 422, title: "Unknown command" },
  unknown_version: { status: 422, title: "Unknown command version" },
  invalid_payload: { status: 422, title: "Payload does not match the command's parameters" },
  idempotency_key_conflict: { status: 422, title: "Conflicting idempotency keys" },
  internal: { status: 500, title: "Internal server error" },
  broker_unavailable: { status: 503, title: "Broker unavailable" },
  database_unavailable: { status: 503, title: "Database unavailable" },
} as const satisfies Record<string, { status: number; title: string }>;

export type ProblemCode = keyof typeof PROBLEMS;

export type FieldError = { path: string; message: string };

/** `type` of a problem: a stable URN per code, documented in /openapi.json. */
export const problemType = (code: ProblemCode) => `urn:kitsune:problem:${code}`;

export interface ApiErrorOptions {
  errors?: FieldError[];
  /** Response headers, e.g. `Retry-After`. */
  headers?: Record<string, string>;
  /** Extension members added to the body (RFC 9457 §3.2). */
  extensions?: Record<string, unknown>;
  cause?: unknown;
}

/** Thrown anywhere in a request; the app's error handler turns it into a problem response. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ProblemCode,
    readonly detail: string,
    readonly options: ApiErrorOptions = {},
  ) {
    super(detail, { cause: options.cause });
    this.name = "ApiError";
    this.status = PROBLEMS[code].status;
  }
}

/** The problem body; extension members come first so they can never replace a standard one. */
export function problemBody(err: ApiError, instance: string, requestId: string): Problem & Record<string, unknown> {
  const { status, title } = PROBLEMS[err.code];
  return {
    ...err.options.extensions,
    type: problemType(err.code),
    title,
    status,
    detail: err.detail,
    instance,
    request_id: requestId,
    code: err.code,
    ...(err.options.errors?.length ? { errors: err.options.errors } : {}),
  };
}

export function problemResponse(c: Context, err: ApiError, requestId: string): Response {
  const headers = new Headers(err.options.headers);
  headers.set("content-type", "application/problem+json");
  headers.set("x-request-id", requestId);
  return new Response(JSON.stringify(problemBody(err, c.req.path, requestId)), { status: err.status, headers });
}

const OBJECT_TYPES = new Set(["object", "strict_object", "loose_object"]);

/**
 * valibot issues as `{ path, message }`, with `prefix` before every path. valibot's default texts
 * for keys of strict objects ("Invalid key: Expected never…") are replaced by plain ones.
 */
export function issuesToErrors(issues: readonly v.BaseIssue<unknown>[], prefix = ""): FieldError[] {
  return issues.map((issue) => {
    const dot = v.getDotPath(issue);
    const path = dot ? (prefix ? `${prefix}.${dot}` : dot) : prefix || "(root)";
    let message = issue.message;
    // NOTE: object schemas report a missing key as expected `"name"` and an unknown one (strict
    // objects) as expected `never`; a wrong type at the same path has expected `Object`.
    if (issue.kind === "schema" && OBJECT_TYPES.has(issue.type) && issue.path?.length) {
      if (issue.expected === "never") message = "unexpected field";
      else if (issue.input === undefined && issue.expected?.startsWith('"')) message = "missing field";
    }
    return { path, message };
  });
}
