/** The benchmark's repetition loop (warm-up until the JIT settles, then alternating pairs) and its results table. */
import { describe, expect, test } from "bun:test";
import { cpuMs, jitMs } from "../../bench/lib/proc.ts";
import { EXTRA_WARMUP, JIT_FIGURE, JIT_SETTLED_PCT, pairwise, type BenchOptions, type Figures, type Row } from "../../bench/lib/scenario.ts";
import { ratioFigure, table } from "../../bench/lib/table.ts";

/** A side whose runs report these JIT figures in turn (then 0), recording each call. */
function side(name: string, jit: number[], calls: string[]): () => Promise<Figures> {
  let n = 0;
  return async () => {
    calls.push(name);
    const j = jit[n] ?? 0;
    n++;
    return { "msgs/s": n, [JIT_FIGURE]: j };
  };
}

function options(warmup: number, reps: number, lines: string[]): BenchOptions {
  return { reps, warmup, durationMs: 1, log: (l) => lines.push(l) };
}

describe("pairwise warm-up", () => {
  test("a side runs again while its JIT is busy, and no longer once it settles", async () => {
    const calls: string[] = [];
    const lines: string[] = [];
    const busy = JIT_SETTLED_PCT * 5;
    const out = await pairwise(options(1, 2, lines), "t", {
      switchboard: side("sb", [busy, busy, JIT_SETTLED_PCT - 0.1], calls),
      raw: side("raw", [JIT_SETTLED_PCT - 0.1], calls),
    });
    // sb: 3 warm-ups (busy, busy, settled); raw: 1; then 2 reps, forward then reverse.
    expect(calls).toEqual(["sb", "sb", "sb", "raw", "sb", "raw", "raw", "sb"]);
    // The recorded figures are the runs after the warm-up ones.
    expect(out.switchboard.map((f) => f["msgs/s"])).toEqual([4, 5]);
    expect(out.raw.map((f) => f["msgs/s"])).toEqual([2, 3]);
    expect(lines[0]).toContain("switchboard 3");
    expect(lines[0]).toContain("raw 1");
  });

  test("a JIT exactly at the threshold is still busy", async () => {
    const calls: string[] = [];
    await pairwise(options(1, 1, []), "t", { switchboard: side("sb", [JIT_SETTLED_PCT, 0], calls) });
    expect(calls).toEqual(["sb", "sb", "sb"]);
  });

  test("the minimum holds even when the JIT is quiet from the start", async () => {
    const calls: string[] = [];
    await pairwise(options(3, 1, []), "t", { switchboard: side("sb", [], calls) });
    expect(calls).toEqual(["sb", "sb", "sb", "sb"]);
  });

  test("a JIT that never settles stops warming after EXTRA_WARMUP more runs", async () => {
    const calls: string[] = [];
    const forever = Array.from({ length: 100 }, () => 50);
    await pairwise(options(2, 1, []), "t", { switchboard: side("sb", forever, calls) });
    expect(calls).toHaveLength(2 + EXTRA_WARMUP + 1);
  });

  test("--warmup 0 runs no warm-up at all, whatever the JIT", async () => {
    const calls: string[] = [];
    const lines: string[] = [];
    await pairwise(options(0, 1, lines), "t", { switchboard: side("sb", [50], calls) });
    expect(calls).toEqual(["sb"]);
    expect(lines.some((l) => l.includes("warm-up"))).toBe(false);
  });
});

describe("jitMs", () => {
  test("counts this process's JIT threads, within its whole CPU time; a gone process has none", () => {
    const jit = jitMs(process.pid);
    expect(Number.isFinite(jit)).toBe(true);
    expect(jit).toBeGreaterThanOrEqual(0);
    expect(jit).toBeLessThanOrEqual(cpuMs(process.pid));
    expect(jitMs(2 ** 22 + 1)).toBe(0); // above the kernel's pid_max limit: never a process
  });
});

describe("the results table", () => {
  const ratioRow = (ratios: number[]): Row => ({
    scenario: "fanout",
    unit: "deliveries/s",
    switchboard: ratios,
    raw: ratios.map(() => 1),
    ratios,
    target: { of: "ratio", op: ">=", value: 0.9 },
  });

  test("a ratio that misses its target by less than the third decimal does not print as meeting it", () => {
    const t = table([ratioRow([0.8996, 0.8, 1.1])]);
    expect(t).toContain("0.8996x");
    expect(t).toContain("FAIL");
    expect(ratioFigure(0.89999, { of: "ratio", op: ">=", value: 0.9 })).toBe("0.89999");
  });

  test("otherwise three decimals, as before", () => {
    const t = table([ratioRow([0.9004, 0.8, 1.1])]);
    expect(t).toContain("0.900x");
    expect(t).toContain("pass");
    expect(ratioFigure(1.0004, { of: "ratio", op: "<=", value: 1 })).toBe("1.0004");
    expect(ratioFigure(0.8996)).toBe("0.900");
  });
});
