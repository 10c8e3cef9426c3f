/**
 * @module api/auth
 * Bearer-token check. Tokens are compared as SHA-256 digests with `timingSafeEqual`, against
 * every configured token without stopping at a match, so neither a token's content nor its length
 * shows in the response time.
 *
 * @example
 * ```ts
 * const check = bearerCheck({ tokens: ["s3cret"] });
 * check(req.headers.get("authorization")); // throws the 401 ApiError
 * ```
 */
import { timingSafeEqual } from "node:crypto";
import { ApiError } from "./problems.ts";

const digest = (token: string) => Bun.SHA256.hash(token) as Uint8Array;

export interface BearerAuthOptions {
  tokens: readonly string[];
  /** When true every request passes (AUTH_DISABLED=true). */
  disabled?: boolean;
  realm?: string;
}

/**
 * The check as a plain function of the `Authorization` header: returns when the token is valid,
 * else throws the 401 `ApiError`. Each command route calls it first (no middleware layer: see
 * app.ts).
 */
export function bearerCheck({ tokens, disabled = false, realm = "kitsune" }: BearerAuthOptions): (header: string | null | undefined) => void {
  if (disabled) return () => {};
  const digests = tokens.map(digest);
  const challenge = (error?: string) =>
    error ? `Bearer realm="${realm}", error="${error}"` : `Bearer realm="${realm}"`;
  return (header) => {
    const match = header ? BEARER.exec(header) : null;
    if (!match) {
      throw new ApiError("unauthorized", "send a bearer token: Authorization: Bearer <token>", {
        headers: { "www-authenticate": challenge() },
      });
    }
    const presented = digest(match[1]!);
    let ok = false;
    for (const known of digests) ok = timingSafeEqual(presented, known) || ok;
    if (!ok) {
      throw new ApiError("unauthorized", "the bearer token is not valid", {
        headers: { "www-authenticate": challenge("invalid_token") },
      });
    }
  };
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
