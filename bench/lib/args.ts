/**
 * @module bench/lib/args
 * `--name value`, `--name=value` and bare `--flag` options of the bench scripts.
 *
 * @example
 * const a = parseArgs(["--seconds", "5", "--full"]);
 * a.number("seconds", 30); // 5
 * a.flag("full");          // true
 */
export interface Args {
  string(name: string, fallback: string): string;
  number(name: string, fallback: number): number;
  /** A number that must be greater than zero (counts, sizes). */
  positive(name: string, fallback: number): number;
  /** Comma-separated numbers, e.g. `--rates 1000,5000`. */
  numbers(name: string, fallback: number[]): number[];
  flag(name: string): boolean;
  has(name: string): boolean;
}

export function parseArgs(argv: string[]): Args {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${JSON.stringify(a)}`);
    const eq = a.indexOf("=");
    if (eq > 0) values.set(a.slice(2, eq), a.slice(eq + 1));
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--")) values.set(a.slice(2), argv[++i]!);
    else values.set(a.slice(2), "true");
  }
  const number = (name: string, fallback: number) => {
    const v = values.get(name);
    if (v === undefined) return fallback;
    const n = Number(v.replaceAll("_", ""));
    if (!Number.isFinite(n)) throw new Error(`--${name} expects a number, got ${JSON.stringify(v)}`);
    return n;
  };
  return {
    string: (name, fallback) => values.get(name) ?? fallback,
    number,
    positive: (name, fallback) => {
      const n = number(name, fallback);
      if (n <= 0) throw new Error(`--${name} needs a positive number, got ${JSON.stringify(values.get(name))}`);
      return n;
    },
    numbers: (name, fallback) => {
      const v = values.get(name);
      if (v === undefined) return fallback;
      if (v === "" || v === "none") return [];
      return v.split(",").map((s) => {
        const n = Number(s.trim().replaceAll("_", ""));
        if (!Number.isFinite(n)) throw new Error(`--${name} expects comma-separated numbers, got ${JSON.stringify(v)}`);
        return n;
      });
    },
    flag: (name) => {
      const v = values.get(name);
      return v !== undefined && v !== "false" && v !== "0";
    },
    has: (name) => values.has(name),
  };
}
