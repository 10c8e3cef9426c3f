import { describe, expect, test } from "bun:test";
import { testApp } from "../../test/fakes.ts";

describe("GET /openapi.json", () => {
  test("documents /execute with request, 202 and problem responses", async () => {
    const { app } = testApp();
    const res = await app.request("/openapi.json");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("application/json");
    const doc: any = await res.json();
    expect(doc.openapi).toBe("3.1.0");
    const op = doc.paths["/execute"].post;
    expect(op.security).toEqual([{ bearer: [] }]);
    expect(Object.keys(op.responses).sort()).toEqual(["200", "202", "400", "401", "413", "415", "422", "503"]);
    expect(op.responses["200"].content["application/json"].schema.$ref).toBe("#/components/schemas/CommandResult");
    expect(op.parameters.find((p: any) => p.name === "wait")).toMatchObject({ in: "query", schema: { maximum: 30000 } });
    expect(op.responses["202"].content["application/json"].schema.$ref).toBe("#/components/schemas/Accepted");
    expect(op.responses["422"].content["application/problem+json"].schema.$ref).toBe("#/components/schemas/Problem");
    expect(doc.components.schemas.Problem.required).toEqual(
      expect.arrayContaining(["type", "title", "status", "detail", "instance", "request_id"]),
    );
    expect(doc.components.schemas.ExecuteRequest.required).toEqual(["command", "payload"]);
  });

  test("lists each registered command version with its payload schema", async () => {
    const { app } = testApp();
    const doc: any = await (await app.request("/openapi.json")).json();
    const refs = doc.paths["/execute"].post.requestBody.content["application/json"].schema.oneOf.map((s: any) => s.$ref);
    expect(refs).toEqual([
      "#/components/schemas/Execute_create_user_v1",
      "#/components/schemas/Execute_create_user_v2",
      "#/components/schemas/Execute_record_order_v1",
    ]);
    const v1 = doc.components.schemas.Execute_create_user_v1;
    expect(v1.properties.command).toEqual({ const: "create_user" });
    expect(v1.required).toContain("version"); // v1 is not the newest
    expect(v1.properties.payload).toMatchObject({ type: "object", required: ["name", "email"], additionalProperties: false });
    const v2 = doc.components.schemas.Execute_create_user_v2;
    expect(v2.required).not.toContain("version");
    expect(v2.properties.payload.properties.age.anyOf).toBeDefined();
    const order = doc.components.schemas.Execute_record_order_v1.properties.payload.properties;
    expect(order.order_id.anyOf).toContainEqual({ type: "string", format: "uuid" });
    expect(order.paid.anyOf).toContainEqual({ type: "boolean" });
    expect(doc.info.description).toContain("create_user");
  });
});

describe("GET /openapi.json: /commands/{id}", () => {
  test("documents the status lookup with its 200, 404 and 503", async () => {
    const { app } = testApp();
    const doc: any = await (await app.request("/openapi.json")).json();
    const op = doc.paths["/commands/{id}"].get;
    expect(Object.keys(op.responses).sort()).toEqual(["200", "401", "404", "503"]);
    expect(op.responses["200"].content["application/json"].schema.$ref).toBe("#/components/schemas/CommandStatus");
    expect(doc.components.schemas.CommandStatus).toBeDefined();
  });
});

describe("GET /docs", () => {
  test("an HTML page that loads the viewer on /openapi.json", async () => {
    const { app } = testApp();
    const res = await app.request("/docs");
    expect(res.headers.get("content-type")).toContain("text/html");
    const html = await res.text();
    expect(html).toContain("openapi.json");
    expect(html).toContain("<script");
    // Everything it loads comes from the api itself.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
  });

  test("its script and stylesheet come from the installed swagger-ui-dist; other names are 404", async () => {
    const { app } = testApp();
    const js = await app.request("/docs/swagger-ui-bundle.js");
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toContain("javascript");
    expect(await js.text()).toContain("SwaggerUIBundle");
    const css = await app.request("/docs/swagger-ui.css");
    expect(css.status).toBe(200);
    expect(css.headers.get("content-type")).toContain("text/css");
    for (const name of ["package.json", "..%2Fpackage.json", "constructor", "index.html"]) {
      expect((await app.request(`/docs/${name}`)).status).toBe(404);
    }
  });
});
