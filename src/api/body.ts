/**
 * @module api/body
 * Reads a JSON request body defensively: content type first, then the declared length, then the
 * bytes themselves with a running cap (a chunked body has no length to check), then nesting depth,
 * and only then `JSON.parse`. Every refusal is an `ApiError` (400, 413 or 415), never a 5xx.
 */
import { ApiError } from "./problems.ts";

export interface ReadJsonOptions {
  maxBytes: number;
  /** Deepest allowed nesting of objects and arrays; the top-level value is depth 1. */
  maxDepth?: number;
}

export const DEFAULT_MAX_DEPTH = 32;

/** `application/json` or any `application/*+json`, in UTF-8 when a charset is given. */
export function isJsonContentType(header: string | null | undefined): boolean {
  if (!header) return false;
  if (header === "application/json") return true;
  const [essence = "", ...params] = header.split(";").map((p) => p.trim().toLowerCase());
  if (essence !== "application/json" && !/^application\/[a-z0-9.+-]+\+json$/.test(essence)) return false;
  for (const param of params) {
    const [name, value = ""] = param.split("=", 2).map((p) => p.trim());
    if (name === "charset" && value.replaceAll('"', "") !== "utf-8" && value.replaceAll('"', "") !== "utf8") return false;
  }
  return true;
}

const tooLarge = (maxBytes: number) =>
  new ApiError("payload_too_large", `the request body is larger than the limit of ${maxBytes} bytes`, {
    extensions: { max_bytes: maxBytes },
  });

/** The body's bytes, refusing with 413 as soon as more than `maxBytes` have been declared or read. */
export async function readBodyCapped(req: Request, maxBytes: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null) {
    const length = Number(declared);
    if (Number.isFinite(length) && length > maxBytes) throw tooLarge(maxBytes);
    if (Number.isFinite(length) && !req.headers.has("transfer-encoding")) {
      // HTTP framing stops a body at its declared length (Bun refuses a request that also sends
      // Transfer-Encoding), so one native read is bounded; the check after it covers a Request
      // built in-process whose header does not match its body.
      const bytes = await readAll(req);
      if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
      return bytes;
    }
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        // Stop reading: the rest of a huge or endless body is never buffered.
        reader.cancel().catch(() => {});
        throw tooLarge(maxBytes);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("malformed_json", "the request body could not be read completely", { cause: err });
  } finally {
    reader.releaseLock();
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

async function readAll(req: Request): Promise<Uint8Array> {
  try {
    return await req.bytes();
  } catch (err) {
    throw new ApiError("malformed_json", "the request body could not be read completely", { cause: err });
  }
}

/**
 * The deepest nesting of `{`/`[` in JSON text, ignoring brackets inside strings; stops counting
 * once past `limit`. Runs before `JSON.parse` so a 64 KiB `[[[[…` costs one linear scan.
 */
export function jsonDepth(text: string, limit = Infinity): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c /* \ */) i++;
      else if (ch === 0x22 /* " */) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x7b /* { */ || ch === 0x5b /* [ */) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) depth--;
  }
  return max;
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** Checks content type, size and depth, then parses; see the module comment. */
export async function readJson(req: Request, { maxBytes, maxDepth = DEFAULT_MAX_DEPTH }: ReadJsonOptions): Promise<unknown> {
  const type = req.headers.get("content-type");
  if (!isJsonContentType(type)) {
    throw new ApiError(
      "unsupported_media_type",
      type ? `expected content-type application/json (UTF-8), got "${type.slice(0, 100)}"` : "expected content-type application/json",
      { headers: { "accept-post": "application/json" } },
    );
  }
  const bytes = await readBodyCapped(req, maxBytes);
  if (bytes.byteLength === 0) throw new ApiError("malformed_json", "the request body is empty; expected a JSON object");
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new ApiError("malformed_json", "the request body is not valid UTF-8");
  }
  if (jsonDepth(text, maxDepth) > maxDepth) {
    throw new ApiError("nesting_too_deep", `the JSON body is nested deeper than ${maxDepth} levels`, {
      extensions: { max_depth: maxDepth },
    });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError("malformed_json", `the request body is not valid JSON: ${(err as Error).message}`.slice(0, 300));
  }
}
