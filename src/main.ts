/**
 * The composition root and the only module with side effects: reads the settings,
 * opens and migrates the database, serves, and handles signals.
 *
 *   switchboard [serve] [--port 8081 ...]   serve (the default)
 *   switchboard migrate                     apply migrations and exit
 *   switchboard backup FILE                 consistent online copy (VACUUM INTO)
 */
import pkg from "../package.json" with { type: "json" };
import { systemClock } from "./clock.ts";
import { ConfigError, loadConfig, settingsHelp, type Config } from "./config.ts";
import { openStore } from "./db/open.ts";
import { backup } from "./db/backup.ts";
import { createArgon2Hasher } from "./features/accounts/password.ts";
import { createLogger } from "./log.ts";
import { createServer } from "./server.ts";
import { pageRoutes } from "./web/routes.ts";

const USAGE = `Switchboard ${pkg.version}: a real-time WebSocket backend on one SQLite file.

Usage: switchboard [serve|migrate|backup FILE] [options]

Commands:
  serve          serve WebSockets at /ws, the demo page at / (default)
  migrate        apply database migrations and exit
  backup FILE    write a consistent copy of the database to FILE, safe while serving

Options (each also an environment variable):
${settingsHelp()}
  --help                       this text
  --version                    the version
`;

function fail(message: string): never {
  process.stderr.write(`switchboard: ${message}\n`);
  process.exit(1);
}

async function serve(config: Config): Promise<void> {
  const log = createLogger(config.LOG_LEVEL);
  const store = openStore(config.DB_PATH, config.DB_SYNC);
  const app = createServer({
    config,
    store,
    hasher: createArgon2Hasher({ concurrency: config.HASH_CONCURRENCY, queue: config.HASH_QUEUE }),
    clock: systemClock,
    log,
    routes: pageRoutes(),
  });
  const server = app.listen();
  log.info("listening", { url: `http://${config.HOST}:${server.port}`, db: config.DB_PATH, version: pkg.version });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn("forced_exit", { signal });
      process.exit(1);
    }
    stopping = true;
    log.info("shutting_down", { signal });
    const deadline = setTimeout(() => {
      log.error("shutdown_timeout");
      process.exit(1);
    }, 2000);
    try {
      await app.shutdown();
      if (config.DB_PATH !== ":memory:") store.client.run("PRAGMA wal_checkpoint(TRUNCATE)");
      store.close();
      log.info("stopped");
      clearTimeout(deadline);
      process.exit(0);
    } catch (err) {
      log.error("shutdown_failed", { err });
      process.exit(1);
    }
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
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
    openStore(config.DB_PATH, config.DB_SYNC).close();
    process.stdout.write(`migrated ${config.DB_PATH}\n`);
    break;
  }
  case "backup": {
    const [file, ...extra] = args;
    if (!file || extra.length > 0) fail("usage: switchboard backup FILE");
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
