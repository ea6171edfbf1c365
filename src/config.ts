import { availableParallelism } from "node:os";
import { z } from "zod";
import { TrustedProxies } from "./ws/client-address.ts";

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .regex(/^\d+$/, "must be a whole number")
    .transform(Number)
    .pipe(z.int().min(min).max(max));
const num = (min: number) =>
  z
    .string()
    .regex(/^\d+(\.\d+)?$/, "must be a number")
    .transform(Number)
    .pipe(z.number().min(min));

/**
 * Every setting: an environment variable, also accepted as a command-line flag
 * (`PORT=9000` or `--port 9000` / `--port=9000`). Flags win over the environment.
 */
export const settings = {
  PORT: { schema: int(0, 65535), default: "8081", help: "TCP port to listen on (0 picks a free one)" },
  HOST: { schema: z.string().min(1), default: "0.0.0.0", help: "address to bind" },
  DB_PATH: { schema: z.string().min(1), default: "./data/switchboard.db", help: "SQLite file (folder created), or :memory:" },
  DB_SYNC: { schema: z.enum(["NORMAL", "FULL"]), default: "NORMAL", help: "synchronous mode, NORMAL or FULL: NORMAL survives a process crash, FULL also power loss" },
  ALLOWED_ORIGINS: {
    schema: z.string(),
    default: "",
    help: "comma-separated browser origins allowed besides the server's own (* for any)",
  },
  ALLOWED_HOSTS: {
    schema: z.string(),
    default: "",
    help: "comma-separated host names the server answers to (the Host header without its port; .example.com also matches its subdomains); others get 421, IP addresses always pass; empty: any name. Set it against DNS rebinding",
  },
  TRUSTED_PROXIES: {
    schema: z.string(),
    default: "",
    help: "reverse proxies whose X-Forwarded-For gives the client address: addresses and subnets, comma-separated (* for any peer)",
  },
  LOG_LEVEL: { schema: z.enum(["debug", "info", "warn", "error", "silent"]), default: "info", help: "least severe log level printed: debug, info, warn, error or silent" },
  MAX_FRAME_BYTES: { schema: int(256, 16 * 1024 * 1024), default: "65536", help: "largest frame payload, 256 to 16777216; one byte more closes with 1009" },
  SEND_RATE: { schema: num(0.001), default: "20", help: "sends per second per connection (token bucket refill; at least 0.001)" },
  SEND_BURST: { schema: int(1), default: "40", help: "sends a connection may make at once (token bucket size)" },
  SIGNIN_FAILS_PER_USER: { schema: int(1), default: "10", help: "failed sign-ins per username per window" },
  SIGNIN_USER_WINDOW_MS: { schema: int(1), default: "900000", help: "window of SIGNIN_FAILS_PER_USER" },
  SIGNIN_FAILS_PER_ADDRESS: { schema: int(1), default: "30", help: "failed sign-ins per client address per window" },
  SIGNIN_ADDRESS_WINDOW_MS: { schema: int(1), default: "60000", help: "window of SIGNIN_FAILS_PER_ADDRESS" },
  RECOVERY_LIMIT: { schema: int(0), default: "1000", help: "most missed messages a join with since replays" },
  SEND_BUFFER_BYTES: {
    // At least 64 KiB: one message event can be 24 KiB (4000 escaped characters).
    schema: int(65_536),
    default: "1048576",
    help: "per-client send buffer; past it the client is closed with 1013 (at least 65536)",
  },
  DELIVERY_INTERVAL_MS: {
    schema: int(0, 1000),
    default: "5",
    help: "a busy room's message events are written to its members at most once per this many ms, together (0 to 1000; 0: every commit writes at once); a room quiet that long writes at once, and the sender's ok never waits",
  },
  INVALID_FRAME_LIMIT: { schema: int(1), default: "10", help: "invalid frames in a row before closing with 1008" },
  REQUEST_RATE: {
    schema: num(0.001),
    default: "2000",
    help: "requests per second per connection, of every type (token bucket refill; at least 0.001; never below twice SEND_RATE); a frame's or a reply's KiB past its first, and each KiB replayed by a join or sent as presence to a room, cost one more: past the burst rate_limited, a burst more (at least 128) closes with 1008",
  },
  REQUEST_BURST: { schema: int(1), default: "10000", help: "requests a connection may make at once (token bucket size; never below twice SEND_BURST)" },
  HTTP_RATE: {
    schema: num(0.001),
    default: "100",
    help: "HTTP requests per second per client address, besides WebSocket upgrades that succeed (token bucket refill; at least 0.001): past the burst 429 and the connection closed",
  },
  HTTP_BURST: { schema: int(1), default: "1000", help: "HTTP requests a client address may make at once (token bucket size)" },
  MAX_CONNECTIONS: {
    schema: int(0),
    default: "0",
    help: "most WebSocket connections at once, past it 503 (0: 90% of the process's open-files limit, which Bun raises to the hard limit)",
  },
  MAX_CONNECTIONS_PER_ADDRESS: {
    schema: int(0),
    default: "0",
    help: "WebSocket connections one client address may hold at once, past it the upgrade is answered 429 (0: no cap; behind NAT many users share an address)",
  },
  MAX_CONNECTIONS_PER_USER: {
    schema: int(0),
    default: "0",
    help: "connections one user may have signed in at once; a signup, login or auth past it is rate_limited (0: no cap)",
  },
  MAX_SESSIONS_PER_USER: {
    schema: int(1),
    default: "100",
    help: "live sessions one user may hold; a login past it revokes the least recently used (their connections are closed with 4001)",
  },
  MAX_ROOMS_PER_CONNECTION: { schema: int(1), default: "100", help: "rooms one connection may be in at once; a join past it is bad_request" },
  SESSION_IDLE_DAYS: { schema: num(0.0001), default: "30", help: "a session token expires after this long unused, an open connection signed in with it counting as use (at least 0.0001)" },
  HASH_CONCURRENCY: {
    schema: int(1, 64),
    // One core is left to the event loop, so that a storm of sign-ins does not stall others' messages.
    default: String(Math.max(1, availableParallelism() - 1)),
    help: "password hashes computed at once, 1 to 64 (cores - 1 here, at least 1)",
  },
  HASH_QUEUE: { schema: int(0), default: "256", help: "sign-ins waiting for a hash slot before rate_limited" },
  HASH_PER_ADDRESS: {
    schema: int(1),
    default: "8",
    help: "sign-ins (signup or login) one client address may have being hashed or waiting at once; past it rate_limited",
  },
  IDLE_TIMEOUT_S: {
    // uWebSockets checks timeouts every 4 s and refuses less than 8 (1-7 silently became 8).
    schema: int(0, 960).refine((s) => s === 0 || s >= 8, "must be 0 (off) or 8 to 960"),
    default: "120",
    help: "close connections silent this long, pongs included; 0 never (8-960, checked every 4 s)",
  },
} as const;

type Settings = typeof settings;
export type SettingName = keyof Settings;
export type Config = { [K in SettingName]: z.output<Settings[K]["schema"]> } & {
  allowedOrigins: string[];
  allowedHosts: string[];
  trustedProxies: TrustedProxies;
};

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

const flagName = (name: string) => `--${name.toLowerCase().replaceAll("_", "-")}`;

/** Reads `--name value` and `--name=value` flags for the known settings; other words are returned as rest. */
function readFlags(argv: readonly string[]): { values: Partial<Record<SettingName, string>>; rest: string[] } {
  const byFlag = new Map(Object.keys(settings).map((k) => [flagName(k), k as SettingName]));
  const values: Partial<Record<SettingName, string>> = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const name = byFlag.get(flag);
    if (!name) {
      if (arg.startsWith("--")) throw new ConfigError(`unknown option ${flag} (see --help)`);
      rest.push(arg);
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new ConfigError(`${flag}: missing value`);
    values[name] = value;
  }
  return { values, rest };
}

/**
 * Parses the settings from the environment and flags.
 * Throws a ConfigError whose message is one line naming the setting and the problem.
 */
export function loadConfig(
  env: Record<string, string | undefined>,
  argv: readonly string[] = [],
  /** Where `env` came from, for messages. */
  envName = "the environment or .env",
): { config: Config; rest: string[] } {
  const { values, rest } = readFlags(argv);
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(settings)) {
    const flag = values[name as SettingName];
    const raw = flag ?? env[name] ?? def.default;
    const parsed = (def.schema as z.ZodType).safeParse(raw.trim());
    if (!parsed.success) {
      const why = parsed.error.issues[0]?.message ?? "invalid";
      // Where to fix it: the flag, or the environment (Bun loads a .env file into it).
      const from = flag !== undefined ? flagName(name) : env[name] !== undefined ? envName : "the default";
      throw new ConfigError(`${name}: ${why} (got ${JSON.stringify(raw)} from ${from})`);
    }
    out[name] = parsed.data;
  }
  const origins = String(out.ALLOWED_ORIGINS)
    .split(",")
    .map((s) => s.trim().replace(/\/+$/, ""))
    .filter(Boolean);
  for (const o of origins) {
    if (o !== "*" && !/^https?:\/\/[^/\s]+$/.test(o)) {
      throw new ConfigError(`ALLOWED_ORIGINS: ${JSON.stringify(o)} is not an origin like https://chat.example.com`);
    }
  }
  const hosts = String(out.ALLOWED_HOSTS)
    .split(",")
    .map((s) => s.trim().toLowerCase().replace(/\.$/, ""))
    .filter(Boolean);
  for (const h of hosts) {
    if (h !== "*" && !/^\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(h)) {
      throw new ConfigError(`ALLOWED_HOSTS: ${JSON.stringify(h)} is not a host name like chat.example.com or .example.com`);
    }
  }
  let trustedProxies: TrustedProxies;
  try {
    trustedProxies = TrustedProxies.parse(String(out.TRUSTED_PROXIES));
  } catch (e) {
    throw new ConfigError(`TRUSTED_PROXIES: ${(e as Error).message}`);
  }
  const derived = { allowedOrigins: origins, allowedHosts: hosts, trustedProxies };
  return { config: { ...(out as Omit<Config, keyof typeof derived>), ...derived } as Config, rest };
}

/**
 * Defaults for every setting, with overrides: for tests and embedding. A setting given
 * as text (`ALLOWED_ORIGINS`, `TRUSTED_PROXIES`, `DB_PATH`...) is parsed as if it came from
 * the environment, so what derives from it (`allowedOrigins`, `allowedHosts`, `trustedProxies`) follows;
 * a derived field given directly wins.
 */
export function defaultConfig(overrides: Partial<Config> = {}): Config {
  const asText: Record<string, string> = {};
  for (const [name, value] of Object.entries(overrides)) {
    if (Object.hasOwn(settings, name) && typeof value === "string") asText[name] = value;
  }
  return { ...loadConfig(asText, [], "the overrides").config, ...overrides };
}

export function settingsHelp(): string {
  return Object.entries(settings)
    .map(([name, s]) => `  ${flagName(name).padEnd(28)} ${name.padEnd(26)} ${s.help} (default ${s.default || "none"})`)
    .join("\n");
}
