/**
 * @module db/sql-params
 * Turns a registry statement with named parameters (`:name`) into one PostgreSQL can prepare
 * (`$1`), the same name always getting the same number. A small lexer skips everything that looks
 * like a parameter but is not one: `::casts`, string literals ('…', E'…', $$…$$, $tag$…$tag$),
 * quoted identifiers and comments (`--`, nested `/* … *\/`).
 *
 * @example
 * parseNamedParams("UPDATE users SET age = :age::int WHERE email = :email");
 * // { sql: "UPDATE users SET age = $1::int WHERE email = $2",
 * //   params: [{ name: "age", type: "integer" }, { name: "email", type: "scalar" }], … }
 */
import type { ParamType } from "../contracts.ts";

export interface NamedParam {
  name: string;
  type: ParamType;
}

export interface ParsedSql {
  /** The statement with `:name` replaced by `$n`; a final `;` and whatever trails it are cut. */
  sql: string;
  /** In order of first appearance: `params[0]` is `$1`. */
  params: NamedParam[];
  /** A `;` outside strings and comments is followed by more than whitespace and comments. */
  multipleStatements: boolean;
  /** Other things a registry should refuse: conflicting casts, `$1` written by hand, unterminated text. */
  problems: string[];
}

const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_PART = /[A-Za-z0-9_$\u0080-\uffff]/;
const SPACE = /\s/;

/** Base type name (lower case, `pg_catalog.` stripped) → the type of value the payload must carry. */
const CAST_TYPES: Record<string, ParamType> = {
  int: "integer", int2: "integer", int4: "integer", int8: "integer",
  integer: "integer", smallint: "integer", bigint: "integer",
  text: "text", varchar: "text", "character varying": "text", char: "text", character: "text",
  bpchar: "text", name: "text", citext: "text",
  numeric: "numeric", decimal: "numeric", float: "numeric", float4: "numeric", float8: "numeric",
  real: "numeric", "double precision": "numeric",
  bool: "boolean", boolean: "boolean",
  json: "json", jsonb: "json",
  uuid: "uuid",
  timestamp: "timestamp", timestamptz: "timestamp", date: "timestamp",
  "timestamp with time zone": "timestamp", "timestamp without time zone": "timestamp",
};

/** Parses one statement; never throws (PostgreSQL has the last word on syntax at prepare time). */
export function parseNamedParams(text: string): ParsedSql {
  const params: NamedParam[] = [];
  const index = new Map<string, number>();
  const problems: string[] = [];
  let out = "";
  let copied = 0; // text[copied, i) is not yet in `out`
  let statementEnd = -1; // position of the first top-level `;`
  let multipleStatements = false;
  let i = 0;

  const unterminated = (what: string) => problems.push(`unterminated ${what}`);

  while (i < text.length) {
    const c = text[i]!;
    const next = text[i + 1];

    if (SPACE.test(c)) {
      i++;
      continue;
    }
    if (c === "-" && next === "-") {
      i = skipLineComment(text, i);
      continue;
    }
    if (c === "/" && next === "*") {
      const end = skipBlockComment(text, i);
      if (end < 0) {
        unterminated("/* comment");
        break;
      }
      i = end;
      continue;
    }

    // Anything but whitespace and comments after the first top-level `;` is a second statement.
    if (statementEnd >= 0) {
      multipleStatements = true;
      break;
    }

    if (c === ";") {
      statementEnd = i;
      i++;
    } else if (c === "'") {
      i = skipQuoted(text, i, "'", false) ?? (unterminated("string literal"), text.length);
    } else if (c === '"') {
      i = skipQuoted(text, i, '"', false) ?? (unterminated("quoted identifier"), text.length);
    } else if (c === "$") {
      if (next !== undefined && /[0-9]/.test(next)) {
        problems.push(`positional parameter $${/^\$(\d+)/.exec(text.slice(i))![1]}: use a named parameter (:name)`);
        i++;
        continue;
      }
      const tag = dollarTag(text, i);
      if (tag === undefined) {
        i++;
        continue;
      }
      const close = text.indexOf(tag, i + tag.length);
      if (close < 0) {
        unterminated(`${tag} dollar-quoted string`);
        break;
      }
      i = close + tag.length;
    } else if (IDENT_START.test(c)) {
      const start = i;
      while (i < text.length && IDENT_PART.test(text[i]!)) i++;
      // E'…' (and e'…') is the one literal where a backslash escapes the quote.
      if (i - start === 1 && (c === "E" || c === "e") && text[i] === "'") {
        i = skipQuoted(text, i, "'", true) ?? (unterminated("string literal"), text.length);
      }
    } else if (c === ":" && next === ":") {
      i += 2; // a cast; the type name after it is skipped as an identifier
    } else if (c === ":" && next !== undefined && /[A-Za-z_]/.test(next)) {
      const start = i;
      i++;
      while (i < text.length && /[A-Za-z0-9_]/.test(text[i]!)) i++;
      const name = text.slice(start + 1, i);
      const type = castAfter(text, i);
      let n = index.get(name);
      if (n === undefined) {
        params.push({ name, type });
        n = params.length;
        index.set(name, n);
      } else {
        const known = params[n - 1]!;
        if (known.type === "scalar") known.type = type;
        else if (type !== "scalar" && type !== known.type) {
          problems.push(`parameter :${name} is cast to both ${known.type} and ${type}`);
        }
      }
      out += text.slice(copied, start) + "$" + n;
      copied = i;
    } else {
      i++;
    }
  }

  const end = statementEnd >= 0 && !multipleStatements ? statementEnd : text.length;
  out += text.slice(copied, Math.max(copied, end));
  return { sql: out.trim(), params, multipleStatements, problems };
}

function skipLineComment(text: string, i: number): number {
  const eol = text.indexOf("\n", i);
  return eol < 0 ? text.length : eol + 1;
}

/** Returns the index after the comment, or -1 when it never closes. Block comments nest in PostgreSQL. */
function skipBlockComment(text: string, i: number): number {
  let depth = 0;
  while (i < text.length) {
    if (text[i] === "/" && text[i + 1] === "*") {
      depth++;
      i += 2;
    } else if (text[i] === "*" && text[i + 1] === "/") {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else {
      i++;
    }
  }
  return -1;
}

/** `text[i]` is the opening quote; a doubled quote stands for itself. Returns the index after the close. */
function skipQuoted(text: string, i: number, quote: string, backslashEscapes: boolean): number | undefined {
  i++;
  while (i < text.length) {
    const c = text[i];
    if (backslashEscapes && c === "\\") {
      i += 2;
    } else if (c === quote) {
      if (text[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i++;
    }
  }
  return undefined;
}

/** The opening `$tag$` at `i`, or undefined when the `$` starts no dollar quote. */
function dollarTag(text: string, i: number): string | undefined {
  let j = i + 1;
  if (text[j] === "$") return "$$";
  if (j >= text.length || !/[A-Za-z_\u0080-\uffff]/.test(text[j]!)) return undefined;
  while (j < text.length && /[A-Za-z0-9_\u0080-\uffff]/.test(text[j]!)) j++;
  return text[j] === "$" ? text.slice(i, j + 1) : undefined;
}

/** The type of `:name::type` when a cast follows the parameter at `i`; otherwise "scalar". */
function castAfter(text: string, i: number): ParamType {
  const m = /^\s*::\s*((?:pg_catalog\.)?([A-Za-z_][A-Za-z0-9_]*)(?:\s+(precision|varying|with(?:out)?\s+time\s+zone))?)\s*(\(\s*[0-9\s,]*\))?\s*(\[)?/i.exec(
    text.slice(i, i + 80),
  );
  if (!m || m[5]) return "scalar"; // no cast, or an array type: the value is passed as PostgreSQL's text form
  const base = [m[2], m[3]].filter(Boolean).join(" ").toLowerCase().replace(/\s+/g, " ");
  return CAST_TYPES[base] ?? "scalar";
}
