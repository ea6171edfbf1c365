import type { Clock } from "../../clock.ts";

/**
 * Counts failures per key in a sliding window; `retryAfter` says how long until the
 * key may try again (0 when it may now). Memory is bounded: keys whose failures all
 * left the window are dropped as they are touched, and all of them on `sweep`.
 */
export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly clock: Clock,
  ) {}

  private live(key: string): number[] {
    const list = this.failures.get(key);
    if (!list) return [];
    const cutoff = this.clock.now() - this.windowMs;
    while (list.length > 0 && list[0]! <= cutoff) list.shift();
    if (list.length === 0) this.failures.delete(key);
    return list;
  }

  retryAfter(key: string): number {
    const list = this.live(key);
    if (list.length < this.limit) return 0;
    return Math.max(1, list[list.length - this.limit]! + this.windowMs - this.clock.now());
  }

  fail(key: string): void {
    const list = this.live(key);
    list.push(this.clock.now());
    // Only the newest `limit` failures decide when the key may retry.
    if (list.length > this.limit) list.shift();
    this.failures.set(key, list);
  }

  sweep(): void {
    for (const key of [...this.failures.keys()]) this.live(key);
  }

  get size(): number {
    return this.failures.size;
  }
}
