import { expect, test } from "bun:test";
import { settleWithin, withTimeout } from "./timeout.ts";

const never = new Promise<never>(() => {});

test("withTimeout passes the outcome through, or rejects with the message once the time is up", async () => {
  expect(await withTimeout(Promise.resolve(7), 10_000)).toBe(7);
  const boom = new Error("boom");
  await expect(withTimeout(Promise.reject(boom), 10_000)).rejects.toBe(boom);
  await expect(withTimeout(never, 1, "PostgreSQL did not answer")).rejects.toThrow("PostgreSQL did not answer");
  await expect(withTimeout(never, 1)).rejects.toThrow("no answer within 1 ms");
});

test("settleWithin never rejects, and returns once the promise settles or the time is up", async () => {
  await settleWithin(Promise.reject(new Error("ignored")), 10_000);
  await settleWithin(never, 1);
  let done = false;
  await settleWithin(Promise.resolve().then(() => (done = true)), 10_000);
  expect(done).toBe(true);
});
