/**
 * @module api/execute
 * `POST /execute`: check the token, read and validate the body, resolve the command in the
 * registry, check the payload against its parameters, write both events in one `sendAll`, and
 * answer 202 only after the broker has acknowledged them. With `?wait=<ms>` it then waits up to
 * that long (from the request's arrival) for the command's `CommandResult` and answers 200 with it.
 * Every refusal is an `ApiError`.
 *
 * NOTE: this is the hot path; it builds its responses directly and checks the token itself
 * rather than through another middleware layer. Measure (`bun run bench api`) before adding work here.
 */
import * as v from "valibot";
import { IDEMPOTENCY_KEY_MAX, type CommandDef, type CommandLookup, type ExecuteRequest } from "../contracts.ts";
import type { DeliveryReport, MessageSink, OutgoingMessage } from "../kafka/types.ts";
import type { Logger } from "../logger.ts";
import { readJson } from "./body.ts";
import type { ProduceBreaker } from "./breaker.ts";
import { acceptedBody, buildMessages, validTraceparent, type EventSchemas, type Topics } from "./events.ts";
import type { ApiMetrics, CounterCell, HistogramCell } from "./metrics.ts";
import { commandPayloadSchema } from "./payload.ts";
import { ApiError, issuesToErrors } from "./problems.ts";
import { parseExecuteRequest } from "./request.ts";
import { MAX_WAIT_MS, type ResultWaiters } from "./results.ts";

export interface ExecuteDeps {
  commands: CommandLookup;
  sink: MessageSink;
  topics: Topics;
  /** Schema ids for the events' headers (and wire format); none without a schema registry. */
  schemas?: EventSchemas;
  maxBodyBytes: number;
  maxDepth: number;
  /** How long to wait for the broker's acknowledgement before answering 503. */
  produceTimeoutMs: number;
  /** `Retry-After` on 503, in seconds. */
  retryAfterSeconds: number;
  /** Throws the 401 `ApiError` unless the `Authorization` header carries a valid token. */
  authorize: (header: string | null) => void;
  /** Fails fast while the broker does not answer. */
  breaker: ProduceBreaker;
  /** Where `?wait=` requests wait for their result; without it they answer 202 at once. */
  results?: ResultWaiters;
  metrics: ApiMetrics;
  logger: Logger;
  now: () => Date;
}

const IdempotencyKeyHeaderSchema = v.pipe(v.string(), v.trim(), v.nonEmpty("expected a non-empty key"), v.maxLength(IDEMPOTENCY_KEY_MAX, `expected at most ${IDEMPOTENCY_KEY_MAX} characters`));

/** Every issue, not only the first: the 422 lists all of them. */
const ALL_ISSUES = { abortEarly: false } as const;

export function jsonResponse(body: unknown, status: number, requestId: string): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "x-request-id": requestId },
  });
}

/** Handles one `POST /execute`; `id` is the request's (and the command's) id. */
export type ExecuteHandler = (req: Request, id: string) => Promise<Response>;

export function executeHandler(deps: ExecuteDeps): ExecuteHandler {
  const acceptedCells = new WeakMap<CommandDef, CounterCell>();
  const acceptedCell = (def: CommandDef) => {
    let cell = acceptedCells.get(def);
    if (!cell) acceptedCells.set(def, (cell = deps.metrics.accepted.cell({ command: def.command, version: def.version })));
    return cell;
  };
  const produced = deps.metrics.produceDuration.cell({ outcome: "ok" });
  const bodyLimits = { maxBytes: deps.maxBodyBytes, maxDepth: deps.maxDepth };

  return async (req, id) => {
    const started = performance.now();
    deps.authorize(req.headers.get("authorization"));
    const waitMs = waitParam(req.url);
    const body = await readJson(req, bodyLimits);

    const parsed = parseExecuteRequest(body);
    if (!parsed.success) {
      throw new ApiError("invalid_request", "the request body does not match the /execute schema", { errors: issuesToErrors(parsed.issues) });
    }
    const request = parsed.output;
    const def = resolveCommand(deps.commands, request);

    const payload = v.safeParse(commandPayloadSchema(def), request.payload, ALL_ISSUES);
    if (!payload.success) {
      throw new ApiError("invalid_payload", `the payload does not match the parameters of ${def.command} v${def.version}`, {
        errors: issuesToErrors(payload.issues, "payload"),
      });
    }

    const idempotencyKey = resolveIdempotencyKey(req.headers.get("idempotency-key") ?? undefined, request, id);
    const traceparent = validTraceparent(req.headers.get("traceparent"));
    const messages = buildMessages(
      { id, request, def, payload: payload.output, idempotencyKey, now: deps.now(), traceparent },
      deps.topics,
      deps.schemas,
    );

    // Registered before producing: the db-worker may answer before the broker's ack reaches us.
    const expected = waitMs > 0 ? deps.results?.expect(id) : undefined;
    try {
      const reports = await produce(deps, messages, id, idempotencyKey, produced, traceId(traceparent));
      const accepted = acceptedBody(id, idempotencyKey, messages, reports);
      acceptedCell(def).inc();
      deps.logger.debug(
        { request_id: id, trace_id: traceId(traceparent), command: def.command, version: def.version, events: accepted.events },
        "command accepted",
      );
      if (expected) {
        const result = await expected.wait(started + waitMs - performance.now());
        deps.metrics.resultWaits.inc(result ? RESULT : TIMEOUT);
        if (result) return jsonResponse(result, 200, id);
      }
      return jsonResponse(accepted, 202, id);
    } finally {
      // Whatever happened, this request no longer waits (a no-op after a settled wait).
      expected?.cancel();
    }
  };
}

const RESULT = Object.freeze({ outcome: "result" });
const TIMEOUT = Object.freeze({ outcome: "timeout" });

/** `?wait=<ms>`: 0 when absent; a whole number up to `MAX_WAIT_MS`, else 422. */
function waitParam(url: string): number {
  const q = url.indexOf("?");
  // Most requests have no query string: nothing to parse.
  if (q < 0) return 0;
  const raw = new URLSearchParams(url.slice(q + 1)).get("wait");
  if (raw === null) return 0;
  const ms = /^\d{1,6}$/.test(raw) ? Number(raw) : NaN;
  if (!(ms <= MAX_WAIT_MS)) {
    throw new ApiError("invalid_request", `wait must be a whole number of milliseconds from 0 to ${MAX_WAIT_MS}`, {
      errors: [{ path: "query:wait", message: `expected a whole number from 0 to ${MAX_WAIT_MS}` }],
    });
  }
  return ms;
}

/** The registered definition, or 422 naming what is registered instead. */
export function resolveCommand(commands: CommandLookup, request: Pick<ExecuteRequest, "command" | "version">): CommandDef {
  const def = commands.get(request.command, request.version);
  if (def) return def;
  const all = commands.list();
  const versions = all.filter((d) => d.command === request.command).map((d) => d.version);
  if (versions.length === 0) {
    const byCommand = new Map<string, string[]>();
    for (const d of all) byCommand.set(d.command, [...(byCommand.get(d.command) ?? []), d.version]);
    const listing = [...byCommand].map(([name, vs]) => `${name} (v${vs.join(", v")})`).join("; ") || "none";
    throw new ApiError("unknown_command", `no command "${request.command}" is registered; registered commands: ${listing}`, {
      errors: [{ path: "command", message: `unknown command; registered: ${[...byCommand.keys()].join(", ") || "none"}` }],
      extensions: { registered: [...byCommand].map(([command, vs]) => ({ command, versions: vs })) },
    });
  }
  throw new ApiError(
    "unknown_version",
    `${request.command} has no version ${request.version}; registered versions: ${versions.join(", ")}`,
    {
      errors: [{ path: "version", message: `unknown version; registered: ${versions.join(", ")}` }],
      extensions: { registered: [{ command: request.command, versions }] },
    },
  );
}

/** `metadata.idempotency_key`, else the `Idempotency-Key` header, else the request's id; the two must agree. */
export function resolveIdempotencyKey(header: string | undefined, request: ExecuteRequest, id: string): string {
  let fromHeader: string | undefined;
  if (header !== undefined) {
    const result = v.safeParse(IdempotencyKeyHeaderSchema, header);
    if (!result.success) {
      throw new ApiError("invalid_request", "the Idempotency-Key header is not valid", {
        errors: [{ path: "header:Idempotency-Key", message: result.issues[0].message }],
      });
    }
    fromHeader = result.output;
  }
  const fromBody = request.metadata?.idempotency_key;
  if (fromHeader !== undefined && fromBody !== undefined && fromHeader !== fromBody) {
    throw new ApiError("idempotency_key_conflict", "the Idempotency-Key header and metadata.idempotency_key differ", {
      errors: [{ path: "metadata.idempotency_key", message: "differs from the Idempotency-Key header" }],
    });
  }
  return fromBody ?? fromHeader ?? id;
}

class ProduceTimeout extends Error {
  constructor(ms: number) {
    super(`the broker did not acknowledge within ${ms} ms`);
    this.name = "ProduceTimeout";
  }
}

const FAILED = { timeout: Object.freeze({ outcome: "timeout" }), rejected: Object.freeze({ outcome: "error" }) };
const REASON = {
  timeout: Object.freeze({ reason: "timeout" }),
  rejected: Object.freeze({ reason: "rejected" }),
  breaker: Object.freeze({ reason: "breaker_open" }),
};

/** `sink.sendAll` bounded by the timeout; any failure becomes 503 with Retry-After. */
async function produce(
  deps: ExecuteDeps,
  messages: OutgoingMessage[],
  id: string,
  idempotencyKey: string,
  produced: HistogramCell,
  trace_id?: string,
): Promise<DeliveryReport[]> {
  if (!deps.breaker.allow()) {
    deps.metrics.produceErrors.inc(REASON.breaker);
    throw unavailable(deps, "the broker did not answer recently", id, idempotencyKey);
  }
  const started = performance.now();
  let sending: Promise<DeliveryReport[]>;
  try {
    sending = Promise.resolve(deps.sink.sendAll(messages));
  } catch (err) {
    sending = Promise.reject(err);
  }
  try {
    const reports = await new Promise<DeliveryReport[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ProduceTimeout(deps.produceTimeoutMs)), deps.produceTimeoutMs);
      sending.then(
        (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        (e) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
    deps.breaker.succeeded();
    produced.observe((performance.now() - started) / 1000);
    return reports;
  } catch (err) {
    const timedOut = err instanceof ProduceTimeout;
    const reason = timedOut ? "timeout" : "rejected";
    deps.metrics.produceDuration.observe(FAILED[reason], (performance.now() - started) / 1000);
    deps.metrics.produceErrors.inc(REASON[reason]);
    deps.logger.warn({ err, request_id: id, trace_id, idempotency_key: idempotencyKey }, `produce ${reason}`);
    if (timedOut) {
      deps.breaker.timedOut();
      // NOTE: the write may still land after we answered 503; the client's retry with the same
      // idempotency key is what makes that safe, so the body tells it which key to reuse.
      sending.then(
        () => {
          deps.breaker.succeeded();
          deps.logger.warn({ request_id: id, trace_id, idempotency_key: idempotencyKey }, "produce acknowledged after the 503");
        },
        () => {},
      );
    }
    throw unavailable(deps, `the broker could not take the command (${reason})`, id, idempotencyKey, err);
  }
}

function unavailable(deps: ExecuteDeps, why: string, id: string, idempotencyKey: string, cause?: unknown): ApiError {
  return new ApiError("broker_unavailable", `${why}; retry with the same idempotency key`, {
    headers: { "retry-after": String(deps.retryAfterSeconds) },
    extensions: { id, idempotency_key: idempotencyKey },
    cause,
  });
}

/** The W3C trace id (second field of `traceparent`), for log lines. */
function traceId(traceparent: string | undefined): string | undefined {
  return traceparent?.split("-")[1];
}
