/** Bounds of the reconnection delay. */
export interface Backoff {
  /** The ceiling of the first retry's delay; each further attempt doubles it. */
  minMs: number;
  /** The largest ceiling. */
  maxMs: number;
}

export const defaultBackoff: Backoff = { minMs: 500, maxMs: 15_000 };

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
