import { expect, test } from "bun:test";
import { batchRate, deliveryWindow, median, roundOrder, spanRate, successes } from "./rate.ts";

test("spanRate counts what arrived between the two observations over the time between them", () => {
  expect(spanRate({ at: 1000, count: 300 }, { at: 3000, count: 1300 })).toEqual({ count: 1000, seconds: 2, perSecond: 500 });
  expect(spanRate({ at: 5, count: 1 }, { at: 5, count: 1 }).perSecond).toBe(0);
});

test("deliveryWindow runs from the first sighting to the expected count, leaving out the first sighting and the start-up", () => {
  const samples = [
    { at: 0, count: 0 }, // start-up: nothing yet
    { at: 500, count: 0 },
    { at: 520, count: 7000 }, // first push seen: its lines and everything before are left out
    { at: 1020, count: 57000 },
    { at: 1520, count: 107000 },
    { at: 1540, count: 107000 }, // after the expected count: not part of the window
  ];
  // 100,000 lines in 1 s. Counting the first push (107,000) or from t=0 (1.52 s) would be wrong.
  expect(deliveryWindow(samples, 107000)).toEqual({ count: 100000, seconds: 1, perSecond: 100000 });
});

test("deliveryWindow ends at the first sample that reached the expected count, and counts no more than expected", () => {
  const samples = [
    { at: 100, count: 10 },
    { at: 200, count: 60 },
    { at: 300, count: 120 }, // overshoots 110: counted as 110
    { at: 400, count: 130 },
  ];
  expect(deliveryWindow(samples, 110)).toEqual({ count: 100, seconds: 0.2, perSecond: 500 });
});

test("deliveryWindow throws when the count was never reached or nothing was ever seen", () => {
  expect(() => deliveryWindow([{ at: 0, count: 0 }, { at: 10, count: 5 }], 6)).toThrow("never reached 6");
  expect(() => deliveryWindow([{ at: 0, count: 0 }], 0)).toThrow();
});

test("batchRate: from the first transaction's start to the last one's, over every batch's rows but the last", () => {
  // Three batches of 2,000 starting 1 s apart: 4,000 rows in 2 s. Counting the last batch's rows
  // without its duration would give 3,000/s.
  const batches = [
    { at: 10_000, rows: 2000 },
    { at: 11_000, rows: 2000 },
    { at: 12_000, rows: 2000 },
  ];
  expect(batchRate(batches)).toEqual({ count: 4000, seconds: 2, perSecond: 2000 });
});

test("batchRate takes the batches in any order and leaves out the latest one, whatever its size", () => {
  const batches = [
    { at: 3000, rows: 7 }, // the last: left out
    { at: 1000, rows: 500 }, // the first: counted, the window starts at its start
    { at: 2000, rows: 300 },
  ];
  expect(batchRate(batches)).toEqual({ count: 800, seconds: 2, perSecond: 400 });
});

test("batchRate of fewer than two batches is an empty window", () => {
  expect(batchRate([])).toEqual({ count: 0, seconds: 0, perSecond: 0 });
  expect(batchRate([{ at: 5, rows: 100 }])).toEqual({ count: 0, seconds: 0, perSecond: 0 });
});

test("median", () => {
  expect(median([3, 1, 2])).toBe(2);
  expect(median([4, 1, 3, 2])).toBe(2.5);
  expect(median([])).toBeNaN();
});

test("roundOrder alternates which side goes first", () => {
  expect(roundOrder(1, ["floor", "api"])).toEqual(["floor", "api"]);
  expect(roundOrder(2, ["floor", "api"])).toEqual(["api", "floor"]);
  expect(roundOrder(3, ["floor", "api"])).toEqual(["floor", "api"]);
});

test("successes never counts a failed answer, whoever saw it", () => {
  expect(successes({ answers: 1000, clientFailed: 0, serverFailed: 0 })).toBe(1000);
  // wrk sees only status >= 400; the server also saw two 200s.
  expect(successes({ answers: 1000, clientFailed: 3, serverFailed: 5 })).toBe(995);
  // The server answered one more 503 after the client had stopped counting.
  expect(successes({ answers: 1000, clientFailed: 10, serverFailed: 11 })).toBe(989);
  expect(successes({ answers: 5, clientFailed: 9, serverFailed: 0 })).toBe(0);
});
