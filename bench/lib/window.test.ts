import { expect, test } from "bun:test";
import { sendWindowed } from "./window.ts";

test("at most `window` unsettled at once, and every send settled before it resolves", async () => {
  let inFlight = 0;
  let most = 0;
  let settled = 0;
  await sendWindowed(1000, 16, async () => {
    most = Math.max(most, ++inFlight);
    await Bun.sleep(0);
    inFlight--;
    settled++;
  });
  expect(most).toBe(16);
  expect(settled).toBe(1000);
});

test("the first failure stops further sends and is thrown once those in flight settled", async () => {
  let started = 0;
  let inFlight = 0;
  const err = await sendWindowed(1000, 8, async (i) => {
    started++;
    inFlight++;
    await Bun.sleep(1);
    inFlight--;
    if (i === 20) throw new Error("boom 20");
    if (i === 21) throw new Error("boom 21");
  }).catch((e: Error) => e);
  expect((err as Error).message).toBe("boom 20");
  expect(inFlight).toBe(0);
  expect(started).toBeLessThan(40);
});
