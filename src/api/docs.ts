/**
 * @module api/docs
 * `GET /docs`: Swagger UI on `/openapi.json`, its script and stylesheet served by the api itself
 * from the pinned `swagger-ui-dist` package, so the page works with no network beyond the api.
 * `with { type: "file" }` makes `bun build --compile` embed both files in the executable (and
 * gives their path in node_modules when run from source).
 */
import bundlePath from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import cssPath from "swagger-ui-dist/swagger-ui.css" with { type: "file" };

/** The files under `/docs/`, by name. */
export const DOCS_ASSETS: Record<string, { path: string; type: string }> = {
  "swagger-ui-bundle.js": { path: bundlePath, type: "text/javascript; charset=UTF-8" },
  "swagger-ui.css": { path: cssPath, type: "text/css; charset=UTF-8" },
};

// NOTE: relative URLs, so the page also works behind a proxy that mounts the api under a prefix.
// validatorUrl null: Swagger UI would otherwise send the document to an online validator.
export const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Kitsune API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <div id="app"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>SwaggerUIBundle({ url: "openapi.json", dom_id: "#app", deepLinking: true, validatorUrl: null });</script>
</body>
</html>
`;

/** The response for `/docs/<name>`, or undefined for a name that is not one of the files. */
export function docsAsset(name: string): Response | undefined {
  const asset = Object.hasOwn(DOCS_ASSETS, name) ? DOCS_ASSETS[name] : undefined;
  if (!asset) return undefined;
  return new Response(Bun.file(asset.path), { headers: { "content-type": asset.type, "cache-control": "public, max-age=3600" } });
}
