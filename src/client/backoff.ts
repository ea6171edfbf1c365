/** Bounds of the reconnection delay. */
export interface Backoff {
  /** The ceiling of the first retry's delay; each further attempt doubles it. */
  minMs: number;
  /** The largest ceiling. */
  maxMs: number;
}

export const defaultBackoff: Backoff = { minMs: 500, maxMs: 15_000 };

/** `backoff`, if both bounds are finite and 0 < minMs <= maxMs; else a RangeError. */
export function checkBackoff(backoff: Backoff): Backoff {
  const { minMs, maxMs } = backoff;
  if (!(minMs > 0 && maxMs >= minMs && Number.isFinite(maxMs))) {
    throw new RangeError(`createClient: backoff: expected 0 < minMs <= maxMs, both in milliseconds, got ${JSON.stringify({ minMs, maxMs })}`);
  }
  return backoff;
}

/**
 * Exponential backoff with full jitter: a uniform delay in
 * `[0, min(maxMs, minMs * 2^attempt))`, so that clients dropped together by a restart
 * do not come back together.
 *
 * @example
 * backoffDelay(0, { minMs: 500, maxMs: 15_000 }); // somewhere in [0, 500)
 * backoffDelay(10, { minMs: 500, maxMs: 15_000 }); // somewhere in [0, 15000)
 */
export function backoffDelay(attempt: number, backoff: Backoff, random: () => number = Math.random): number {
  const ceiling = Math.min(backoff.maxMs, backoff.minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.max(0, Math.min(1, random())) * ceiling);
}
