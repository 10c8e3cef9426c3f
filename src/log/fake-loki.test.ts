/** The fake Loki (test/fake-loki.ts) must refuse what Loki refuses, or the other tests prove little. */
import { afterAll, beforeEach, expect, test } from "bun:test";
import { startFakeLoki } from "../../test/fake-loki.ts";

const loki = startFakeLoki();
afterAll(() => loki.stop());
beforeEach(() => loki.reset());

const post = (body: unknown, headers: Record<string, string> = { "content-type": "application/json" }) =>
  fetch(`${loki.url}/loki/api/v1/push`, {
    method: "POST",
    headers,
    body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });

const ok = { streams: [{ stream: { job: "t" }, values: [["1714564800000000000", "hello"]] }] };

test.each([
  ["plain JSON", ok, undefined],
  ["no streams", {}, undefined],
  ["structured metadata", { streams: [{ stream: { job: "t" }, values: [["1", "x", { trace_id: "abc" }]] }] }, undefined],
])("accepts %s (204)", async (_, body) => {
  expect((await post(body)).status).toBe(204);
});

test("accepts gzip and records it", async () => {
  const res = await post(Bun.gzipSync(JSON.stringify(ok)), { "content-type": "application/json", "content-encoding": "gzip" });
  expect(res.status).toBe(204);
  expect(loki.requests[0]?.gzip).toBe(true);
  expect(loki.entries).toEqual([{ labels: { job: "t" }, ts: "1714564800000000000", line: "hello" }]);
});

test.each([
  ["not JSON", "{"],
  ["streams not an array", { streams: {} }],
  ["no labels", { streams: [{ stream: {}, values: [["1", "x"]] }] }],
  ["a non-string label value", { streams: [{ stream: { job: 1 }, values: [["1", "x"]] }] }],
  ["an invalid label name", { streams: [{ stream: { "a-b": "x" }, values: [["1", "x"]] }] }],
  ["a numeric timestamp", { streams: [{ stream: { job: "t" }, values: [[1, "x"]] }] }],
  ["a float timestamp", { streams: [{ stream: { job: "t" }, values: [["1.5", "x"]] }] }],
  ["a timestamp beyond int64", { streams: [{ stream: { job: "t" }, values: [["99999999999999999999", "x"]] }] }],
  ["a non-string line", { streams: [{ stream: { job: "t" }, values: [["1", { a: 1 }]] }] }],
  ["a one-element value", { streams: [{ stream: { job: "t" }, values: [["1"]] }] }],
  ["four elements", { streams: [{ stream: { job: "t" }, values: [["1", "x", {}, "y"]] }] }],
])("refuses %s (400)", async (_, body) => {
  expect((await post(body)).status).toBe(400);
  expect(loki.entries).toHaveLength(0);
});

test("refuses bad gzip, unknown encodings and non-JSON content types (400)", async () => {
  expect((await post("nope", { "content-type": "application/json", "content-encoding": "gzip" })).status).toBe(400);
  expect((await post(JSON.stringify(ok), { "content-type": "application/json", "content-encoding": "br" })).status).toBe(400);
  expect((await post(JSON.stringify(ok), { "content-type": "application/x-protobuf" })).status).toBe(400);
  expect(loki.counters.pushesInvalid).toBe(3);
});

test("stores identical entries once", async () => {
  await post(ok);
  await post(ok);
  expect(loki.entries).toHaveLength(1);
  expect(loki.counters.duplicates).toBe(1);
});

test("failNext answers the given status for the next N pushes", async () => {
  loki.failNext(429, 2, { retryAfter: "1" });
  const first = await post(ok);
  expect([first.status, first.headers.get("retry-after")]).toEqual([429, "1"]);
  expect((await post(ok)).status).toBe(429);
  expect((await post(ok)).status).toBe(204);
  expect(loki.counters.pushesFailed).toBe(2);
});

test("/ready", async () => {
  expect((await fetch(`${loki.url}/ready`)).status).toBe(200);
  loki.setReady(false);
  expect((await fetch(`${loki.url}/ready`)).status).toBe(503);
});

test("delayAnswerNext stores the entries at once and answers later", async () => {
  loki.delayAnswerNext(300);
  let answered = false;
  const pending = post(ok).then((res) => {
    answered = true;
    return res;
  });
  await loki.waitFor("pushesOk", 1, 2000);
  expect(loki.entries).toHaveLength(1);
  expect(answered).toBe(false);
  expect((await pending).status).toBe(204);
});

test("holdAnswers: each push is stored at once and answered when the test says so", async () => {
  const release = [Promise.withResolvers<void>(), Promise.withResolvers<void>()];
  const arrived: number[] = [];
  loki.holdAnswers(async (n) => {
    arrived.push(n);
    await release[n - 1]!.promise;
  });
  const answered: number[] = [];
  const first = post(ok).then((res) => (answered.push(1), res));
  await loki.waitFor("pushesOk", 1);
  const second = post({ streams: [{ stream: { job: "t" }, values: [["2", "again"]] }] }).then((res) => (answered.push(2), res));
  await loki.waitFor("pushesOk", 2);
  expect([arrived, loki.entries.length, answered]).toEqual([[1, 2], 2, []]);
  release[1]!.resolve();
  expect((await second).status).toBe(204);
  expect(answered).toEqual([2]);
  release[0]!.resolve();
  expect((await first).status).toBe(204);
  loki.holdAnswers(undefined);
  expect((await post(ok)).status).toBe(204); // not held any more
});

test("a delayed request whose client went away is dropped and counted", async () => {
  loki.delayNext(200);
  expect((await post(ok)).status).toBe(204); // delayed, its client still there: handled
  const controller = new AbortController();
  loki.delayNext(200);
  const gone = fetch(`${loki.url}/loki/api/v1/push`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ streams: [{ stream: { job: "t" }, values: [["2", "late"]] }] }), signal: controller.signal });
  await loki.waitFor("requests", 2);
  controller.abort();
  await expect(gone).rejects.toThrow();
  await loki.waitFor("abandoned", 1);
  expect(loki.entries.map((e) => e.line)).toEqual(["hello"]);
});

test("waitFor rejects when the counter does not get there", async () => {
  await expect(loki.waitFor("accepted", 1, 50)).rejects.toThrow("counters.accepted is 0, not 1");
});

test("counting mode: counters move, nothing is kept, and /fake/counters tells them", async () => {
  const counting = startFakeLoki({ store: false, recordRequests: false });
  try {
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${counting.url}/loki/api/v1/push`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(ok) });
      expect(res.status).toBe(204);
    }
    expect(counting.entries).toHaveLength(0);
    expect(counting.requests).toHaveLength(0);
    const counters = await (await fetch(`${counting.url}/fake/counters`)).json();
    expect(counters).toMatchObject({ pushesOk: 2, accepted: 2, duplicates: 0, bytes: 10 });
  } finally {
    await counting.stop();
  }
});

test("runs on its own and prints its URL", async () => {
  const proc = Bun.spawn(["bun", `${import.meta.dir}/../../test/fake-loki.ts`, "--no-store"], { stdout: "pipe" });
  try {
    const reader = proc.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) text += new TextDecoder().decode((await reader.read()).value);
    const { url } = JSON.parse(text) as { url: string };
    expect((await fetch(`${url}/ready`)).status).toBe(200);
  } finally {
    proc.kill();
  }
});
