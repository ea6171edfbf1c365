import { expect, test } from "bun:test";
import { ConfigError, defaultConfig, loadConfig, settings } from "../src/config.ts";

test("defaults: port 8081, ./data/switchboard.db, NORMAL, and the limits of the spec", () => {
  const { config, rest } = loadConfig({});
  expect(config).toMatchObject({
    PORT: 8081,
    DB_PATH: "./data/switchboard.db",
    DB_SYNC: "NORMAL",
    MAX_FRAME_BYTES: 65_536,
    SEND_RATE: 20,
    SEND_BURST: 40,
    SIGNIN_FAILS_PER_USER: 10,
    SIGNIN_USER_WINDOW_MS: 900_000,
    SIGNIN_FAILS_PER_ADDRESS: 30,
    SIGNIN_ADDRESS_WINDOW_MS: 60_000,
    RECOVERY_LIMIT: 1000,
    SEND_BUFFER_BYTES: 1_048_576,
    INVALID_FRAME_LIMIT: 10,
    SESSION_IDLE_DAYS: 30,
    allowedOrigins: [],
  });
  expect(rest).toEqual([]);
});

test("environment variables, and flags that win over them", () => {
  const { config, rest } = loadConfig(
    { PORT: "9000", DB_SYNC: "FULL", ALLOWED_ORIGINS: "https://a.example, http://b.example:8080/" },
    ["--port", "9100", "--db-path=:memory:", "serve"],
  );
  expect(config.PORT).toBe(9100);
  expect(config.DB_PATH).toBe(":memory:");
  expect(config.DB_SYNC).toBe("FULL");
  expect(config.allowedOrigins).toEqual(["https://a.example", "http://b.example:8080"]);
  expect(rest).toEqual(["serve"]);
});

test("TRUSTED_PROXIES: none by default; addresses and subnets, the widest prefix accepted", () => {
  expect(loadConfig({}).config.trustedProxies.size).toBe(0);
  const { config } = loadConfig({ TRUSTED_PROXIES: "127.0.0.1, 10.0.0.0/32, fd00::/128" });
  expect(config.trustedProxies.entries).toEqual(["127.0.0.1", "10.0.0.0/32", "fd00::/128"]);
  expect(config.trustedProxies.has("10.0.0.0")).toBe(true);
  expect(config.trustedProxies.has("10.0.0.1")).toBe(false);
});

test("defaultConfig: a setting given as its text is parsed like the environment's, and what derives from it follows", () => {
  expect(defaultConfig().allowedOrigins).toEqual([]);
  const config = defaultConfig({ ALLOWED_ORIGINS: "https://a.example/", TRUSTED_PROXIES: "10.0.0.0/8", SEND_RATE: 5 });
  expect(config.allowedOrigins).toEqual(["https://a.example"]);
  expect(config.trustedProxies.has("10.1.2.3")).toBe(true);
  expect(config.trustedProxies.has("11.1.2.3")).toBe(false);
  expect(config.SEND_RATE).toBe(5);
  // A derived field given directly wins over the text.
  expect(defaultConfig({ ALLOWED_ORIGINS: "https://a.example", allowedOrigins: ["*"] }).allowedOrigins).toEqual(["*"]);
  expect(() => defaultConfig({ TRUSTED_PROXIES: "proxy.example" })).toThrow(ConfigError);
});

test("DELIVERY_INTERVAL_MS: 5 by default, 0 (off) to 1000; 1001, negatives and fractions are refused", () => {
  expect(loadConfig({}).config.DELIVERY_INTERVAL_MS).toBe(5);
  for (const ok of ["0", "1", "1000"]) expect(loadConfig({ DELIVERY_INTERVAL_MS: ok }).config.DELIVERY_INTERVAL_MS).toBe(Number(ok));
  for (const bad of ["1001", "-1", "2.5", ""]) expect(() => loadConfig({ DELIVERY_INTERVAL_MS: bad })).toThrow(ConfigError);
});

test("IDLE_TIMEOUT_S: 0 (off) or 8 to 960; 1 to 7 and 961 are refused", () => {
  for (const ok of ["0", "8", "960"]) expect(loadConfig({ IDLE_TIMEOUT_S: ok }).config.IDLE_TIMEOUT_S).toBe(Number(ok));
  for (const bad of ["1", "7", "961"]) expect(() => loadConfig({ IDLE_TIMEOUT_S: bad })).toThrow(ConfigError);
});

test("every setting has a flag", () => {
  for (const name of Object.keys(settings)) {
    const flag = `--${name.toLowerCase().replaceAll("_", "-")}`;
    expect(() => loadConfig({}, [flag, settings[name as keyof typeof settings].default || "*"])).not.toThrow();
  }
});

const bad: Array<[Record<string, string>, string[], RegExp]> = [
  [{ PORT: "eighty" }, [], /^PORT: must be a whole number \(got "eighty" from the environment or \.env\)$/],
  [{ PORT: "8081" }, ["--port", "eighty"], /^PORT: must be a whole number \(got "eighty" from --port\)$/],
  [{ PORT: "65536" }, [], /^PORT: /],
  [{ PORT: "-1" }, [], /^PORT: /],
  [{ DB_SYNC: "OFF" }, [], /^DB_SYNC: /],
  [{ SEND_RATE: "0" }, [], /^SEND_RATE: /],
  [{ MAX_FRAME_BYTES: "1.5" }, [], /^MAX_FRAME_BYTES: /],
  [{ ALLOWED_ORIGINS: "chat.example.com" }, [], /^ALLOWED_ORIGINS: /],
  [{ ALLOWED_HOSTS: "https://chat.example.com" }, [], /^ALLOWED_HOSTS: /],
  [{ ALLOWED_HOSTS: "chat.example.com:8081" }, [], /^ALLOWED_HOSTS: /],
  [{ TRUSTED_PROXIES: "127.0.0.1, proxy.internal" }, [], /^TRUSTED_PROXIES: "proxy.internal" is not an IP address/],
  [{ TRUSTED_PROXIES: "10.0.0.0/33" }, [], /^TRUSTED_PROXIES: "10.0.0.0\/33": the prefix length must be 0 to 32$/],
  [{}, ["--port"], /^--port: missing value$/],
  [{}, ["--nope", "1"], /^unknown option --nope/],
  [{}, ["--log-level", "loud"], /^LOG_LEVEL: /],
];
for (const [env, argv, message] of bad) {
  test(`refuses ${JSON.stringify(env)} ${argv.join(" ")} with one line naming the setting`, () => {
    let err: unknown;
    try {
      loadConfig(env, argv);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).not.toContain("\n");
  });
}

test("a bad setting makes the server print one line and exit 1, with no stack trace", async () => {
  const proc = Bun.spawn([process.execPath, "src/main.ts"], {
    env: { ...process.env, PORT: "eighty" },
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(await proc.exited).toBe(1);
  const err = await new Response(proc.stderr).text();
  expect(err).toBe('switchboard: PORT: must be a whole number (got "eighty" from the environment or .env)\n');
});
