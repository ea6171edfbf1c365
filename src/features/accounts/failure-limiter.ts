import type { Clock } from "../../clock.ts";

/** How long to wait when the limit is reached only by attempts still being checked. */
const IN_FLIGHT_RETRY_MS = 1000;

/**
 * Counts failures per key in a sliding window. An attempt is reserved with `begin`
 * before its password is hashed and settled with `end`, so that guesses sent in
 * parallel count against the limit while they are still being checked (otherwise a
 * burst would all pass the check before the first failure was recorded).
 * Memory is bounded: keys with no live failure and nothing in flight are dropped as
 * they are touched, and all of them on `sweep`.
 */
export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();
  private readonly inFlight = new Map<string, number>();

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

  /** How long until `key` may try again: 0 when it may now. */
  retryAfter(key: string): number {
    const list = this.live(key);
    if (list.length >= this.limit) {
      // The oldest of the newest `limit` failures leaves the window first.
      return Math.max(1, list[list.length - this.limit]! + this.windowMs - this.clock.now());
    }
    return list.length + (this.inFlight.get(key) ?? 0) >= this.limit ? IN_FLIGHT_RETRY_MS : 0;
  }

  /** Reserves an attempt: call `end` when it is decided. */
  begin(key: string): void {
    this.inFlight.set(key, (this.inFlight.get(key) ?? 0) + 1);
  }

  end(key: string, failed: boolean): void {
    const n = (this.inFlight.get(key) ?? 1) - 1;
    if (n > 0) this.inFlight.set(key, n);
    else this.inFlight.delete(key);
    if (!failed) return;
    const list = this.live(key);
    list.push(this.clock.now());
    // Only the newest `limit` failures decide when the key may retry.
    if (list.length > this.limit) list.shift();
    this.failures.set(key, list);
  }

  sweep(): void {
    for (const key of [...this.failures.keys()]) this.live(key);
  }

  /** Keys held (with live failures or attempts in flight). */
  get size(): number {
    return new Set([...this.failures.keys(), ...this.inFlight.keys()]).size;
  }
}
