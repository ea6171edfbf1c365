/**
 * Timeouts the client accepts: a positive number of milliseconds, or `Infinity` for no
 * limit. `setTimeout` keeps at most 2^31 − 1 ms (about 24.8 days) and fires a longer
 * delay at once, so a longer one is no limit too.
 */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** `ms`, if it is a valid timeout for `name`; else a RangeError. */
export function checkTimeout(name: string, ms: number): number {
  if (!(ms > 0)) throw new RangeError(`${name}: expected a positive number of milliseconds (Infinity for no limit), got ${ms}`);
  return ms;
}

/** Calls `fn` after `ms` (at once if `ms` <= 0); never, when `ms` is past what `setTimeout` keeps. */
export function after(ms: number, fn: () => void): ReturnType<typeof setTimeout> | undefined {
  return ms > MAX_DELAY_MS ? undefined : setTimeout(fn, Math.max(0, ms));
}
