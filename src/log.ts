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

export const silentLogger: Logger = createLogger("silent");
