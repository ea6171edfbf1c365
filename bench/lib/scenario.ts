/** What a benchmark scenario is, and the pair-by-pair repetition loop they share. */
import { median, quantile } from "./stats.ts";

export type SideName = "switchboard" | "raw" | "socket.io";

export interface BenchOptions {
  /** Repetitions; each runs every side once, back to back, in alternating order. */
  reps: number;
  /**
   * Unrecorded runs of every side before the repetitions, at least: a side whose server's
   * JIT compilers were still busy in its last one (see `warmUp`) runs again. The first
   * windows pay for compilation: a Switchboard server's JIT threads used 17 µs of CPU
   * per message in its first fan-out window and still recompiled in its third (its
   * request mix changes at each window's sign-ins and joins); a raw server has far less
   * code to compile.
   */
  warmup: number;
  /** Length of one timed measurement window. */
  durationMs: number;
  log(line: string): void;
}

export interface Target {
  /** "ratio": Switchboard / raw, pair by pair; "value": Switchboard's own figure. */
  of: "ratio" | "value";
  op: ">=" | "<=";
  value: number;
}

/** One line of the results table. */
export interface Row {
  scenario: string;
  unit: string;
  switchboard: number[];
  raw: number[];
  sio?: number[];
  /** Switchboard / raw for each repetition. */
  ratios: number[];
  target?: Target;
}

export interface Scenario {
  name: string;
  description: string;
  /**
   * Servers on CPU 0 and load generators on the others (see `setPinning`): for the
   * scenarios whose load one core can generate, so that the server is the limit. Ping
   * and chat need every core for their load and are left to the scheduler.
   */
  pinned: boolean;
  run(opts: BenchOptions): Promise<Row[]>;
}

/** One measurement of one side: named figures (e.g. msgs/s, p50). */
export type Figures = Record<string, number>;

/** The figure for the CPU the server's JIT compilers used in a window, as a percentage of one core. */
export const JIT_FIGURE = "jit %";
/** A side is warm once its server's JIT compilers used less than this (percent of one core) in a window. */
export const JIT_SETTLED_PCT = 1;
/** Warm-up runs of one side, at most, past `warmup`, however busy its JIT stays. */
export const EXTRA_WARMUP = 4;

/**
 * Runs `side` unrecorded `min` times, then again while its server's JIT compilers were
 * busier than JIT_SETTLED_PCT in the last run (at most EXTRA_WARMUP more): measuring a
 * server still compiling measures its compiler. Returns the JIT figure of each run.
 */
async function warmUp(side: () => Promise<Figures>, min: number): Promise<number[]> {
  const jit: number[] = [];
  for (let i = 0; i < min + EXTRA_WARMUP; i++) {
    const j = (await side())[JIT_FIGURE] ?? 0;
    jit.push(j);
    if (i + 1 >= min && j < JIT_SETTLED_PCT) break;
  }
  return jit;
}

/**
 * Warms every side up (`warmUp`: at least `warmup` unrecorded runs, more while its JIT
 * is busy), then runs `reps` repetitions; in each, every side is measured back to back,
 * in forward order on even repetitions and reverse order on odd ones, so that neither
 * side always runs on a warmer (or more tired) machine.
 */
export async function pairwise(
  opts: BenchOptions,
  label: string,
  sides: Partial<Record<SideName, () => Promise<Figures>>>,
): Promise<Record<SideName, Figures[]>> {
  const names = Object.keys(sides) as SideName[];
  const out: Record<SideName, Figures[]> = { switchboard: [], raw: [], "socket.io": [] };
  if (opts.warmup > 0) {
    const warm: string[] = [];
    for (const name of names) {
      const jit = await warmUp(sides[name]!, opts.warmup);
      warm.push(`${name} ${jit.length} (jit % ${jit.map((j) => j.toFixed(1)).join(", ")})`);
    }
    opts.log(`  ${label} warm-up runs, not recorded: ${warm.join(" | ")}`);
  }
  for (let rep = 0; rep < opts.reps; rep++) {
    const order = rep % 2 === 0 ? names : [...names].reverse();
    const got: string[] = [];
    for (const name of order) {
      const figures = await sides[name]!();
      out[name].push(figures);
      got.push(`${name} ${Object.entries(figures).map(([k, v]) => `${k}=${v.toFixed(k.includes("/s") ? 0 : 2)}`).join(" ")}`);
    }
    opts.log(`  ${label} rep ${rep + 1}/${opts.reps}: ${got.join(" | ")}`);
  }
  return out;
}

/** Builds a table row from one figure of each side's repetitions. */
export function row(
  scenario: string,
  unit: string,
  results: Record<SideName, Figures[]>,
  key: string,
  target?: Target,
): Row {
  const pick = (fs: Figures[]) => fs.map((f) => f[key] ?? Number.NaN);
  const sb = pick(results.switchboard);
  const raw = pick(results.raw);
  const sio = results["socket.io"].length ? pick(results["socket.io"]) : undefined;
  return { scenario, unit, switchboard: sb, raw, ...(sio ? { sio } : {}), ratios: sb.map((v, i) => v / (raw[i] ?? Number.NaN)), ...(target ? { target } : {}) };
}

export function passes(r: Row): boolean | undefined {
  if (!r.target) return undefined;
  const x = r.target.of === "ratio" ? median(r.ratios) : median(r.switchboard);
  return r.target.op === ">=" ? x >= r.target.value : x <= r.target.value;
}

/** p50 and p99 of a latency sample, in ms. */
export function latencyFigures(lat: number[]): Figures {
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) };
}

export function deliveryFigures(lat: number[]): Figures {
  return { "delivery p50": quantile(lat, 0.5), "delivery p99": quantile(lat, 0.99) };
}
