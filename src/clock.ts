/** Wall-clock time in Unix milliseconds; injected so that tests can move time. */
export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };
