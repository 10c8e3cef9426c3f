/**
 * @module db/payload
 * What a command's payload must hold, from its registry parameters, and how each value is bound.
 * The api uses `payloadSchema` to answer 422; the db-worker uses `bindParams`, which ignores
 * extra fields (the api already refused them) and reports missing or mistyped ones.
 *
 * Every value is bound as text with an unspecified type, so PostgreSQL infers each parameter's type
 * from the statement (the column it goes into, or its `::cast`) exactly as it would for a literal.
 */
import * as v from "valibot";
import type { CommandDef, ParamType } from "../contracts.ts";

const INTEGER_TEXT = /^[+-]?\d+$/;
const NUMERIC_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
/** A date, optionally with a time and offset; PostgreSQL checks the ranges. */
const TIMESTAMP_TEXT = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s?(Z|[+-]\d{2}(:?\d{2})?)?)?$/i;

const WHOLE = "expected a whole number";
const NUMBER = "expected a number";

const SCHEMAS = {
  scalar: v.union([v.string(), v.number(), v.boolean()], "expected a string, number or boolean"),
  text: v.string("expected a string"),
  integer: v.union(
    [v.pipe(v.number(), v.integer(WHOLE)), v.pipe(v.string(), v.regex(INTEGER_TEXT, WHOLE))],
    WHOLE,
  ),
  numeric: v.union(
    [v.pipe(v.number(), v.finite(NUMBER)), v.pipe(v.string(), v.regex(NUMERIC_TEXT, NUMBER))],
    NUMBER,
  ),
  boolean: v.boolean("expected true or false"),
  json: v.unknown(),
  uuid: v.pipe(v.string("expected a UUID"), v.uuid("expected a UUID")),
  timestamp: v.pipe(
    v.string("expected an ISO 8601 date or timestamp"),
    v.regex(TIMESTAMP_TEXT, "expected an ISO 8601 date or timestamp"),
  ),
} satisfies Record<ParamType, v.GenericSchema>;

const NULLABLE = Object.fromEntries(Object.entries(SCHEMAS).map(([type, schema]) => [type, v.nullable(schema)])) as unknown as Record<
  ParamType,
  v.GenericSchema
>;

/** One parameter's value; `null` binds SQL NULL for every type. */
export function paramSchema(type: ParamType): v.GenericSchema {
  return NULLABLE[type];
}

/**
 * The payload of one command version as a valibot object schema.
 * @param options.allowExtra keep (true) or refuse (false, the default) fields that are no parameter
 */
export function payloadSchema(def: CommandDef, { allowExtra = false }: { allowExtra?: boolean } = {}) {
  const entries = Object.fromEntries(def.params.map((p) => [p.name, paramSchema(p.type)]));
  return allowExtra ? v.looseObject(entries) : v.strictObject(entries);
}

export interface PayloadIssue {
  path: string;
  message: string;
}

export type Bound = { ok: true; values: (string | null)[] } | { ok: false; issues: PayloadIssue[] };

/** The values for `$1…$n` of `def.sql`, or every missing or mistyped field. */
export function bindParams(def: CommandDef, payload: Record<string, unknown>): Bound {
  const values: (string | null)[] = [];
  const issues: PayloadIssue[] = [];
  for (const { name, type } of def.params) {
    const value = Object.hasOwn(payload, name) ? payload[name] : undefined;
    if (value === undefined) {
      issues.push({ path: name, message: `missing parameter "${name}"` });
      continue;
    }
    const checked = v.safeParse(paramSchema(type), value);
    if (!checked.success) {
      issues.push({ path: name, message: `parameter "${name}": ${checked.issues[0].message}` });
      continue;
    }
    values.push(toText(type, value));
  }
  return issues.length ? { ok: false, issues } : { ok: true, values };
}

function toText(type: ParamType, value: unknown): string | null {
  if (value === null) return null;
  if (type === "json") return JSON.stringify(value);
  return String(value);
}
