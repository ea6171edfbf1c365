/**
 * The benchmark suite: `npm run bench` runs every scenario and prints one table;
 * `npm run bench -- chat` runs one. A name that is not a scenario here runs
 * `bench/<name>.ts` (fuzz, churn, signin, startup...) when that file exists.
 *
 *   npm run bench [-- <scenario|script>...] [--reps 5] [--seconds 2.5] [--warmup 1] [--no-pin]
 *
 * Every server and load generator runs in its own process on 127.0.0.1; each scenario
 * runs every side --warmup times unrecorded (default 1), and more while its server's JIT
 * compilers stay busy (bench/lib/scenario.ts, `warmUp`), then repeats
 * its measurement --reps times, both sides back to back in alternating order.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { scenario as chat } from "./chat.ts";
import { scenario as fanout } from "./fanout.ts";
import { scenario as history } from "./history.ts";
import { benchOptions, cliOptions, machine, positionals } from "./lib/cli.ts";
import { BUN, placement, ROOT, setPinning } from "./lib/proc.ts";
import { passes, type Row, type Scenario } from "./lib/scenario.ts";
import { table } from "./lib/table.ts";
import { scenario as login } from "./login.ts";
import { scenario as memory } from "./memory.ts";
import { scenario as ping } from "./ping.ts";

const scenarios: Scenario[] = [chat, ping, fanout, history, login, memory];

const argv = process.argv.slice(2);
const names = positionals(argv);

if (argv.includes("--help") || argv.includes("-h")) {
  process.stdout.write(
    `usage: npm run bench [-- <name>...] [--reps N] [--seconds S] [--warmup N] [--no-pin]\nscenarios: ${scenarios.map((s) => s.name).join(", ")}\n` +
      `other names run bench/<name>.ts with the remaining arguments\n`,
  );
  process.exit(0);
}

// A script of its own (written by others): hand over the terminal and its exit code.
const first = names[0];
if (first && !scenarios.some((s) => s.name === first)) {
  const file = join(ROOT, "bench", `${first}.ts`);
  if (!/^[a-z0-9-]+$/.test(first) || !existsSync(file)) {
    process.stderr.write(`bench: no scenario or bench/${first}.ts (scenarios: ${scenarios.map((s) => s.name).join(", ")})\n`);
    process.exit(2);
  }
  const rest = argv.filter((a) => a !== first);
  const proc = Bun.spawn([BUN, file, ...rest], { cwd: ROOT, stdio: ["inherit", "inherit", "inherit"] });
  process.exit(await proc.exited);
}

const chosen = names.length ? scenarios.filter((s) => names.includes(s.name)) : scenarios;
const o = cliOptions(argv);
const opts = benchOptions(o);
opts.log(`Switchboard benchmarks on ${machine()}; at least ${o.warmup} unrecorded warm-up (more while a server's JIT is busy) and ${o.reps} recorded repetitions of ${o.seconds} s windows`);
const started = performance.now();
const rows: Row[] = [];
const placements: string[] = [];
const crashed: string[] = [];
for (const s of chosen) {
  setPinning(o.pin && s.pinned);
  placements.push(`${s.name}: ${placement()}`);
  opts.log(`${s.name}: ${s.description}; ${placement()}`);
  try {
    rows.push(...(await s.run(opts)));
  } catch (e) {
    opts.log(`${s.name}: failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    crashed.push(s.name);
    process.exitCode = 1;
  }
}
process.stdout.write(`\n${table(rows)}\n\n`);
const failed = rows.filter((r) => passes(r) === false).map((r) => `${r.scenario} ${r.unit}`);
process.stdout.write(
  `Medians of ${o.reps} repetitions [min–max]; ratio = Switchboard / raw, pair by pair. ` +
    `${machine()}. ${((performance.now() - started) / 1000).toFixed(0)} s.\n` +
    `Placement (--no-pin: none pinned): ${placements.join("; ")}.\n` +
    (crashed.length ? `Scenarios that failed to run (no figures): ${crashed.join(", ")}\n` : "") +
    (failed.length ? `Targets missed: ${failed.join(", ")}\n` : crashed.length ? "The targets of the scenarios that ran were met.\n" : "All targets met.\n"),
);
