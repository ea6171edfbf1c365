export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

/** Structured JSON logs, one line per event. Callers never pass tokens or passwords. */
export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

function serializeError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const out: Record<string, unknown> = { name: e.name, message: e.message, stack: e.stack };
  if ("code" in e) out.code = (e as { code: unknown }).code;
  if (e.cause !== undefined) out.cause = serializeError(e.cause);
  return out;
}

export function createLogger(
  level: LogLevel,
  write: (line: string) => void = (line) => process.stderr.write(line + "\n"),
  now: () => number = Date.now,
): Logger {
  const at = (l: LogLevel) => (event: string, fields: Record<string, unknown> = {}) => {
    if (rank[l] < rank[level]) return;
    const entry: Record<string, unknown> = { time: new Date(now()).toISOString(), level: l, event };
    for (const [k, v] of Object.entries(fields)) entry[k] = k === "err" ? serializeError(v) : v;
    write(JSON.stringify(entry));
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/**
 * `log` at most once per `ms`: the entries dropped in between are counted in the next
 * one's `suppressed`. For errors that come in storms (a full disk fails every send and
 * every checkpoint: 696 lines with stacks in 4 s from 5 clients).
 */
export function throttled(
  log: (event: string, fields?: Record<string, unknown>) => void,
  ms: number,
  now: () => number = () => performance.now(),
): (event: string, fields?: Record<string, unknown>) => void {
  let last = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  return (event, fields = {}) => {
    const t = now();
    if (t - last < ms) {
      suppressed++;
      return;
    }
    last = t;
    log(event, suppressed > 0 ? { ...fields, suppressed } : fields);
    suppressed = 0;
  };
}

export const silentLogger: Logger = createLogger("silent");
