/**
 * @module cli/schemas
 * `kitsune schemas push|check|print`: the api's start-up publication, on its own. `check`
 * registers nothing, so the CI of whoever edits a SQL file can ask the registry first.
 * Exit codes: 0 fine, 1 refused (or the registry failed), 2 usage or configuration.
 */
import { loadRegistry } from "../db/registry.ts";
import { allSubjects, publishAll, SchemaRefusedError } from "../schema/publish.ts";
import { toolConfig } from "./tool-config.ts";

const USAGE = `usage: kitsune schemas push|check|print

  push    register every command version's schema (subject <SCHEMA_SUBJECT_PREFIX><command>.v<version>)
          and every topic's envelope (<topic>-value), setting each subject's compatibility level
  check   ask the registry whether each schema would be accepted; registers nothing
  print   print the subjects and their schemas as JSON (no registry needed)

Needs SCHEMA_REGISTRY_URL (except print); see README: Schema registry.`;

export async function schemasCommand(args: string[]): Promise<number> {
  const [action] = args;
  if (!action || args.includes("--help") || args.includes("-h") || !["push", "check", "print"].includes(action)) {
    console.log(USAGE);
    return action === undefined || args.includes("--help") || args.includes("-h") ? 0 : 2;
  }
  const config = toolConfig();
  const defs = (await loadRegistry(config.sqlDir)).list();
  const registry = config.schemaRegistry;
  if (action === "print") {
    const subjects = allSubjects(registry?.subjectPrefix ?? "kitsune.", defs, config.topics);
    console.log(JSON.stringify(subjects.map(({ subject, source, schema }) => ({ subject, source, schema })), null, 2));
    return 0;
  }
  if (!registry) {
    console.error("kitsune schemas: SCHEMA_REGISTRY_URL is not set");
    return 2;
  }
  try {
    const { ids, changed } = await publishAll(registry, defs, config.topics, action as "push" | "check");
    if (action === "push") {
      for (const [subject, id] of [...ids].sort()) console.log(`${subject}  id ${id}${changed.includes(subject) ? "  (new version)" : ""}`);
    } else {
      for (const subject of [...ids.keys()].sort()) console.log(`${subject}  registered already (id ${ids.get(subject)})`);
      for (const subject of changed) console.log(`${subject}  compatible: push would register a new version`);
    }
    return 0;
  } catch (err) {
    if (err instanceof SchemaRefusedError) {
      console.error(`kitsune schemas ${action}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
