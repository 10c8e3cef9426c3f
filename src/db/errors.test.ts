import { describe, expect, test } from "bun:test";
import postgres from "postgres";
import { classifySqlError, isConnectionLost, RetriableBatchError, sqlstateOf } from "./errors.ts";

const pgError = (code: string, severity = "ERROR") =>
  new postgres.PostgresError({ message: `error ${code}`, code, severity } as never);

describe("classifySqlError", () => {
  test.each(["22001", "22P02", "23505", "23502", "23503", "42P01", "42703", "42601", "21000", "P0001", "0A000", "2F005", "44000", "54000"])(
    "%s is permanent",
    (code) => expect(classifySqlError(pgError(code))).toBe("permanent"),
  );

  test.each(["08006", "08001", "40001", "40P01", "53100", "53300", "57P01", "57P03", "57014", "55P03", "XX000", "25P02"])(
    "%s is transient",
    (code) => expect(classifySqlError(pgError(code))).toBe("transient"),
  );

  test("connection errors and other errors are transient", () => {
    expect(classifySqlError(Object.assign(new Error("closed"), { code: "CONNECTION_CLOSED" }))).toBe("transient");
    expect(classifySqlError(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }))).toBe("transient");
    expect(classifySqlError(new Error("?"))).toBe("transient");
    expect(classifySqlError(undefined)).toBe("transient");
  });

  test("a look-alike that is no PostgresError is not trusted for its code", () => {
    expect(classifySqlError(Object.assign(new Error("x"), { code: "23505" }))).toBe("transient");
    expect(sqlstateOf(Object.assign(new Error("x"), { code: "23505" }))).toBeUndefined();
    expect(sqlstateOf(pgError("23505"))).toBe("23505");
  });
});

describe("isConnectionLost", () => {
  test("client-side connection errors", () => {
    expect(isConnectionLost(Object.assign(new Error("x"), { code: "CONNECTION_CLOSED" }))).toBe(true);
    expect(isConnectionLost(Object.assign(new Error("x"), { code: "ECONNRESET" }))).toBe(true);
    expect(isConnectionLost(Object.assign(new Error("x"), { code: "CONNECT_TIMEOUT" }))).toBe(true);
  });

  test("PostgreSQL errors are not: the socket is still there", () => {
    expect(isConnectionLost(pgError("57P01", "FATAL"))).toBe(false);
    expect(isConnectionLost(pgError("08006"))).toBe(false);
    expect(isConnectionLost(pgError("23505"))).toBe(false);
    expect(isConnectionLost(pgError("40P01"))).toBe(false);
    expect(isConnectionLost(pgError("57014"))).toBe(false);
    expect(isConnectionLost(new TypeError("bug"))).toBe(false);
    expect(isConnectionLost(null)).toBe(false);
  });
});

test("RetriableBatchError carries its cause and SQLSTATE", () => {
  const cause = pgError("40P01");
  const err = new RetriableBatchError(cause);
  expect(err.cause).toBe(cause);
  expect(err.sqlstate).toBe("40P01");
  expect(err.message).toBe("batch not applied, retry: error 40P01");
  expect(err.name).toBe("RetriableBatchError");
  expect(err.connectionLost).toBe(false);
});

test("RetriableBatchError says when the connection was lost", () => {
  expect(new RetriableBatchError(Object.assign(new Error("x"), { code: "CONNECTION_CLOSED" })).connectionLost).toBe(true);
  expect(new RetriableBatchError(pgError("57P01", "FATAL")).connectionLost).toBe(true);
  expect(new RetriableBatchError(pgError("08006")).connectionLost).toBe(true);
  expect(new RetriableBatchError(pgError("40001")).connectionLost).toBe(false);
});
