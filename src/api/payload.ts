/**
 * @module api/payload
 * The api's view of a command's payload schema. The schema itself comes from `db/payload`, the
 * same one the db-worker binds with, so the api never accepts a payload the worker would refuse
 * (or the other way round); this module only caches it per definition, since the api checks every
 * request against it and the registry does not change while the process runs.
 *
 * @example
 * ```ts
 * const result = v.safeParse(commandPayloadSchema(def), body.payload, { abortEarly: false });
 * ```
 */
import type { CommandDef } from "../contracts.ts";
import { payloadSchema } from "../db/payload.ts";

export type PayloadSchema = ReturnType<typeof payloadSchema>;

const cache = new WeakMap<CommandDef, PayloadSchema>();

/** The strict object schema of `def`'s payload: every parameter required, no other field. */
export function commandPayloadSchema(def: CommandDef): PayloadSchema {
  let schema = cache.get(def);
  if (!schema) {
    schema = payloadSchema(def);
    cache.set(def, schema);
  }
  return schema;
}
