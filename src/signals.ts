/**
 * The stop signals (SIGTERM, SIGINT, SIGHUP) from the process's first module on.
 * main.ts imports this first, so that a signal sent while the server starts (loading
 * its modules, opening and migrating the database: 100–500 ms on a busy host) is held
 * until the server can stop gracefully, instead of ending the process by the default
 * action (exit 143, no `stopped` line). A second one while starting exits 1 at once,
 * as a second one does while stopping. Only the runtime's own start, before any module
 * runs, is left to the default action.
 *
 * @example
 * onStopSignal((signal) => void stop(signal)); // serve: once listening
 * defaultStopSignals(); // migrate, backup: a signal ends them as it would any command
 */
export const STOP_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

let held: StopSignal | null = null;
const holders = new Map<StopSignal, () => void>();
for (const signal of STOP_SIGNALS) {
  const hold = () => {
    if (held) process.exit(1);
    held = signal;
  };
  holders.set(signal, hold);
  process.on(signal, hold);
}

function release(): StopSignal | null {
  for (const [signal, hold] of holders) process.off(signal, hold);
  holders.clear();
  return held;
}

/** From now on `stop` handles every stop signal; one held while starting is passed to it at once. */
export function onStopSignal(stop: (signal: StopSignal) => void): void {
  // The new listeners first: with none at all, even for a moment, the runtime restores
  // the default action, and a signal then ends the process (exit 143). Seen once, on a
  // signal sent about when the server began to listen.
  for (const signal of STOP_SIGNALS) process.on(signal, () => stop(signal));
  const pending = release();
  if (pending) stop(pending);
}

/** The default action again (for commands that do not serve); a signal held is acted on now. */
export function defaultStopSignals(): void {
  const pending = release();
  if (pending) process.kill(process.pid, pending);
}
