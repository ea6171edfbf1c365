/** The one results table: medians with spread, pairwise ratio, target, pass/fail. */
import { passes, type Row, type Target } from "./scenario.ts";
import { fmt, median, spread } from "./stats.ts";

function targetText(r: Row): string {
  if (!r.target) return "";
  const what = r.target.of === "ratio" ? "" : ` ${r.unit.split(" ")[0]}`;
  return `${r.target.op} ${r.target.value}${r.target.of === "ratio" ? "x" : what}`;
}

/**
 * The median ratio with three decimals, or more when three would put it on the other
 * side of its target (0.8996 is not "0.900x" against ">= 0.9x": it misses).
 */
export function ratioFigure(x: number, target?: Target): string {
  let digits = 3;
  if (target?.of === "ratio") {
    const holds = (v: number) => (target.op === ">=" ? v >= target.value : v <= target.value);
    while (digits < 8 && holds(Number(x.toFixed(digits))) !== holds(x)) digits++;
  }
  return x.toFixed(digits);
}

export function table(rows: Row[]): string {
  const head = ["scenario", "unit", "Switchboard", "raw baseline", "socket.io", "ratio SB/raw", "target", "result"];
  const body = rows.map((r) => {
    const ok = passes(r);
    return [
      r.scenario,
      r.unit,
      spread(r.switchboard),
      spread(r.raw),
      r.sio ? spread(r.sio) : "",
      r.ratios.length ? `${ratioFigure(median(r.ratios), r.target)}x [${fmt(Math.min(...r.ratios))}–${fmt(Math.max(...r.ratios))}]` : "",
      targetText(r),
      ok === undefined ? "" : ok ? "pass" : "FAIL",
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(head), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n");
}
