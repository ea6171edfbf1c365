/**
 * Testing entry point (`switchboard/testing`): a real Switchboard in the caller's
 * process on port 0, over a fresh in-memory database (or a file), and a factory of
 * connected SDK clients. Many can run side by side; each has its own database.
 *
 * @example
 * import { startTestServer } from "switchboard/testing";
 *
 * const server = await startTestServer();
 * const ada = await server.client();
 * await ada.signup({ username: "ada", password: "correct horse battery" });
 * await ada.join({ room: "lobby" });
 * await ada.send({ room: "lobby", body: "hello" });
 * await server.stop();
 */
import type { Server } from "bun";
import { createClient, type ClientOptions, type SwitchboardClient } from "./client/index.ts";
import type { Clock } from "./clock.ts";
import { defaultConfig, type Config } from "./config.ts";
import { migratedImage, openStore, openStoreFromImage, type Store } from "./db/open.ts";
import { createArgon2Hasher, type PasswordHasher } from "./features/accounts/password.ts";
import { silentLogger, type Logger } from "./log.ts";
import { createServer, type Switchboard } from "./server.ts";

/** The types of `startTestServer`'s options, to write fakes (a quick hasher, a test clock). */
export type { Clock, Config, Logger, PasswordHasher, Store };

/** The demo page's routes, for `startTestServer({ routes: pageRoutes() })`. */
export { pageRoutes } from "./web/routes.ts";

export interface TestServerOptions {
  /** Settings over the defaults (HOST is 127.0.0.1 and PORT 0 unless given). */
  config?: Partial<Config>;
  /** Listen on this port (default 0: a free one). A restarted server can take its predecessor's. */
  port?: number;
  /** Use (and on `stop`, close) an SQLite file instead of a fresh in-memory database. */
  dbPath?: string;
  /** Use this store (not closed on `stop`); wins over `dbPath`. */
  store?: Store;
  hasher?: PasswordHasher;
  clock?: Clock;
  log?: Logger;
  /** Extra HTTP routes, such as the demo page's `pageRoutes()`. */
  routes?: Record<string, unknown>;
}

export interface TestServer {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `ws://127.0.0.1:<port>/ws` */
  wsUrl: string;
  port: number;
  store: Store;
  app: Switchboard;
  server: Server<unknown>;
  /**
   * A new SDK client of this server, resolved once connected (and, with a `token`,
   * signed in). Closed by `stop`. Rejects if the client closes, is signed out, or its
   * first connection fails (the client is then closed): a test does not hang on it.
   */
  client(options?: Partial<ClientOptions>): Promise<SwitchboardClient>;
  /** A connected client signed up as a new user (name unique in this process). */
  signedIn(options?: Partial<ClientOptions> & { username?: string }): Promise<{ client: SwitchboardClient; username: string; token: string }>;
  /**
   * Shuts down gracefully (clients see close 1001) and starts a new server on the same
   * port over the same database (re-opened from `dbPath`, or the same in-memory store).
   * Clients from `client()` stay, and reconnect to the new server.
   */
  restart(): Promise<TestServer>;
  /** Closes this server's clients, stops listening (open sockets are cut) and closes the database. */
  stop(): Promise<void>;
}

let image: Uint8Array | undefined;
let users = 0;

/**
 * Starts a Switchboard on port 0 (by default) over a fresh in-memory database.
 *
 * @example
 * const a = await startTestServer();
 * const b = await startTestServer(); // another server, another database
 * const client = await a.client({ requestTimeoutMs: 2000 });
 */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  return start(options, new Set());
}

/** `inherited`: an in-memory store handed over by `restart`, owned like a fresh one. */
async function start(options: TestServerOptions, clients: Set<SwitchboardClient>, inherited?: Store): Promise<TestServer> {
  const config = defaultConfig({ HOST: "127.0.0.1", PORT: 0, ...options.config });
  let store = options.store ?? inherited;
  const ownStore = !options.store;
  if (!store) {
    if (options.dbPath) {
      store = openStore(options.dbPath, config.DB_SYNC);
    } else {
      image ??= migratedImage();
      store = openStoreFromImage(image);
    }
  }
  const app = createServer({
    config,
    store,
    hasher: options.hasher ?? createArgon2Hasher({ concurrency: config.HASH_CONCURRENCY, queue: config.HASH_QUEUE }),
    clock: options.clock ?? { now: () => Date.now() },
    log: options.log ?? silentLogger,
    ...(options.routes ? { routes: options.routes } : {}),
  });
  const server = app.listen({ port: options.port ?? config.PORT, hostname: config.HOST }) as Server<unknown>;
  const port = server.port!;
  const url = `http://${config.HOST}:${port}`;
  const wsUrl = `ws://${config.HOST}:${port}/ws`;

  async function client(opts: Partial<ClientOptions> = {}): Promise<SwitchboardClient> {
    const c = createClient({ url: wsUrl, ...opts });
    clients.add(c);
    if (c.state !== "open") {
      await new Promise<void>((resolve, reject) => {
        const offs = [
          c.on("open", () => done()),
          c.on("closed", ({ code, reason }) => done(new Error(`client closed (${code} ${reason})`))),
          c.on("signed-out", ({ reason }) => done(new Error(`client signed out (${reason})`))),
          // The first connection failed (the server stopped, say): a test should not hang on it.
          c.on("reconnecting", ({ code, reason }) => {
            done(new Error(`could not connect to ${wsUrl} (${code}${reason ? ` ${reason}` : ""})`));
            c.close();
          }),
        ];
        function done(err?: Error) {
          for (const off of offs) off();
          if (err) reject(err);
          else resolve();
        }
      });
    }
    return c;
  }

  return {
    url,
    wsUrl,
    port,
    store,
    app,
    server,
    client,
    async signedIn(opts = {}) {
      const { username = `user${++users}_${Math.random().toString(36).slice(2, 6)}`, ...rest } = opts;
      const c = await client(rest);
      const { token } = await c.signup({ username, password: "correct horse battery" });
      return { client: c, username, token };
    },
    async restart() {
      await app.shutdown();
      // Resolved once every client has seen the close: a request made right after then
      // waits for the new server (one written before the close frame came in was lost,
      // and rejected `disconnected`).
      await Promise.all([...clients].filter((c) => c.state === "open").map((c) => c.next("state", () => true, 2000).catch(() => {})));
      const fromFile = ownStore && options.dbPath !== undefined;
      if (fromFile) store.close();
      return start({ ...options, port }, clients, ownStore && !fromFile ? store : undefined);
    },
    async stop() {
      for (const c of clients) c.close();
      clients.clear();
      await server.stop(true);
      // Let sends queued before the stop commit (or fail) before the database goes.
      await app.shutdown();
      if (ownStore) store.close();
    },
  };
}
