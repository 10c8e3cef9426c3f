import { describe, expect, test } from "bun:test";
import { parseNamedParams } from "./sql-params.ts";

const sqlOf = (text: string) => parseNamedParams(text).sql;
const namesOf = (text: string) => parseNamedParams(text).params.map((p) => p.name);

describe("named parameters", () => {
  test("the DESIGN.md example", () => {
    const parsed = parseNamedParams(
      "-- command: create_user\n-- version: 1\nINSERT INTO users (name, email) VALUES (:name, :email);\n",
    );
    expect(parsed.sql).toBe("-- command: create_user\n-- version: 1\nINSERT INTO users (name, email) VALUES ($1, $2)");
    expect(parsed.params).toEqual([
      { name: "name", type: "scalar" },
      { name: "email", type: "scalar" },
    ]);
    expect(parsed.multipleStatements).toBe(false);
    expect(parsed.problems).toEqual([]);
  });

  test("the same name gets the same number, in order of first appearance", () => {
    const parsed = parseNamedParams("SELECT :b, :a, :b, :c, :a");
    expect(parsed.sql).toBe("SELECT $1, $2, $1, $3, $2");
    expect(parsed.params.map((p) => p.name)).toEqual(["b", "a", "c"]);
  });

  test("names take letters, digits and underscores", () => {
    expect(sqlOf("SELECT :_x1, :Name_2+1")).toBe("SELECT $1, $2+1");
    expect(namesOf("SELECT :_x1, :Name_2+1")).toEqual(["_x1", "Name_2"]);
  });

  test("parameters right next to punctuation", () => {
    expect(sqlOf("SELECT(:a,:b)")).toBe("SELECT($1,$2)");
    expect(sqlOf("WHERE x=:a AND y<>:b")).toBe("WHERE x=$1 AND y<>$2");
  });

  test("a colon that starts no name is left alone", () => {
    expect(sqlOf("SELECT f(a := 1), arr[1:2], ':'")).toBe("SELECT f(a := 1), arr[1:2], ':'");
    expect(namesOf("SELECT f(a := 1), arr[1:2]")).toEqual([]);
  });

  test("no parameters at all", () => {
    expect(parseNamedParams("SELECT 1").params).toEqual([]);
    expect(parseNamedParams("").sql).toBe("");
  });
});

describe("things that are not parameters", () => {
  test.each([
    ["casts", "SELECT now()::date, x::text", "SELECT now()::date, x::text"],
    ["casts with spaces", "SELECT x :: text", "SELECT x :: text"],
    ["single-quoted strings", "SELECT ':no', 'it''s :no', :yes", "SELECT ':no', 'it''s :no', $1"],
    ["E strings with backslash escapes", "SELECT E'\\' :no', e'a\\\\', :yes", "SELECT E'\\' :no', e'a\\\\', $1"],
    ["E strings with doubled quotes", "SELECT E'it''s :no', :yes", "SELECT E'it''s :no', $1"],
    ["a plain string ending in a backslash", "SELECT 'a\\', :yes", "SELECT 'a\\', $1"],
    ["identifiers ending in e are not E strings", "SELECT type'x:no', :yes", "SELECT type'x:no', $1"],
    ["double-quoted identifiers", 'SELECT "a:no", "say ""hi :no""", :yes', 'SELECT "a:no", "say ""hi :no""", $1'],
    ["$$ strings", "SELECT $$ :no ' \" $$, :yes", "SELECT $$ :no ' \" $$, $1"],
    ["tagged dollar strings", "SELECT $fn$ :no $$ :no $fn$, :yes", "SELECT $fn$ :no $$ :no $fn$, $1"],
    ["dollar signs inside identifiers", "SELECT a$b, x$ :yes", "SELECT a$b, x$ $1"],
    ["line comments", "SELECT 1 -- :no ' \n, :yes", "SELECT 1 -- :no ' \n, $1"],
    ["block comments", "SELECT /* :no ' */ :yes", "SELECT /* :no ' */ $1"],
    ["nested block comments", "SELECT /* a /* :no */ :no */ :yes", "SELECT /* a /* :no */ :no */ $1"],
    ["U& strings", "SELECT U&':no', :yes", "SELECT U&':no', $1"],
  ])("%s", (_what, input, expected) => {
    const parsed = parseNamedParams(input);
    expect(parsed.sql).toBe(expected);
    expect(parsed.params.map((p) => p.name)).toEqual(expected.includes("$1") ? ["yes"] : []);
    expect(parsed.problems).toEqual([]);
  });
});

describe("casts give a parameter its type", () => {
  test.each([
    ["int", "integer"], ["int4", "integer"], ["int8", "integer"], ["integer", "integer"],
    ["bigint", "integer"], ["smallint", "integer"], ["INT", "integer"], ["pg_catalog.int4", "integer"],
    ["text", "text"], ["varchar", "text"], ["varchar(20)", "text"], ["character varying", "text"],
    ["character varying(255)", "text"], ["char(2)", "text"],
    ["numeric", "numeric"], ["numeric(10, 2)", "numeric"], ["decimal", "numeric"], ["float", "numeric"],
    ["float8", "numeric"], ["real", "numeric"], ["double precision", "numeric"],
    ["bool", "boolean"], ["boolean", "boolean"],
    ["json", "json"], ["jsonb", "json"],
    ["uuid", "uuid"],
    ["timestamp", "timestamp"], ["timestamptz", "timestamp"], ["date", "timestamp"],
    ["timestamp with time zone", "timestamp"], ["timestamp without time zone", "timestamp"],
    ["inet", "scalar"], ["int[]", "scalar"], ["text []", "scalar"], ["my_enum", "scalar"],
  ])("::%s → %s", (cast, type) => {
    const parsed = parseNamedParams(`SELECT :v::${cast} AS v`);
    expect(parsed.params).toEqual([{ name: "v", type: type as never }]);
    expect(parsed.sql).toBe(`SELECT $1::${cast} AS v`);
  });

  test("spaces around ::", () => {
    expect(parseNamedParams("SELECT :age :: int").params).toEqual([{ name: "age", type: "integer" }]);
  });

  test("a name with no cast takes any scalar", () => {
    expect(parseNamedParams("SELECT :v").params).toEqual([{ name: "v", type: "scalar" }]);
  });

  test("only the first cast of a chain types the parameter", () => {
    expect(parseNamedParams("SELECT :v::text::int").params).toEqual([{ name: "v", type: "text" }]);
  });

  test("a cast on a later use types an earlier uncast one", () => {
    expect(parseNamedParams("SELECT :v, :v::int").params).toEqual([{ name: "v", type: "integer" }]);
  });

  test("the same cast twice is fine, two different casts are a problem", () => {
    expect(parseNamedParams("SELECT :v::int, :v::int4").problems).toEqual([]);
    expect(parseNamedParams("SELECT :v::int, :v::text").problems).toEqual([
      "parameter :v is cast to both integer and text",
    ]);
  });

  test("a cast of something else is not the parameter's", () => {
    expect(parseNamedParams("SELECT :v, x::int").params).toEqual([{ name: "v", type: "scalar" }]);
    expect(parseNamedParams("SELECT (:v)::int").params).toEqual([{ name: "v", type: "scalar" }]);
  });
});

describe("statements", () => {
  test("a final semicolon and trailing whitespace or comments are cut", () => {
    const parsed = parseNamedParams("SELECT :a; -- done\n /* really */ \n");
    expect(parsed.sql).toBe("SELECT $1");
    expect(parsed.multipleStatements).toBe(false);
  });

  test.each([
    ["two statements", "SELECT 1; SELECT 2"],
    ["a second statement after a comment", "SELECT 1; -- then\nDELETE FROM users"],
    ["an empty second statement", "SELECT 1;;"],
    ["a second statement on the next line", "INSERT INTO t VALUES (:a);\nDELETE FROM t;"],
  ])("%s", (_what, input) => {
    expect(parseNamedParams(input).multipleStatements).toBe(true);
  });

  test.each([
    ["in a string", "SELECT 'a;b'"],
    ["in E strings", "SELECT E'\\';b'"],
    ["in a quoted identifier", 'SELECT 1 AS "a;b"'],
    ["in a dollar-quoted body", "SELECT $body$ a; b $body$"],
    ["in a line comment", "SELECT 1 -- a; b\n"],
    ["in a block comment", "SELECT 1 /* a; /* b; */ c; */"],
  ])("a semicolon %s does not end the statement", (_what, input) => {
    const parsed = parseNamedParams(input);
    expect(parsed.multipleStatements).toBe(false);
    expect(parsed.sql).toBe(input.trim());
  });
});

describe("problems", () => {
  test("a positional parameter written by hand", () => {
    expect(parseNamedParams("SELECT $1, :a").problems).toEqual([
      "positional parameter $1: use a named parameter (:name)",
    ]);
  });

  test.each([
    ["string literal", "SELECT 'abc"],
    ["string literal", "SELECT E'abc\\'"],
    ["quoted identifier", 'SELECT "abc'],
    ["/* comment", "SELECT /* a /* b */"],
    ["$x$ dollar-quoted string", "SELECT $x$ abc $y$"],
  ])("an unterminated %s", (what, input) => {
    expect(parseNamedParams(input).problems).toEqual([`unterminated ${what}`]);
  });

  test("parameters inside an unterminated string are not counted", () => {
    expect(parseNamedParams("SELECT :a, ':b").params.map((p) => p.name)).toEqual(["a"]);
  });
});
