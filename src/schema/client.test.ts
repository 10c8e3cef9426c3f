/** The registry client against a tiny local HTTP server that answers like a Confluent-API registry. */
import { afterAll, describe, expect, test } from "bun:test";
import { RegistryHttpError, SchemaRegistryClient } from "./client.ts";

const seen: { method: string; path: string; auth: string | null; body: string }[] = [];
const server = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  async fetch(req) {
    const url = new URL(req.url);
    seen.push({ method: req.method, path: url.pathname + url.search, auth: req.headers.get("authorization"), body: await req.text() });
    if (url.pathname.includes("/compatibility/subjects/new/")) return Response.json({ error_code: 40401, message: "Subject 'new' not found." }, { status: 404 });
    if (url.pathname.includes("/compatibility/")) return Response.json({ is_compatible: false, messages: ["a reason"] });
    if (url.pathname === "/base/subjects/refused/versions") return Response.json({ error_code: 409, message: "incompatible" }, { status: 409 });
    if (url.pathname === "/base/subjects/broken/versions") return new Response("<html>bad gateway</html>", { status: 502 });
    if (url.pathname === "/base/subjects/ok/versions") return Response.json({ id: 7 });
    return Response.json({ error_code: 40403, message: "Schema not found" }, { status: 404 });
  },
});
afterAll(() => server.stop(true));
const url = `http://127.0.0.1:${server.port}/base`;

describe("SchemaRegistryClient", () => {
  test("basic auth, bearer, or none", async () => {
    await new SchemaRegistryClient({ url, username: "me", password: "p:w" }).register("ok", {});
    await new SchemaRegistryClient({ url, token: "t0k" }).register("ok", {});
    await new SchemaRegistryClient({ url }).register("ok", {});
    expect(seen.slice(-3).map((s) => s.auth)).toEqual([`Basic ${btoa("me:p:w")}`, "Bearer t0k", null]);
  });

  test("a schema is sent as a JSON Schema string, subjects encoded", async () => {
    expect(await new SchemaRegistryClient({ url }).register("ok", { type: "object" })).toBe(7);
    expect(JSON.parse(seen.at(-1)!.body)).toEqual({ schemaType: "JSON", schema: '{"type":"object"}' });
    await new SchemaRegistryClient({ url }).lookup("a/b c", {});
    expect(seen.at(-1)!.path).toBe("/base/subjects/a%2Fb%20c");
  });

  test("refusals and failures keep the registry's words", async () => {
    const c = new SchemaRegistryClient({ url });
    const err = await c.register("refused", {}).catch((e) => e);
    expect(err).toBeInstanceOf(RegistryHttpError);
    expect(err).toMatchObject({ status: 409, errorCode: 409, registryMessage: "incompatible" });
    const broken = await c.register("broken", {}).catch((e) => e);
    expect(broken.message).toContain("502");
    expect(broken.message).toContain("bad gateway");
  });

  test("404s: no such schema is undefined, a subject without versions takes anything", async () => {
    const c = new SchemaRegistryClient({ url });
    expect(await c.lookup("none", {})).toBeUndefined();
    expect(await c.latest("none")).toBeUndefined();
    expect(await c.check("new", {})).toEqual({ compatible: true, messages: [] });
    expect(await c.check("old", {})).toEqual({ compatible: false, messages: ["a reason"] });
    expect(seen.at(-1)!.path).toBe("/base/compatibility/subjects/old/versions/latest?verbose=true");
  });

  test("a registry that does not answer is named", async () => {
    const err = await new SchemaRegistryClient({ url: "http://127.0.0.1:1" }).register("x", {}).catch((e) => e);
    expect(err.message).toStartWith("schema registry at http://127.0.0.1:1 did not answer POST /subjects/x/versions");
  });
});
