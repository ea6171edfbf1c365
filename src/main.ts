/**
 * The composition root and, with signals.ts (imported first), the only module with side
 * effects: reads the settings,
 * opens and migrates the database, serves, and handles signals.
 *
 *   switchboard [serve] [--port 8081 ...]   serve (the default)
 *   switchboard migrate                     apply migrations and exit
 *   switchboard backup FILE                 consistent online copy (VACUUM INTO)
 */
// First: a stop signal sent while the rest loads is held, not the default action (see signals.ts).
import { defaultStopSignals, onStopSignal } from "./signals.ts";
import type { Database } from "bun:sqlite";
import { resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { systemClock } from "./clock.ts";
import { ConfigError, loadConfig, settingsHelp, type Config } from "./config.ts";
import { openStore, type Store } from "./db/open.ts";
import { backup } from "./db/backup.ts";
import { lockDatabase, realDatabasePath, type InstanceLock } from "./db/instance-lock.ts";
import { createLogger, type Logger } from "./log.ts";
import { createServer } from "./server.ts";
import { pageRoutes } from "./web/routes.ts";

const USAGE = `Switchboard ${pkg.version}: a real-time WebSocket backend on one SQLite file.

Usage: switchboard [serve|migrate|backup FILE] [options]

Commands:
  serve          serve WebSockets at /ws, the demo page at / (default)
  migrate        apply database migrations and exit
  backup FILE    write a consistent copy of the database to FILE, safe while serving

Options (each also an environment variable; flags win over the environment, which
wins over the files .env, .env.local and .env.$NODE_ENV read from the working
directory; relative paths, DB_PATH's ./data included, are from the working directory):
${settingsHelp()}
  --help                       this text
  --version                    the version
`;

/** A graceful stop that takes longer exits 1; so does a second signal, at once. */
const SHUTDOWN_DEADLINE_MS = 2000;

function fail(message: string): never {
  process.stderr.write(`switchboard: ${message}\n`);
  process.exit(1);
}

const reason = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

/** The database's instance lock, held (and referenced, or the GC would close it) until exit. */
let instanceLock: InstanceLock | null = null;

/**
 * Takes the database's instance lock (none for `:memory:`), or exits: another serve or
 * migrate is using this database.
 */
function lockOrFail(config: Config): void {
  if (config.DB_PATH === ":memory:") return;
  try {
    instanceLock = lockDatabase(config.DB_PATH);
  } catch (e) {
    // The folder could not be made (the error names it), or the lock file not opened:
    // one left by a start as another user (root's `migrate`, say) is this user's to fix.
    if (typeof (e as { code?: unknown }).code === "string" && (e as { code: string }).code.startsWith("SQLITE_")) {
      const lock = `${realDatabasePath(config.DB_PATH)}.lock`;
      fail(`DB_PATH: cannot open ${lock}, the lock beside the database: ${reason(e)} (this user must be able to read and write it)`);
    }
    cannotOpen(config, e);
  }
  if (!instanceLock) {
    fail(`DB_PATH: ${config.DB_PATH} is in use by another switchboard (serve or migrate; it holds ${realDatabasePath(config.DB_PATH)}.lock): stop it first`);
  }
}

function openOrFail(config: Config): Store {
  try {
    return openStore(config.DB_PATH, config.DB_SYNC);
  } catch (e) {
    // Not a database (or not one of ours): leave no `.lock` beside whatever it is.
    instanceLock?.discard();
    instanceLock = null;
    cannotOpen(config, e);
  }
}

function cannotListen(config: Config, e: unknown): never {
  // An address this machine does not have, or a name it cannot resolve (EINVAL, or
  // ENOTFOUND from getaddrinfo; Bun.listen, the probe, gives no code at all for a name),
  // is the host's fault; a port in use or privileged, the port's.
  const code = (e as { code?: string }).code;
  const setting = code === undefined || code === "EADDRNOTAVAIL" || code === "EINVAL" || code === "ENOTFOUND" ? "HOST" : "PORT";
  // Bun's message ("Failed to listen at HOST") does not say why; its code does.
  const why = code === undefined ? "not an address of this machine, or a name that does not resolve" : (LISTEN_ERRORS[code] ?? code);
  fail(`${setting}: cannot listen on ${config.HOST}:${config.PORT}: ${reason(e)} (${why})`);
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: "EADDRINUSE: the port is in use",
  EACCES: "EACCES: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE",
  EADDRNOTAVAIL: "EADDRNOTAVAIL: not an address of this machine",
  EINVAL: "EINVAL: not an address this machine can listen on",
  ENOTFOUND: "ENOTFOUND: the name does not resolve",
};

/**
 * Fails before the database is touched if the address cannot be listened on: a start on
 * a port in use with a new DB_PATH created and migrated the database (and its folder and
 * lock) first, then failed. A port taken between this probe and the real listen still
 * fails there, with the same message.
 */
function probeListen(config: Config): void {
  try {
    Bun.listen({ hostname: config.HOST, port: config.PORT, socket: { data() {} } }).stop(true);
  } catch (e) {
    cannotListen(config, e);
  }
}

function cannotOpen(config: Config, e: unknown): never {
  // A failed start as another user can leave a -shm with the file's mode behind, which
  // refuses writes after the file itself is fixed: say where to look.
  const code = String((e as { code?: unknown }).code);
  const hint = code.startsWith("SQLITE_READONLY")
    ? " (this user must be able to write the file, its folder, and any -wal and -shm beside it)"
    : code.startsWith("SQLITE_CANTOPEN")
      ? " (this user must be able to read and write the file and its folder)"
      : "";
  fail(`DB_PATH: cannot open ${config.DB_PATH}: ${reason(e)}${hint}`);
}

/**
 * Folds the WAL into the database file and truncates it. Readers in other processes (a
 * `backup`, a sqlite3 shell) make TRUNCATE wait, and bun:sqlite waits synchronously
 * (busy_timeout), which would freeze the event loop: no deadline, no second signal. So
 * it tries without waiting and retries on a timer until `until` (performance.now()).
 * Giving up loses nothing: committed data in the WAL is read back on the next start.
 */
async function checkpointWal(client: Database, until: number, log: Logger): Promise<boolean> {
  client.run("PRAGMA busy_timeout = 0");
  for (let attempt = 1; ; attempt++) {
    let busy: boolean;
    try {
      busy = client.query<{ busy: number }, []>("PRAGMA wal_checkpoint(TRUNCATE)").get()?.busy !== 0;
    } catch {
      busy = true; // SQLITE_BUSY: another process is writing
    }
    if (!busy) return true;
    if (attempt === 1) log.info("checkpoint_waiting", { why: "another connection is reading or writing the database" });
    if (performance.now() + 25 >= until) {
      log.warn("checkpoint_incomplete", { attempts: attempt });
      return false;
    }
    await Bun.sleep(20);
  }
}

async function serve(config: Config): Promise<void> {
  const log = createLogger(config.LOG_LEVEL);
  // A log reader that has gone (a closed pipe: EPIPE) loses the lines, not the server:
  // without a listener, the failed write ended the process with code 1, silently.
  process.stderr.on("error", () => {});
  // Loaded here, not at import: inside the single-file binary Bun unpacks argon2's
  // native module into TMPDIR when it loads, and --help, migrate and backup need none.
  let hasherModule: typeof import("./features/accounts/password.ts");
  try {
    hasherModule = await import("./features/accounts/password.ts");
  } catch {
    fail(`cannot load the argon2 native module: TMPDIR (${process.env.TMPDIR || "/tmp"}) must exist, be writable and allow executing files (not noexec)`);
  }
  probeListen(config);
  lockOrFail(config);
  const store = openOrFail(config);
  const app = createServer({
    config,
    store,
    hasher: hasherModule.createArgon2Hasher({ concurrency: config.HASH_CONCURRENCY, queue: config.HASH_QUEUE }),
    clock: systemClock,
    log,
    routes: pageRoutes(),
  });
  let server: ReturnType<typeof app.listen>;
  try {
    server = app.listen();
  } catch (e) {
    cannotListen(config, e); // taken since the probe
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn("forced_exit", { signal });
      process.exit(1);
    }
    stopping = true;
    const started = performance.now();
    log.info("shutting_down", { signal });
    const deadline = setTimeout(() => {
      log.error("shutdown_timeout", { ms: SHUTDOWN_DEADLINE_MS });
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    try {
      await app.shutdown();
      // Leave 200 ms of the deadline for closing the database and exiting.
      if (config.DB_PATH !== ":memory:") await checkpointWal(store.client, started + SHUTDOWN_DEADLINE_MS - 200, log);
      store.close();
      instanceLock?.release();
      log.info("stopped", { ms: Math.round(performance.now() - started) });
      clearTimeout(deadline);
      process.exit(0);
    } catch (err) {
      log.error("shutdown_failed", { err });
      process.exit(1);
    }
  };
  // An IPv6 host goes in brackets: http://[::]:8081.
  const host = config.HOST.includes(":") ? `[${config.HOST}]` : config.HOST;
  // `migrated`: the migrations this start applied (an upgrade, or a new database).
  const migrated = store.migrated.length > 0 ? { migrated: store.migrated } : {};
  // `file`: the database as an absolute path (DB_PATH as given is relative to the working directory).
  const file = config.DB_PATH === ":memory:" ? {} : { file: resolve(config.DB_PATH) };
  const settings = { sync: config.DB_SYNC, maxConnections: app.maxConnections };
  log.info("listening", { url: `http://${host}:${server.port}`, db: config.DB_PATH, ...file, ...settings, version: pkg.version, ...migrated });
  // SIGTERM, SIGINT and SIGHUP (a closing terminal) stop gracefully. One sent while
  // starting was held (signals.ts) and stops the server now, after the line above.
  onStopSignal((signal) => void stop(signal));
}

const argv = process.argv.slice(2);
if (argv.includes("--help") || argv.includes("-h")) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (argv.includes("--version")) {
  process.stdout.write(`${pkg.version}\n`);
  process.exit(0);
}
let config: Config;
let rest: string[];
try {
  ({ config, rest } = loadConfig(process.env, argv));
} catch (e) {
  if (e instanceof ConfigError) fail(e.message);
  throw e;
}
const [command = "serve", ...args] = rest;
switch (command) {
  case "serve":
    if (args.length > 0) fail(`serve takes no arguments (got ${args.join(" ")})`);
    await serve(config);
    break;
  case "migrate": {
    if (args.length > 0) fail(`migrate takes no arguments (got ${args.join(" ")})`);
    defaultStopSignals();
    lockOrFail(config);
    const store = openOrFail(config);
    store.close();
    const what = store.migrated.length > 0 ? `applied ${store.migrated.join(", ")}` : "up to date";
    process.stdout.write(`migrated ${config.DB_PATH}: ${what}\n`);
    break;
  }
  case "backup": {
    const [file, ...extra] = args;
    if (!file || extra.length > 0) fail("usage: switchboard backup FILE");
    defaultStopSignals();
    try {
      const bytes = backup(config.DB_PATH, file);
      process.stdout.write(`backed up ${config.DB_PATH} to ${file} (${bytes} bytes)\n`);
    } catch (e) {
      fail(e instanceof Error ? e.message : String(e));
    }
    break;
  }
  default:
    fail(`unknown command ${JSON.stringify(command)} (see --help)`);
}
