/**
 * `/docs` in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) opens
 * the page served by the api app and must render every operation of /openapi.json, loading
 * nothing from anywhere but the api. A screenshot is written to `$DOCS_SCREENSHOT` (the one in
 * docs/ was made so), else to a temporary file.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { loadRegistry } from "../db/registry.ts";
import { testApp } from "../../test/fakes.ts";

setDefaultTimeout(120_000);

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let server: ReturnType<typeof Bun.serve>;
let browser: Browser;
const profile = mkdtempSync(join(tmpdir(), "kitsune-chromium-"));

beforeAll(async () => {
  const registry = await loadRegistry(resolve(import.meta.dir, "../../sql"));
  const { app } = testApp({ commands: registry.list() });
  server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
  // A fresh profile each run (Playwright refuses --user-data-dir among args; this is its way).
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, env: { ...process.env, HOME: profile } });
});

afterAll(async () => {
  await browser?.close();
  server?.stop(true);
  rmSync(profile, { recursive: true, force: true });
});

test("renders every operation of /openapi.json, loading nothing from elsewhere", async () => {
  const base = `http://127.0.0.1:${server.port}`;
  const doc: any = await (await fetch(`${base}/openapi.json`)).json();
  const expected = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`))
    .sort();
  expect(expected).toContain("POST /execute");
  expect(expected).toContain("GET /commands/{id}");

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const requested: string[] = [];
  const failed: string[] = [];
  page.on("request", (r) => requested.push(r.url()));
  page.on("requestfailed", (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));

  await page.goto(`${base}/docs`);
  await page.locator(".opblock").first().waitFor({ timeout: 60_000 });
  const rendered = await page.$$eval(".opblock", (blocks) =>
    blocks.map((b) => {
      const method = b.querySelector(".opblock-summary-method")?.textContent?.trim() ?? "";
      const path = b.querySelector(".opblock-summary-path")?.getAttribute("data-path") ?? b.querySelector(".opblock-summary-path")?.textContent?.trim() ?? "";
      return `${method} ${path.replace(/\u200b/g, "")}`;
    }),
  );
  expect(rendered.sort()).toEqual(expected);
  expect(await page.locator(".info .title").innerText()).toContain(doc.info.title);

  const shot = process.env.DOCS_SCREENSHOT ?? join(profile, "docs.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot of /docs: ${shot}`);

  // An operation opens, with the request body generated from the registry.
  await page.locator(".opblock-post .opblock-summary").first().click();
  await page.locator(".opblock-post .opblock-body .body-param__example, .opblock-post .opblock-body .model-example").first().waitFor();

  expect(errors).toEqual([]);
  expect(failed).toEqual([]);
  expect(requested.filter((u) => !u.startsWith(base) && !u.startsWith("data:") && !u.startsWith("blob:"))).toEqual([]);
  expect(requested).toContain(`${base}/docs/swagger-ui-bundle.js`);
  expect(requested).toContain(`${base}/openapi.json`);
  await page.close();
});
