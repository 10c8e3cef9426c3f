/**
 * @module schema/publish
 * Publishing (or only checking) Kitsune's subjects at start-up and from `kitsune schemas push|check`.
 * Every subject gets its compatibility level, then its schema; what the registry refuses is
 * collected, so one `SchemaRefusedError` lists every refused subject with its SQL file, the
 * registry's reason and what changed.
 *
 * The ids returned are all a producer needs afterwards: nothing here runs per message.
 */
import type { Compatibility, SchemaRegistryConfig } from "../config.ts";
import type { CommandDef } from "../contracts.ts";
import { RegistryHttpError, SchemaRegistryClient } from "./client.ts";
import type { EventSchemas } from "../api/events.ts";
import { commandSubject, commandSubjects, envelopeSubjects, valueSubject, type JsonSchema, type Subject } from "./subjects.ts";
import { valueSchema, type ValueSchema } from "./wire.ts";

export interface Refusal {
  subject: string;
  /** The SQL file of a command version, or `topic <name>` for an envelope. */
  source: string;
  compatibility: Compatibility;
  /** The registry's own words (or, for `check`, that it found the schema incompatible). */
  reason: string;
  /** What differs from the latest registered version, property by property. */
  changes: string[];
  /** What the person should do. */
  advice: string;
}

export class SchemaRefusedError extends Error {
  constructor(
    readonly refusals: Refusal[],
    readonly registryUrl: string,
  ) {
    super(
      `schema registry ${registryUrl} refused ${refusals.length} schema${refusals.length === 1 ? "" : "s"}:\n` +
        refusals
          .map(
            (r) =>
              `  - ${r.source}: subject ${r.subject} (${r.compatibility}): ${r.reason}\n` +
              r.changes.map((c) => `      change: ${c}\n`).join("") +
              `      ${r.advice}`,
          )
          .join("\n"),
    );
    this.name = "SchemaRefusedError";
  }
}

export interface Published {
  /** Schema id by subject. */
  ids: Map<string, number>;
  /** Subjects that got a new version (push) or would (check). */
  changed: string[];
}

type Mode = "push" | "check";

/** The subjects of every command version and of the three topics' envelopes. */
export function allSubjects(subjectPrefix: string, defs: CommandDef[], topics: { events: string; logs: string; results: string }): Subject[] {
  return [...commandSubjects(defs, subjectPrefix), ...envelopeSubjects(topics)];
}

/**
 * `push`: sets each subject's compatibility and registers its schema (a schema registered already
 * keeps its id). `check`: changes nothing, and says which subjects would take a new version.
 * Throws `SchemaRefusedError` listing every subject whose schema the registry refuses.
 */
export async function publishSubjects(
  config: SchemaRegistryConfig,
  subjects: Subject[],
  { mode = "push", defs = [], client = new SchemaRegistryClient(config) }: { mode?: Mode; defs?: CommandDef[]; client?: SchemaRegistryClient } = {},
): Promise<Published> {
  const ids = new Map<string, number>();
  const changed: string[] = [];
  const refusals: Refusal[] = [];
  await Promise.all(
    subjects.map(async (s) => {
      const compatibility = s.kind === "command" ? config.compatibility.commands : config.compatibility.events;
      const known = await client.lookup(s.subject, s.schema);
      if (known !== undefined) {
        ids.set(s.subject, known);
        // NOTE: the level is set even for a known schema, so a changed SCHEMA_COMPATIBILITY_* takes effect.
        if (mode === "push") await client.setCompatibility(s.subject, compatibility);
        return;
      }
      let reason: string | undefined;
      if (mode === "check") {
        const verdict = await client.check(s.subject, s.schema);
        if (verdict.compatible) changed.push(s.subject);
        else reason = verdict.messages.length ? verdict.messages.join("; ") : "incompatible with the latest registered version";
      } else {
        await client.setCompatibility(s.subject, compatibility);
        try {
          ids.set(s.subject, await client.register(s.subject, s.schema));
          changed.push(s.subject);
        } catch (err) {
          if (!(err instanceof RegistryHttpError) || (err.status !== 409 && err.status !== 422)) throw err;
          reason = registryReason(err.registryMessage);
        }
      }
      if (reason === undefined) return;
      const latest = await client.latest(s.subject);
      refusals.push({
        subject: s.subject,
        source: s.source,
        compatibility,
        reason,
        changes: latest ? describeChanges(latest.schema, s.schema) : [],
        advice: advice(s, defs, config.subjectPrefix),
      });
    }),
  );
  if (refusals.length) {
    refusals.sort((a, b) => a.source.localeCompare(b.source));
    throw new SchemaRefusedError(refusals, config.url);
  }
  return { ids, changed: changed.sort() };
}

/** Pushes (or checks) every command version and envelope; the api's start-up and the CLI. */
export function publishAll(
  config: SchemaRegistryConfig,
  defs: CommandDef[],
  topics: { events: string; logs: string; results: string },
  mode: Mode = "push",
): Promise<Published> {
  return publishSubjects(config, allSubjects(config.subjectPrefix, defs, topics), { mode, defs });
}

/** Apicurio prefixes its reason with a Java class name; the rest is what a person needs. */
function registryReason(message: string): string {
  return message.replace(/^[\w.$]+Exception:\s*/, "");
}

function advice(s: Subject, defs: CommandDef[], prefix: string): string {
  if (s.kind === "event") {
    return "An event envelope may only change as its compatibility level allows (e.g. a new optional field under BACKWARD); or raise SCHEMA_COMPATIBILITY_EVENTS with the topic's consumers' owners.";
  }
  const def = defs.find((d) => commandSubject(d, prefix) === s.subject);
  if (!def) return "A published command version is fixed: put the change in a new version.";
  const next = Math.max(...defs.filter((d) => d.command === def.command).map((d) => Number(d.version))) + 1;
  const file = def.file.replace(/[^\\/]*$/, `${def.command}.v${next}.sql`);
  return `Producers and consumers rely on ${def.command} v${def.version} as published: undo the edit of ${def.file} and put the change in a new version, ${file}.`;
}

type Props = Record<string, JsonSchema>;

/** Property-level differences between two object schemas, in words. */
export function describeChanges(before: JsonSchema, after: JsonSchema): string[] {
  const out: string[] = [];
  const oldProps = (before.properties ?? {}) as Props;
  const newProps = (after.properties ?? {}) as Props;
  const oldRequired = new Set((before.required ?? []) as string[]);
  const newRequired = new Set((after.required ?? []) as string[]);
  for (const name of Object.keys(newProps)) {
    if (!(name in oldProps)) out.push(`"${name}" added${newRequired.has(name) ? " (required)" : " (optional)"}`);
  }
  for (const name of Object.keys(oldProps)) {
    if (!(name in newProps)) out.push(`"${name}" removed`);
    else if (JSON.stringify(oldProps[name]) !== JSON.stringify(newProps[name])) {
      out.push(`"${name}" changed from ${JSON.stringify(oldProps[name])} to ${JSON.stringify(newProps[name])}`);
    }
  }
  for (const name of newRequired) if (name in oldProps && !oldRequired.has(name)) out.push(`"${name}" became required`);
  for (const name of oldRequired) if (name in newProps && !newRequired.has(name)) out.push(`"${name}" became optional`);
  if ((before.additionalProperties === false) !== (after.additionalProperties === false)) {
    out.push(after.additionalProperties === false ? "closed to other properties" : "opened to other properties");
  }
  return out;
}

/**
 * The api's start-up: pushes every command version and envelope, and returns the ids its events
 * carry. Throws `SchemaRefusedError` when the registry refuses an edit.
 */
export async function apiEventSchemas(
  config: SchemaRegistryConfig,
  defs: CommandDef[],
  topics: { events: string; logs: string; results: string },
): Promise<EventSchemas & { published: Published }> {
  const published = await publishAll(config, defs, topics, "push");
  const id = (subject: string) => {
    const found = published.ids.get(subject);
    if (found === undefined) throw new Error(`schema registry gave no id for subject ${subject}`);
    return found;
  };
  return {
    events: valueSchema(id(valueSubject(topics.events)), config.wireFormat),
    logs: valueSchema(id(valueSubject(topics.logs)), config.wireFormat),
    payloads: new Map(defs.map((def) => [def, String(id(commandSubject(def, config.subjectPrefix)))])),
    published,
  };
}

/** The db-worker's start-up: pushes the db-results envelope, and returns what its results carry. */
export async function resultSchema(config: SchemaRegistryConfig, topics: { events: string; logs: string; results: string }): Promise<ValueSchema> {
  const subject = envelopeSubjects(topics).find((s) => s.subject === valueSubject(topics.results))!;
  const { ids } = await publishSubjects(config, [subject]);
  return valueSchema(ids.get(subject.subject)!, config.wireFormat);
}
