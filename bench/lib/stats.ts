/** Small statistics helpers for benchmark figures. */

export function sorted(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

/** Quantile by linear interpolation on a sorted copy; NaN for an empty list. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = sorted(xs);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

export const median = (xs: readonly number[]) => quantile(xs, 0.5);
export const min = (xs: readonly number[]) => (xs.length ? Math.min(...xs) : Number.NaN);
export const max = (xs: readonly number[]) => (xs.length ? Math.max(...xs) : Number.NaN);

/** A number in about 3 significant digits: 123456 -> "123k", 0.0123 -> "0.0123". */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return "—";
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${(x / 1e3).toPrecision(3)}k`;
  if (a >= 100) return x.toFixed(0);
  return x.toPrecision(3);
}

/** "median [min–max]" of a list. */
export function spread(xs: readonly number[]): string {
  if (xs.length === 0) return "—";
  return `${fmt(median(xs))} [${fmt(min(xs))}–${fmt(max(xs))}]`;
}

/**
 * Keeps a uniform sample of at most `cap` values from a stream (reservoir sampling),
 * so that latency percentiles stay cheap to ship between processes.
 */
export class Reservoir {
  readonly values: number[] = [];
  private seen = 0;
  constructor(private readonly cap = 50_000) {}
  add(v: number): void {
    this.seen++;
    if (this.values.length < this.cap) {
      this.values.push(v);
      return;
    }
    const j = Math.floor(Math.random() * this.seen);
    if (j < this.cap) this.values[j] = v;
  }
}
