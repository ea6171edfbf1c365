/** Command-line options shared by the bench scripts, and running one scenario alone. */
import { cpus, totalmem } from "node:os";
import { placement, setPinning } from "./proc.ts";
import type { BenchOptions, Row, Scenario } from "./scenario.ts";
import { table } from "./table.ts";

export interface CliOptions {
  reps: number;
  /** Servers on the first CPU, load generators on the others (`--no-pin`: off). */
  pin: boolean;
  seconds: number;
  warmup: number;
  int(name: string, fallback: number): number;
}

/** Flags that take no value. */
const SWITCHES = ["--no-pin", "--no-gate"];
/** Flags for which 0 makes sense (none, or no pause). */
const ZERO_ALLOWED = ["warmup", "gap-us"];

/** The arguments that are neither flags nor a flag's value (scenario names, checkouts). */
export function positionals(argv: readonly string[]): string[] {
  const takesValue = (flag: string | undefined) =>
    flag !== undefined && flag.startsWith("--") && !flag.includes("=") && !SWITCHES.includes(flag);
  return argv.filter((a, i) => !a.startsWith("--") && !takesValue(argv[i - 1]));
}

/**
 * Reads `--name value` / `--name=value` flags; --reps (default 5), --seconds (default
 * 2.5), --warmup (default 1, 0 for none), and the switch --no-pin.
 */
export function cliOptions(argv: readonly string[]): CliOptions {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--") || SWITCHES.includes(a)) continue;
    const eq = a.indexOf("=");
    if (eq > 0) values.set(a.slice(2, eq), a.slice(eq + 1));
    else values.set(a.slice(2), argv[++i] ?? "");
  }
  const num = (name: string, fallback: number) => {
    const v = values.get(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !ZERO_ALLOWED.includes(name))) {
      throw new Error(`--${name}: expected a positive number, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  return {
    reps: Math.round(num("reps", 5)),
    pin: !argv.includes("--no-pin"),
    seconds: num("seconds", 2.5),
    warmup: Math.round(num("warmup", 1)),
    int: (name, fb) => Math.round(num(name, fb)),
  };
}

export function benchOptions(o: CliOptions): BenchOptions {
  return { reps: o.reps, warmup: o.warmup, durationMs: Math.round(o.seconds * 1000), log: (line) => process.stderr.write(line + "\n") };
}

export function machine(): string {
  return `${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, bun ${Bun.version}`;
}

/** Runs one scenario and prints its rows as the table. */
export async function runAlone(scenario: Scenario, o: CliOptions): Promise<Row[]> {
  const opts = benchOptions(o);
  setPinning(o.pin && scenario.pinned);
  opts.log(`${scenario.name}: ${scenario.description}; ${placement()}; ${o.reps} reps of ${o.seconds} s; ${machine()}`);
  const rows = await scenario.run(opts);
  process.stdout.write(table(rows) + "\n");
  return rows;
}
