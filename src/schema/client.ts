/**
 * @module schema/client
 * The few calls of the Confluent schema registry API Kitsune makes, all at start-up or from the
 * CLI: set a subject's compatibility, register a schema, look one up, test one against the latest
 * version. Works with Confluent's registry, Redpanda's (port 8081) and Apicurio's `/apis/ccompat/v7`.
 */
import type { Compatibility, SchemaRegistryConfig } from "../config.ts";
import type { JsonSchema } from "./subjects.ts";

/** An answer other than 2xx, with the registry's own `error_code` and `message`. */
export class RegistryHttpError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number | undefined,
    readonly registryMessage: string,
    readonly call: string,
  ) {
    super(`schema registry answered ${status}${errorCode ? ` (error ${errorCode})` : ""} to ${call}: ${registryMessage}`);
    this.name = "RegistryHttpError";
  }
}

export interface Compatible {
  compatible: boolean;
  /** The registry's reasons when it is not (with `?verbose=true`; some registries give none). */
  messages: string[];
}

const TIMEOUT_MS = 10_000;

export class SchemaRegistryClient {
  private readonly auth?: string;
  constructor(private readonly config: Pick<SchemaRegistryConfig, "url" | "username" | "password" | "token">) {
    if (config.token) this.auth = `Bearer ${config.token}`;
    else if (config.username !== undefined) this.auth = `Basic ${btoa(`${config.username}:${config.password ?? ""}`)}`;
  }

  /** Sets the subject's compatibility level (the subject need not exist yet). */
  async setCompatibility(subject: string, level: Compatibility): Promise<void> {
    await this.call("PUT", `/config/${enc(subject)}`, { compatibility: level });
  }

  /** Registers `schema` under `subject` (idempotent: an identical schema gets its existing id). */
  async register(subject: string, schema: JsonSchema): Promise<number> {
    const body = (await this.call("POST", `/subjects/${enc(subject)}/versions`, schemaBody(schema))) as { id: number };
    return body.id;
  }

  /** The id of `schema` when it is registered under `subject` already, else undefined. */
  async lookup(subject: string, schema: JsonSchema): Promise<number | undefined> {
    try {
      const body = (await this.call("POST", `/subjects/${enc(subject)}`, schemaBody(schema))) as { id: number };
      return body.id;
    } catch (err) {
      if (err instanceof RegistryHttpError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** The subject's latest schema, or undefined when it has none. */
  async latest(subject: string): Promise<{ id: number; version: number; schema: JsonSchema } | undefined> {
    try {
      const body = (await this.call("GET", `/subjects/${enc(subject)}/versions/latest`)) as { id: number; version: number; schema: string };
      return { id: body.id, version: body.version, schema: JSON.parse(body.schema) as JsonSchema };
    } catch (err) {
      if (err instanceof RegistryHttpError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Whether `schema` may follow the subject's latest version; a subject without versions takes anything. */
  async check(subject: string, schema: JsonSchema): Promise<Compatible> {
    let body: { is_compatible?: boolean; messages?: unknown };
    try {
      body = (await this.call(
        "POST",
        `/compatibility/subjects/${enc(subject)}/versions/latest?verbose=true`,
        schemaBody(schema),
      )) as typeof body;
    } catch (err) {
      if (err instanceof RegistryHttpError && err.status === 404) return { compatible: true, messages: [] };
      throw err;
    }
    const messages = Array.isArray(body.messages) ? body.messages.map(String) : [];
    return { compatible: body.is_compatible === true, messages };
  }

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const what = `${method} ${path}`;
    let res: Response;
    try {
      res = await fetch(`${this.config.url}${path}`, {
        method,
        headers: {
          "content-type": "application/vnd.schemaregistry.v1+json",
          accept: "application/vnd.schemaregistry.v1+json, application/json",
          ...(this.auth ? { authorization: this.auth } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      throw new Error(`schema registry at ${this.config.url} did not answer ${what}: ${(err as Error).message}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = (json ?? {}) as { error_code?: number; message?: string; detail?: string; title?: string };
      throw new RegistryHttpError(res.status, e.error_code, e.message ?? e.detail ?? e.title ?? (text.slice(0, 500) || res.statusText), what);
    }
    if (json === undefined) throw new Error(`schema registry answered ${what} with something that is not JSON: ${text.slice(0, 200)}`);
    return json;
  }
}

const enc = encodeURIComponent;

const schemaBody = (schema: JsonSchema) => ({ schemaType: "JSON", schema: JSON.stringify(schema) });
