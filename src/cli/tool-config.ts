/**
 * @module cli/tool-config
 * Sub-commands read the same environment as the roles, but need no ROLE and serve no API.
 */
import { ConfigError, loadConfig, type Config } from "../config.ts";

export function toolConfig(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig({ ...env, ROLE: "all", AUTH_DISABLED: "true" });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`kitsune: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
}

/** `--name value` and `--flag` options after the sub-command's words. */
export function parseFlags(args: string[]): { words: string[]; flags: Record<string, string | true> } {
  const words: string[] = [];
  const flags: Record<string, string | true> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) {
      words.push(a);
      continue;
    }
    const [name, inline] = a.slice(2).split("=", 2) as [string, string | undefined];
    if (inline !== undefined) flags[name] = inline;
    else if (args[i + 1] !== undefined && !args[i + 1]!.startsWith("--")) flags[name] = args[++i]!;
    else flags[name] = true;
  }
  return { words, flags };
}
