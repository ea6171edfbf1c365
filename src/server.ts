import type { Server } from "bun";
import { readFileSync } from "node:fs";
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import { startCheckpointer, type Checkpointer } from "./db/checkpointer.ts";
import { probeWrite, type Store } from "./db/open.ts";
import { WriteHealth } from "./db/write-health.ts";
import { createAccountHandlers } from "./features/accounts/handlers.ts";
import type { PasswordHasher } from "./features/accounts/password.ts";
import { createAccountService } from "./features/accounts/service.ts";
import { createRoomHandlers } from "./features/rooms/handlers.ts";
import { createRoomQueries } from "./features/rooms/queries.ts";
import { createRoomService } from "./features/rooms/service.ts";
import { throttled, type Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { CloseCode, protocolJsonSchema } from "./protocol/index.ts";
import { addressKey } from "./ws/client-address.ts";
import { createConn, type Conn, type Socket } from "./ws/connection.ts";
import { createDispatcher, type Handlers } from "./ws/dispatcher.ts";
import { Outbound } from "./ws/outbound.ts";
import { KeyedCap } from "./ws/connection-caps.ts";
import { AddressLimiter, RequestBudget } from "./ws/request-budget.ts";
import { SessionIndex } from "./ws/sessions.ts";

export interface ServerDeps {
  config: Config;
  store: Store;
  hasher: PasswordHasher;
  clock: Clock;
  log: Logger;
  /** Extra HTTP routes (the demo page), as `Bun.serve` routes. */
  routes?: Record<string, unknown>;
  /** The checkpointer thread's timings (tests make them small; see startCheckpointer). */
  checkpoints?: { intervalMs?: number; restartFrames?: number; holdMaxMs?: number };
}

const json = (body: unknown, status = 200) => Response.json(body, { status });

/**
 * 90% of the process's open-files limit (Linux; Bun raises the soft limit to the hard
 * one): the rest is for the database, the HTTP requests and the upgrades in flight.
 * Without /proc, no limit.
 */
export function defaultMaxConnections(limitsText?: string): number {
  let text = limitsText;
  try {
    text ??= readFileSync("/proc/self/limits", "utf8");
  } catch {
    return Number.POSITIVE_INFINITY;
  }
  const soft = /^Max open files\s+(\d+|unlimited)/m.exec(text)?.[1];
  if (!soft || soft === "unlimited") return Number.POSITIVE_INFINITY;
  return Math.max(1, Math.floor(Number(soft) * 0.9));
}

/**
 * The close code the client was sent. When Bun (uWebSockets) ends a connection itself
 * for a protocol error, it sends the RFC's code (1009 for a frame over the limit, 1007
 * for invalid UTF-8, 1002 for the rest) but tells the `close` handler 1006, with the
 * reason it sent ("Received too big message"...); an abnormal closure (a dropped
 * network) comes with no reason.
 */
export function closeCodeSent(code: number, reason: string): number {
  if (code !== 1006 || !reason.startsWith("Received ")) return code;
  if (reason === "Received too big message") return CloseCode.tooBig;
  if (reason === "Received invalid UTF-8") return 1007;
  return 1002;
}

/** Close codes logged at info (at most one line a second): a fault, not a goodbye. */
const FAULT_CLOSES: ReadonlySet<number> = new Set([1002, 1003, 1007, 1008, 1009, 1013, 4001]);

/** Codes a client's own close is counted under; any other it sends is counted as "other". */
const CLIENT_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1001, 1005, 1006]);

/**
 * The close code a connection's end is counted and logged under: the server's own when
 * the server closed it (`Outbound.close`), Bun's for a protocol error, and for a close
 * by the client 1000, 1001, 1005 or 1006 (a dropped network), else "other". A client
 * picks its code freely: counted as sent, 2,012 codes made 2,012 series of
 * `switchboard_connections_closed_total` (and /metrics 22 times larger), and a client
 * could swell the counts of the server's own codes (1008, 1013, 4001).
 */
export function closeCodeCounted(closedWith: number, code: number, reason: string): number | "other" {
  if (closedWith !== 0) return closedWith;
  const sent = closeCodeSent(code, reason);
  return sent !== code || CLIENT_CLOSE_CODES.has(code) ? sent : "other";
}

/**
 * How long a graceful stop waits for sign-ins in progress (and what waits behind them):
 * a hash takes tens of milliseconds, and the binary's whole stop has 2 s.
 */
const SIGN_IN_DRAIN_MS = 1_000;

/**
 * Does the server answer to the `Host` header `host`? Its name (without the port) must be
 * listed in `allowed` (`.example.com` matching it and its subdomains, `*` anything), or
 * be an IP address: DNS rebinding needs a name. Against it, the Origin check alone is no
 * help: a page at `http://evil.example:8081` whose name has been pointed at this server
 * sends `Origin` and `Host` of the same host, and passed it.
 */
export function hostAllowed(host: string | null, allowed: readonly string[]): boolean {
  if (host === null) return false;
  if (host.startsWith("[")) return true; // an IPv6 address
  const name = host.replace(/:\d*$/, "").replace(/\.$/, "").toLowerCase();
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return true;
  return allowed.some((a) => a === "*" || a === name || (a.startsWith(".") && (name.endsWith(a) || name === a.slice(1))));
}

/** Is a browser at `origin` allowed to open a socket? Same origin, or listed. */
export function originAllowed(origin: string | null, host: string | null, allowed: readonly string[]): boolean {
  if (origin === null) return true; // CLI tools and servers send no Origin
  if (allowed.includes("*") || allowed.includes(origin)) return true;
  try {
    return host !== null && new URL(origin).host === host;
  } catch {
    return false;
  }
}

/**
 * Builds a Switchboard from its dependencies. Nothing listens until `listen`; many can
 * live in one process, each with its own database.
 */
export function createServer(deps: ServerDeps) {
  const { config, store, hasher, clock, log } = deps;
  const metrics = new Metrics();
  const outbound = new Outbound(config.SEND_BUFFER_BYTES);
  const sessions = new SessionIndex();
  const maxConnections = config.MAX_CONNECTIONS || defaultMaxConnections();
  // A send is a request too: raising the send limit (for a bulk import, say) must not
  // run into this one unawares.
  const budget = new RequestBudget(Math.max(config.REQUEST_RATE, 2 * config.SEND_RATE), Math.max(config.REQUEST_BURST, 2 * config.SEND_BURST));
  const accounts = createAccountService({ store, hasher, clock, config });
  const queries = createRoomQueries(store.client);
  const writeHealth = new WriteHealth();
  /** Every poll of /healthz while the disk is full would log it again. */
  const logWritesRefused = throttled(log.error, 10_000);
  const logFaultClose = throttled(log.info, 1000);
  const rooms = createRoomService({ client: store.client, queries, clock, config, outbound, metrics, log, budget, writeHealth });
  const account = createAccountHandlers({
    accounts,
    sessions,
    outbound,
    metrics,
    log,
    maxPerUser: config.MAX_CONNECTIONS_PER_USER,
    onSignOut: (ws) => rooms.leaveAll(ws),
  });
  const handlers = { ...account.handlers, ...createRoomHandlers(rooms) } satisfies Handlers;
  const dispatcher = createDispatcher({
    handlers,
    outbound,
    metrics,
    log,
    invalidFrameLimit: config.INVALID_FRAME_LIMIT,
    budget,
    writeHealth,
  });
  const sizeQuery = store.client.prepare<{ bytes: number }, []>(
    "SELECT page_count * page_size AS bytes FROM pragma_page_count(), pragma_page_size()",
  );
  const httpLimiter = new AddressLimiter(config.HTTP_RATE, config.HTTP_BURST);
  const perAddress = new KeyedCap<string>(config.MAX_CONNECTIONS_PER_ADDRESS);
  let protocolJson: string | undefined;
  let server: Server<Conn> | null = null;
  let checkpointer: Checkpointer | null = null;
  let stopping = false;
  const sweeper = setInterval(() => {
    try {
      const deleted = accounts.sweep(sessions.ids());
      if (deleted > 0) log.debug("sessions_swept", { deleted });
      httpLimiter.sweep(performance.now());
    } catch (err) {
      log.error("sweep_failed", { err });
    }
  }, accounts.sweepEveryMs);
  sweeper.unref();

  /** 429 with `Connection: close` once `address` is past its HTTP burst; Bun then drops what was pipelined behind. */
  function httpRefusal(address: string): Response | null {
    const { waitMs, log: refused } = httpLimiter.take(address, performance.now());
    if (waitMs === 0) return null;
    metrics.httpRefused++;
    if (refused > 0) log.info("http_flood", { address, refused });
    return Response.json(
      { error: "too many requests" },
      { status: 429, headers: { "retry-after": String(Math.ceil(waitMs / 1000)), connection: "close" } },
    );
  }

  function fetch(req: Request, srv: Server<Conn>): Response | undefined {
    const peer = srv.requestIP(req)?.address ?? "unknown";
    const address = addressKey(config.trustedProxies.clientAddress(peer, req.headers.get("x-forwarded-for")));
    if (config.allowedHosts.length > 0 && !hostAllowed(req.headers.get("host"), config.allowedHosts)) {
      return httpRefusal(address) ?? json({ error: "unknown host: not one of ALLOWED_HOSTS" }, 421);
    }
    const { pathname } = new URL(req.url);
    if (pathname === "/ws" && req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      // Whether it upgrades is known only once tried. One that does takes no token (its
      // socket has the request budget); one refused can be pipelined like any request.
      const response = upgrade(req, srv, address);
      return response === undefined ? undefined : (httpRefusal(address) ?? response);
    }
    return httpRefusal(address) ?? route(req, pathname);
  }

  function upgrade(req: Request, srv: Server<Conn>, address: string): Response | undefined {
    if (stopping) return json({ error: "shutting down" }, 503);
    if (outbound.count >= maxConnections) {
      // Refused before the upgrade, the socket is closed after the answer: sockets past
      // the process's open-files limit would stop every new connection, HTTP included.
      metrics.connectionsRefused++;
      return Response.json({ error: "too many connections" }, { status: 503, headers: { "retry-after": "5", connection: "close" } });
    }
    if (perAddress.full(address)) {
      // Counted from `open` to `close`: Bun opens an upgraded socket before the next request is read.
      metrics.addressConnectionsRefused++;
      return Response.json(
        { error: "too many connections from this address" },
        { status: 429, headers: { "retry-after": "5", connection: "close" } },
      );
    }
    if (!originAllowed(req.headers.get("origin"), req.headers.get("host"), config.allowedOrigins)) {
      return json({ error: "origin not allowed" }, 403);
    }
    if (srv.upgrade(req, { data: createConn(address, config.SEND_BURST, clock.now(), budget.burst) })) return undefined;
    return json({ error: "bad WebSocket upgrade" }, 400);
  }

  function route(req: Request, pathname: string): Response {
    if (pathname === "/ws") {
      return new Response("Upgrade Required: connect with a WebSocket client\n", {
        status: 426,
        headers: { Upgrade: "websocket", Connection: "Upgrade" },
      });
    }
    if (req.method !== "GET" && req.method !== "HEAD") return json({ error: "method not allowed" }, 405);
    switch (pathname) {
      case "/healthz":
        try {
          // Not a cached statement: those keep answering after the database is closed.
          const probe = store.client.prepare("SELECT count(*) FROM sqlite_master");
          probe.get();
          probe.finalize();
        } catch (err) {
          log.error("health_check_failed", { err });
          return json({ status: "unavailable" }, 503);
        }
        if (writeHealth.failing) {
          // Writes were refused: ok again only once the database takes one. (Not on
          // every check: with DB_SYNC=FULL each would be an fsync on the event loop.)
          try {
            probeWrite(store.client);
            writeHealth.ok();
          } catch (err) {
            logWritesRefused("health_check_failed", { err, writes: true });
            return json({ status: "unavailable", reason: "the database refuses writes" }, 503);
          }
        }
        return json({ status: "ok" });
      case "/metrics":
        return new Response(
          metrics.render({
            rooms: rooms.storedRooms,
            roomsLoaded: rooms.liveRooms,
            dbBytes: sizeQuery.get()?.bytes ?? 0,
            checkpoints: checkpointer?.stats ?? { checkpoints: 0, frames: 0, restarts: 0 },
          }),
          { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } },
        );
      case "/protocol.json":
        protocolJson ??= JSON.stringify(protocolJsonSchema(), null, 2);
        return new Response(protocolJson, { headers: { "content-type": "application/schema+json" } });
      default:
        return json({ error: "not found" }, 404);
    }
  }

  const websocket = {
    data: {} as Conn,
    maxPayloadLength: config.MAX_FRAME_BYTES,
    // Past this Bun drops frames for the socket, silently. Outbound closes it with 1013
    // once it measures more than SEND_BUFFER_BYTES buffered; the margin covers what one
    // turn publishes before it is measured (at most half of it, `Outbound.fits`) and
    // frames it counts late (a presence event published from a sign-in's promise callback
    // is written after the next setImmediate, not before, so the next commit's turn can
    // take it as written).
    backpressureLimit: 2 * config.SEND_BUFFER_BYTES,
    closeOnBackpressureLimit: false,
    idleTimeout: config.IDLE_TIMEOUT_S,
    sendPings: true,
    perMessageDeflate: false,
    open(ws: Socket) {
      outbound.opened(ws);
      perAddress.add(ws.data.address);
      metrics.connectionsOpened++;
      log.debug("connection_open", { conn: ws.data.id, address: ws.data.address });
    },
    message(ws: Socket, message: string | Buffer) {
      dispatcher.message(ws, message);
    },
    ping(ws: Socket) {
      dispatcher.control(ws);
    },
    pong(ws: Socket) {
      dispatcher.control(ws);
    },
    drain(ws: Socket) {
      rooms.drain(ws);
    },
    close(ws: Socket, code: number, reason: string) {
      const user = ws.data.user?.id ?? null; // before signOut
      ws.data.closed = true;
      outbound.closed(ws);
      perAddress.remove(ws.data.address);
      account.signOut(ws);
      const counted = closeCodeCounted(ws.data.closedWith, code, reason);
      metrics.closed(counted);
      const fields = { conn: ws.data.id, code: counted, ...(counted === "other" ? { clientCode: code } : {}) };
      // A close for a fault (a protocol error, a policy, a slow consumer, a revoked
      // session) is worth an operator's eye; the rest (1000, 1001, a dropped network) are not.
      if (typeof counted === "number" && FAULT_CLOSES.has(counted)) logFaultClose("connection_closed", { ...fields, address: ws.data.address, user, reason });
      else log.debug("connection_closed", fields);
    },
  };

  return {
    fetch,
    websocket,
    metrics,
    /** MAX_CONNECTIONS, or what it defaults to (90% of the open-files limit). */
    maxConnections,
    /** Starts listening; `port: 0` picks a free port (read `server.port`). */
    listen(opts: { port?: number; hostname?: string } = {}): Server<Conn> {
      server = Bun.serve<Conn>({
        port: opts.port ?? config.PORT,
        hostname: opts.hostname ?? config.HOST,
        fetch,
        websocket,
        // Never Bun's development error page (it shows source), also inside the binary.
        development: false,
        // Production mode would set SO_REUSEPORT: a second Switchboard on the same port
        // would start and share the connections (each with its own rooms in memory).
        reusePort: false,
        ...(deps.routes ? { routes: deps.routes as never } : {}),
      });
      rooms.attach(server);
      if (store.path !== ":memory:") checkpointer ??= startCheckpointer({ client: store.client, path: store.path, sync: store.sync, log, gate: rooms.writeGate, ...deps.checkpoints });
      return server;
    },
    /**
     * Graceful stop: refuse new connections, let queued sends commit and be answered,
     * then close every socket with 1001 (clients reconnect and recover with `since`).
     */
    async shutdown(): Promise<void> {
      stopping = true;
      clearInterval(sweeper);
      void server?.stop(false);
      // Sign-ins being hashed are answered, then the requests held behind them run
      // (their sends queue for a commit), within SIGN_IN_DRAIN_MS: a long hash queue
      // must not hold the stop for ever.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([dispatcher.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, SIGN_IN_DRAIN_MS)))]);
      clearTimeout(timer);
      await rooms.idle();
      rooms.silence();
      accounts.flushTouches();
      for (const ws of outbound.sockets()) outbound.close(ws, CloseCode.goingAway, "server shutting down");
      await checkpointer?.stop();
      checkpointer = null;
      await server?.stop(true);
    },
  };
}

export type Switchboard = ReturnType<typeof createServer>;
