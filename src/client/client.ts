import {
  ErrorCode,
  requestSchemas,
  resultSchemas,
  ServerFrame,
  type ErrorReply,
  type Issue,
  type MessageEvent,
  type PresenceEvent,
  type RequestParams,
  type RequestType,
  type ResultOf,
  type User,
} from "../protocol/index.ts";
import { backoffDelay, defaultBackoff, type Backoff } from "./backoff.ts";
import { Emitter } from "./emitter.ts";
import { SwitchboardError } from "./errors.ts";
import { RoomFeed } from "./feed.ts";
import { emptyState, memoryStore, type ClientState, type ClientStore, type OutboxEntry } from "./store.ts";

/** The part of the WebSocket API the client uses (browsers, Bun, Deno, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/**
 * - `connecting`: opening the first connection (or the first after `connect()`).
 * - `open`: connected, signed in again if there was a session, rooms re-joined: requests go out.
 * - `reconnecting`: the connection was lost; retrying with backoff. Requests wait, sends queue.
 * - `signed-out`: the session ended (revoked, refused, or `logout`); not connected and not
 *   retrying. `signup`, `login`, `auth` and `ping` connect again.
 * - `closed`: `close()` was called (or the server closed with a code that forbids retrying).
 */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "signed-out" | "closed";

/** Events of a client, by name. Subscribe with `client.on(name, listener)`. */
export interface ClientEvents {
  /** A room message, delivered exactly once per seq and in seq order per room. */
  message: MessageEvent;
  /** Another user's first connection joined a room, or its last one left. */
  presence: PresenceEvent;
  /** A room was joined or re-joined (after a reconnect): `members` is who is there now. */
  joined: ResultOf<"join"> & { rejoin: boolean };
  /** Every change of `client.state`. */
  state: { state: ConnectionState; previous: ConnectionState };
  connecting: Record<string, never>;
  /** Connected, re-authenticated and re-joined: `user` is null when not signed in. */
  open: { user: User | null };
  /** The connection was lost; the next attempt starts in `delayMs`. */
  reconnecting: { attempt: number; delayMs: number; code: number; reason: string };
  /** Why the session ended: `revoked` (close 4001), `unauthorized` (token refused), or `logout`. */
  "signed-out": { reason: "revoked" | "unauthorized" | "logout" };
  /** The client stopped for good (until `connect()`). */
  closed: { code: number; reason: string };
  /** The outbox changed (a send queued, acknowledged or dropped): `pending` is what is left. */
  outbox: { pending: readonly OutboxEntry[] };
  /** Something went wrong outside any request: an invalid frame, a history gap. */
  error: SwitchboardError;
}

export interface ClientOptions {
  /** The WebSocket URL, such as `ws://localhost:8081/ws`. */
  url: string;
  /** A WebSocket implementation; defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** A session token from an earlier `signup`/`login`: the client signs in with `auth`. */
  token?: string | null;
  /** Where the outbox and the last delivered seq of each room live; memory by default. */
  store?: ClientStore;
  /** How long a request may wait for its reply, connecting included (default 10 s). Sends do not time out. */
  requestTimeoutMs?: number;
  /** Reconnection delay bounds (default 500 ms doubling up to 15 s, full jitter). */
  backoff?: Backoff;
  /** Ping this often while idle to notice a dead connection (default 25 s; 0 turns it off). */
  heartbeatMs?: number;
  /** Messages per `history` page when filling a gap (1..100, default 100). */
  historyPageSize?: number;
  /** Connect at once (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
  /** A random source in [0, 1) for the backoff jitter (tests make it fixed). */
  random?: () => number;
}

/** Per-call options of a request. */
export interface CallOptions {
  /** Overrides `requestTimeoutMs` for this call. */
  timeoutMs?: number;
}

interface Pending {
  type: RequestType;
  resolve(result: unknown): void;
  reject(error: SwitchboardError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface Conn {
  ws: WebSocketLike;
  alive: boolean;
  /** Restored: signed in again and rooms re-joined. */
  ready: boolean;
  signedIn: boolean;
  pending: Map<number, Pending>;
  heartbeat: ReturnType<typeof setInterval> | undefined;
}

interface ReadyWaiter {
  signIn: boolean;
  resolve(conn: Conn): void;
  reject(error: SwitchboardError): void;
}

const SIGN_IN: ReadonlySet<RequestType> = new Set(["signup", "login", "auth"]);
/** Requests that work without a session: they reconnect a signed-out client. */
const CONNECTS: ReadonlySet<RequestType> = new Set(["signup", "login", "auth", "ping"]);
/** Close codes after which reconnecting would only repeat the failure. */
const FATAL_CLOSE: ReadonlySet<number> = new Set([1003, 1008, 1009]);
const OPEN = 1;
/** Client-initiated close of a connection it gave up on (heartbeat, failed restore). */
const CLIENT_DROP = 4000;

const isServerCode = (code: string): boolean => ErrorCode.safeParse(code).success;

function newNonce(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return `c-${hex}`;
}

function fromReply(reply: ErrorReply, request: RequestType | undefined): SwitchboardError {
  return new SwitchboardError(reply.code, reply.message, { retryAfterMs: reply.retryAfterMs, issues: reply.issues, request });
}

function issuesOf(error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> }): Issue[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
}

/**
 * A Switchboard connection that survives network loss: typed requests, exactly-once
 * ordered delivery per room, and an outbox whose sends reach the room exactly once.
 * Create it with `createClient`.
 */
export class SwitchboardClient {
  private readonly events = new Emitter<ClientEvents>();
  private readonly WS: WebSocketConstructor;
  private readonly store: ClientStore;
  private readonly timeoutMs: number;
  private readonly backoff: Backoff;
  private readonly heartbeatMs: number;
  private readonly pageSize: number;
  private readonly random: () => number;

  private currentState: ConnectionState = "closed";
  private conn: Conn | null = null;
  private refs = 0;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private readyWaiters: ReadyWaiter[] = [];
  private sessionToken: string | null;
  private currentUser: User | null = null;

  private persisted: ClientState;
  private saveScheduled = false;
  /** The outbox's nonces when the `outbox` event last fired. */
  private outboxKey = "";
  private readonly feeds = new Map<string, RoomFeed>();
  private readonly outboxWaiters = new Map<string, Array<{ resolve(r: ResultOf<"send">): void; reject(e: SwitchboardError): void }>>();
  private inFlight: OutboxEntry | null = null;
  private rateLimitTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly options: ClientOptions) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("createClient: no WebSocket implementation; pass options.WebSocket");
    this.WS = WS;
    this.store = options.store ?? memoryStore();
    this.timeoutMs = options.requestTimeoutMs ?? 10_000;
    this.backoff = options.backoff ?? defaultBackoff;
    this.heartbeatMs = options.heartbeatMs ?? 25_000;
    this.pageSize = Math.max(1, Math.min(100, options.historyPageSize ?? 100));
    this.random = options.random ?? Math.random;
    this.sessionToken = options.token ?? null;
    this.persisted = this.store.load() ?? emptyState();
    this.outboxKey = this.persisted.outbox.map((e) => e.nonce).join(" ");
    this.trackStoredRooms();
    if (options.autoConnect ?? true) this.connect();
  }

  // ---------------------------------------------------------------- public surface

  /** The connection state; every change is also a `state` event. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The signed-in user, or null. */
  get user(): User | null {
    return this.currentUser;
  }

  /** The session token the client re-authenticates with after a reconnect, or null. */
  get token(): string | null {
    return this.sessionToken;
  }

  /** Sends not yet acknowledged by the server, oldest first (they survive reconnects and, with a persistent store, reloads). */
  get outbox(): readonly OutboxEntry[] {
    return this.persisted.outbox.map((e) => ({ ...e }));
  }

  /** Rooms this client follows (joined, or to be re-joined after a reconnect). */
  get rooms(): string[] {
    return [...this.feeds.keys()];
  }

  /** The seq of the last message of `room` delivered to the application, if any. */
  lastSeq(room: string): number | undefined {
    return this.feeds.get(room)?.lastDelivered ?? undefined;
  }

  /**
   * Subscribes to an event; returns the function that unsubscribes.
   *
   * @example
   * const off = client.on("message", (m) => console.log(`#${m.room} ${m.user}: ${m.body}`));
   * client.on("state", ({ state }) => (statusEl.textContent = state));
   * off();
   */
  on<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void {
    return this.events.on(type, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): void {
    this.events.off(type, listener);
  }

  /**
   * Resolves with the next `type` event that satisfies `match` (rejects after `timeoutMs`).
   *
   * @example
   * await client.next("open");
   * const m = await client.next("message", (m) => m.body === "hello");
   */
  next<K extends keyof ClientEvents>(
    type: K,
    match: (event: ClientEvents[K]) => boolean = () => true,
    timeoutMs = this.timeoutMs,
  ): Promise<ClientEvents[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new SwitchboardError("timeout", `no ${String(type)} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on(type, (event) => {
        if (!match(event)) return;
        clearTimeout(timer);
        off();
        resolve(event);
      });
    });
  }

  /**
   * Opens the connection (done at creation unless `autoConnect: false`); after
   * `close()` or a sign-out, starts again.
   */
  connect(): void {
    if (this.conn || this.reconnectTimer !== undefined) return;
    if (this.currentState === "connecting" || this.currentState === "reconnecting" || this.currentState === "open") return;
    this.setState("connecting");
    this.events.emit("connecting", {});
    this.openSocket();
  }

  /**
   * Closes the connection and stops reconnecting. Pending requests and sends reject
   * with `closed`; unsent messages stay in the store, for a later client to send.
   */
  close(): void {
    if (this.currentState === "closed") return;
    this.stop(1000, "client closed", new SwitchboardError("closed", "the client was closed"));
  }

  /**
   * Creates an account and signs in.
   *
   * @example
   * const { user, token } = await client.signup({ username: "ada", password: "correct horse battery" });
   * localStorage.setItem("token", token);
   */
  signup(params: RequestParams<"signup">, options?: CallOptions): Promise<ResultOf<"signup">> {
    return this.call("signup", params, options);
  }

  /**
   * Signs in with a password; the client keeps the token to re-authenticate after reconnects.
   *
   * @example
   * const { user } = await client.login({ username: "ada", password: "correct horse battery" });
   */
  login(params: RequestParams<"login">, options?: CallOptions): Promise<ResultOf<"login">> {
    return this.call("login", params, options);
  }

  /**
   * Signs in with a token from an earlier `signup`/`login` (the `token` option does this on connect).
   *
   * @example
   * await client.auth({ token: localStorage.getItem("token")! });
   */
  auth(params: RequestParams<"auth">, options?: CallOptions): Promise<ResultOf<"auth">> {
    return this.call("auth", params, options);
  }

  /**
   * Revokes the session (`all: true`: every session of the user), forgets the rooms,
   * the outbox and the token, and disconnects: the client is then `signed-out`.
   *
   * @example
   * await client.logout();
   * localStorage.removeItem("token");
   */
  logout(params: RequestParams<"logout"> = {}, options?: CallOptions): Promise<ResultOf<"logout">> {
    return this.call("logout", params, options);
  }

  /**
   * Joins a room. From then on the client follows it: after a reconnect it joins again
   * with `since` and delivers every message after the last one it delivered, exactly
   * once and in order, until `leave`. Give `since` to start after a known seq; without
   * it, delivery starts with the messages after the reply's `seq` (read older ones with
   * `history`). Joining a followed room returns fresh `members` and changes nothing.
   *
   * @example
   * const { seq, members } = await client.join({ room: "lobby" });
   * const { messages } = await client.history({ room: "lobby", before: seq + 1 });
   */
  async join(params: RequestParams<"join">, options?: CallOptions): Promise<ResultOf<"join">> {
    const parsed = this.validate("join", params);
    if (parsed instanceof SwitchboardError) throw parsed;
    let feed = this.feeds.get(params.room);
    const created = !feed;
    if (!feed) feed = this.track(params.room, params.since ?? null);
    return this.withDeadline("join", options, async (deadline) => {
      const conn = await this.whenReady("join", deadline);
      if (this.feeds.get(params.room) !== feed) throw new SwitchboardError("not_joined", `${params.room} was left`, { request: "join" });
      if (feed.phase === "idle") void this.joinFeed(conn, feed, false).catch(() => {});
      if (feed.phase === "joining" && feed.joining) {
        const result = await feed.joining;
        if (created) return result;
      } else if (created && feed.lastJoin) {
        return feed.lastJoin;
      }
      // Already followed: a plain join answers with fresh members and changes nothing.
      return this.request(conn, "join", { room: params.room }, deadline - Date.now());
    });
  }

  /**
   * Leaves a room: the client stops following it at once. Unsent messages to it are
   * dropped (their `send` rejects with `not_joined`).
   *
   * @example
   * await client.leave({ room: "lobby" });
   */
  async leave(params: RequestParams<"leave">, options?: CallOptions): Promise<ResultOf<"leave">> {
    const parsed = this.validate("leave", params);
    if (parsed instanceof SwitchboardError) throw parsed;
    const feed = this.feeds.get(params.room);
    if (feed) this.untrack(feed, new SwitchboardError("not_joined", `left ${params.room} before the message was sent`, { request: "send" }));
    return this.call("leave", params, options);
  }

  /**
   * Sends a message to a joined room through the outbox: it is written now if
   * connected, else after the reconnect, retried with the same `nonce` until the server
   * acknowledges it, so it appears in the room exactly once. Resolves with its `seq`
   * and `at` (its own `message` event also arrives). Does not time out; rejects when
   * the server refuses it (`bad_request`, `not_joined`, ...) or with `closed`.
   *
   * @example
   * const { seq } = await client.send({ room: "lobby", body: "hello" });
   */
  send(params: RequestParams<"send">): Promise<ResultOf<"send">> {
    if (this.currentState === "closed") return Promise.reject(new SwitchboardError("closed", "the client was closed", { request: "send" }));
    if (this.currentState === "signed-out") return Promise.reject(new SwitchboardError("signed_out", "sign in first", { request: "send" }));
    const nonce = params.nonce ?? newNonce();
    const parsed = this.validate("send", { ...params, nonce });
    if (parsed instanceof SwitchboardError) return Promise.reject(parsed);
    if (!this.feeds.has(params.room)) {
      return Promise.reject(new SwitchboardError("not_joined", `join ${params.room} before sending to it`, { request: "send" }));
    }
    const promise = new Promise<ResultOf<"send">>((resolve, reject) => {
      const list = this.outboxWaiters.get(nonce) ?? [];
      list.push({ resolve, reject });
      this.outboxWaiters.set(nonce, list);
    });
    if (!this.persisted.outbox.some((e) => e.nonce === nonce && e.room === params.room)) {
      this.persisted.outbox.push({ nonce, room: params.room, body: params.body, createdAt: Date.now() });
      this.save(true);
    }
    this.pumpOutbox();
    return promise;
  }

  /**
   * Reads stored messages: the newest `limit` (default 50, at most 100) with seq below
   * `before`, ascending. `hasMore` says whether older ones exist.
   *
   * @example
   * let { messages, hasMore } = await client.history({ room: "lobby" });
   * while (hasMore) ({ messages, hasMore } = await client.history({ room: "lobby", before: messages[0]!.seq }));
   */
  history(params: RequestParams<"history">, options?: CallOptions): Promise<ResultOf<"history">> {
    return this.call("history", params, options);
  }

  /**
   * Who is present in a room.
   *
   * @example
   * const { members } = await client.who({ room: "lobby" });
   */
  who(params: RequestParams<"who">, options?: CallOptions): Promise<ResultOf<"who">> {
    return this.call("who", params, options);
  }

  /**
   * A round trip to the server.
   *
   * @example
   * const t0 = performance.now();
   * await client.ping();
   * console.log(`rtt ${performance.now() - t0} ms`);
   */
  ping(options?: CallOptions): Promise<ResultOf<"ping">> {
    return this.call("ping", {}, options);
  }

  // ---------------------------------------------------------------- requests

  private validate(type: RequestType, params: object): SwitchboardError | null {
    try {
      const r = requestSchemas[type].safeParse({ ...params, type });
      if (r.success) return null;
      const issues = issuesOf(r.error);
      const first = issues[0];
      return new SwitchboardError("bad_request", first ? `${first.path || "frame"}: ${first.message}` : "invalid request", {
        issues,
        request: type,
      });
    } catch {
      return new SwitchboardError("bad_request", "invalid request", { request: type });
    }
  }

  private async withDeadline<T>(type: RequestType, options: CallOptions | undefined, run: (deadline: number) => Promise<T>): Promise<T> {
    const ms = options?.timeoutMs ?? this.timeoutMs;
    const deadline = Date.now() + ms;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SwitchboardError("timeout", `no reply to ${type} within ${ms} ms`, { request: type })), ms);
    });
    try {
      return await Promise.race([run(deadline), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async call<T extends RequestType>(type: T, params: RequestParams<T>, options?: CallOptions): Promise<ResultOf<T>> {
    const invalid = this.validate(type, params);
    if (invalid) throw invalid;
    return this.withDeadline(type, options, async (deadline) => {
      const conn = await this.whenReady(type, deadline);
      const wasSignedIn = conn.signedIn;
      const result = await this.request(conn, type, params, deadline - Date.now());
      this.afterCall(conn, type, params, result, wasSignedIn);
      return result;
    });
  }

  /** What a successful request changes in the client. */
  private afterCall<T extends RequestType>(conn: Conn, type: T, params: RequestParams<T>, result: ResultOf<T>, wasSignedIn: boolean): void {
    if (conn !== this.conn) return;
    if (SIGN_IN.has(type)) {
      const r = result as ResultOf<"auth"> | ResultOf<"login">;
      this.sessionToken = "token" in r ? r.token : (params as RequestParams<"auth">).token;
      // Signing in on a signed-in connection makes the server leave its rooms: join again.
      const rejoin = wasSignedIn ? [...this.feeds.values()] : [];
      void this.signedIn(conn, r.user, rejoin).catch((e) => this.backgroundError(conn, e));
    } else if (type === "logout") {
      this.persisted = emptyState();
      this.save(true);
      this.rejectAllSends(new SwitchboardError("signed_out", "signed out before the message was sent", { request: "send" }));
      this.signOut("logout");
    }
  }

  /** Resolves with a restored connection (waiting for one), or rejects when there will be none. */
  private whenReady(type: RequestType, deadline: number): Promise<Conn> {
    if (this.currentState === "open" && this.conn?.ready) return Promise.resolve(this.conn);
    if (this.currentState === "closed") return Promise.reject(new SwitchboardError("closed", "the client was closed", { request: type }));
    if (this.currentState === "signed-out") {
      if (!CONNECTS.has(type)) return Promise.reject(new SwitchboardError("signed_out", "sign in first", { request: type }));
      this.connect();
    }
    return new Promise<Conn>((resolve, reject) => {
      const waiter: ReadyWaiter = { signIn: CONNECTS.has(type), resolve, reject };
      this.readyWaiters.push(waiter);
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(new SwitchboardError("timeout", `not connected within the timeout`, { request: type }));
      }, Math.max(0, deadline - Date.now()));
      waiter.resolve = (conn) => {
        clearTimeout(timer);
        resolve(conn);
      };
      waiter.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
    });
  }

  /** Writes one request on `conn` and resolves with its validated result. */
  private request<T extends RequestType>(conn: Conn, type: T, params: object, timeoutMs: number = this.timeoutMs): Promise<ResultOf<T>> {
    return new Promise<ResultOf<T>>((resolve, reject) => {
      if (!conn.alive || conn.ws.readyState !== OPEN) {
        reject(new SwitchboardError("disconnected", "not connected", { request: type }));
        return;
      }
      const ref = ++this.refs;
      const pending: Pending = { type, resolve: resolve as (r: unknown) => void, reject, timer: undefined };
      if (timeoutMs !== Infinity) {
        pending.timer = setTimeout(() => {
          conn.pending.delete(ref);
          reject(new SwitchboardError("timeout", `no reply to ${type} within ${Math.round(timeoutMs)} ms`, { request: type }));
        }, Math.max(0, timeoutMs));
      }
      conn.pending.set(ref, pending);
      try {
        conn.ws.send(JSON.stringify({ type, ref, ...params }));
      } catch (cause) {
        conn.pending.delete(ref);
        clearTimeout(pending.timer);
        reject(new SwitchboardError("disconnected", "the connection refused the frame", { request: type, cause }));
      }
    });
  }

  // ---------------------------------------------------------------- connection

  private setState(state: ConnectionState): void {
    const previous = this.currentState;
    if (previous === state) return;
    this.currentState = state;
    this.events.emit("state", { state, previous });
  }

  private openSocket(): void {
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.options.url);
    } catch (cause) {
      this.events.emit("error", new SwitchboardError("closed", `cannot open ${this.options.url}`, { cause }));
      this.stop(1006, "cannot open the WebSocket", new SwitchboardError("closed", `cannot open ${this.options.url}`, { cause }));
      return;
    }
    const conn: Conn = { ws, alive: true, ready: false, signedIn: false, pending: new Map(), heartbeat: undefined };
    this.conn = conn;
    ws.onopen = () => {
      if (conn === this.conn) void this.restore(conn);
    };
    ws.onmessage = (e) => {
      if (conn === this.conn) this.onFrame(conn, e.data);
    };
    ws.onclose = (e) => {
      if (conn === this.conn) this.lost(conn, e.code, e.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  /** After (re)connecting: sign in with the token, re-join the rooms, then open the gates. */
  private async restore(conn: Conn): Promise<void> {
    try {
      if (this.sessionToken !== null) {
        let user: User;
        try {
          ({ user } = await this.request(conn, "auth", { token: this.sessionToken }));
        } catch (e) {
          if (e instanceof SwitchboardError && e.code === "unauthorized") {
            if (conn === this.conn) this.signOut("unauthorized");
            return;
          }
          throw e;
        }
        if (conn !== this.conn) return;
        await this.signedIn(conn, user, []);
      }
      if (conn !== this.conn) return;
      conn.ready = true;
      this.attempt = 0;
      this.setState("open");
      this.startHeartbeat(conn);
      this.events.emit("open", { user: this.currentUser });
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of waiters) w.resolve(conn);
      this.pumpOutbox();
    } catch (e) {
      if (conn !== this.conn) return;
      if (e instanceof SwitchboardError && e.code !== "disconnected" && e.code !== "timeout") this.events.emit("error", e);
      this.drop(conn, "could not restore the session");
    }
  }

  /**
   * The connection is signed in as `user`: adopt (or reset) the store, follow its rooms,
   * and join every room not joined on this connection. Resolves when all are live.
   */
  private async signedIn(conn: Conn, user: User, rejoin: RoomFeed[]): Promise<void> {
    conn.signedIn = true;
    this.currentUser = user;
    if (this.persisted.user !== null && this.persisted.user !== user.username) {
      // Someone else's place in the rooms and unsent messages: not ours to send.
      for (const feed of [...this.feeds.values()]) this.untrack(feed, new SwitchboardError("signed_out", "signed in as another user", { request: "send" }));
      this.rejectAllSends(new SwitchboardError("signed_out", "signed in as another user", { request: "send" }));
      this.persisted = emptyState();
    }
    this.persisted.user = user.username;
    this.save(true);
    this.trackStoredRooms();
    for (const feed of rejoin) if (this.feeds.get(feed.room) === feed) feed.reset();
    const joins = [...this.feeds.values()].filter((f) => f.phase === "idle").map((f) => this.joinFeed(conn, f, true));
    await Promise.all(joins);
  }

  /**
   * Joins `feed`'s room with `since` = the last delivered seq, and reads history to
   * close any gap. Rejects only when the connection failed (to be retried after the
   * reconnect); a refusal stops following the room.
   */
  private async joinFeed(conn: Conn, feed: RoomFeed, rejoin: boolean): Promise<void> {
    feed.phase = "joining";
    const generation = feed.generation;
    const since = feed.lastDelivered ?? undefined;
    const joining = this.request(conn, "join", since === undefined ? { room: feed.room } : { room: feed.room, since });
    feed.joining = joining;
    joining.catch(() => {}); // awaited by whoever asked; the rejection is handled below
    const stale = () => conn !== this.conn || feed.generation !== generation || this.feeds.get(feed.room) !== feed;
    let result: ResultOf<"join">;
    try {
      result = await joining;
    } catch (e) {
      if (stale()) return;
      const err = e instanceof SwitchboardError ? e : new SwitchboardError("internal", String(e));
      if (!err.fromClient || err.code === "invalid_frame") {
        this.untrack(feed, err);
        if (rejoin) this.events.emit("error", err);
        return;
      }
      feed.phase = "idle";
      throw err;
    }
    if (stale()) return;
    const { fillTo, mismatch } = feed.joined(result, since);
    this.persisted.seqs[feed.room] = feed.lastDelivered ?? result.seq;
    this.save(false);
    if (mismatch) {
      this.events.emit(
        "error",
        new SwitchboardError("history_mismatch", `${feed.room} ends at seq ${result.seq}, before the seq ${since} this client delivered`),
      );
    }
    this.events.emit("joined", { ...result, rejoin });
    this.pumpOutbox();
    if (fillTo !== null) await this.fill(conn, feed, fillTo);
  }

  /** Reads `history` forward from the last delivered seq up to `target`, then delivers held messages. */
  private async fill(conn: Conn, feed: RoomFeed, target: number): Promise<void> {
    const generation = feed.generation;
    const stale = () => conn !== this.conn || feed.generation !== generation || this.feeds.get(feed.room) !== feed;
    for (;;) {
      while (feed.lastDelivered !== null && feed.lastDelivered < target) {
        const before = Math.min(feed.lastDelivered + this.pageSize + 1, target + 1);
        const page = await this.request(conn, "history", { room: feed.room, before, limit: this.pageSize });
        if (stale()) return;
        if (!feed.fillPage(page.messages)) {
          this.events.emit(
            "error",
            new SwitchboardError("history_mismatch", `${feed.room}: seqs ${feed.lastDelivered + 1}..${target} are missing from history`),
          );
          feed.skipTo(target);
          this.persisted.seqs[feed.room] = target;
        }
        this.save(false);
      }
      const next = feed.finishFill();
      this.save(false);
      if (next === null) return;
      target = next;
    }
  }

  private onFrame(conn: Conn, data: unknown): void {
    if (typeof data !== "string") {
      this.events.emit("error", new SwitchboardError("invalid_frame", "the server sent a binary frame"));
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      this.events.emit("error", new SwitchboardError("invalid_frame", "the server sent a frame that is not JSON"));
      return;
    }
    let parsed: ReturnType<typeof ServerFrame.safeParse>;
    try {
      parsed = ServerFrame.safeParse(json);
    } catch {
      parsed = { success: false } as never;
    }
    if (!parsed.success) {
      const issues = parsed.error ? issuesOf(parsed.error) : undefined;
      const err = new SwitchboardError("invalid_frame", "the server sent a frame that fails the protocol schema", { issues });
      // A malformed reply still settles its request, so that the caller is not left hanging.
      const ref = (json as { ref?: unknown } | null)?.ref;
      const pending = typeof ref === "number" ? this.takePending(conn, ref) : undefined;
      if (pending) pending.reject(new SwitchboardError("invalid_frame", err.message, { issues, request: pending.type }));
      this.events.emit("error", err);
      return;
    }
    const frame = parsed.data;
    switch (frame.type) {
      case "ok": {
        const pending = typeof frame.ref === "number" ? this.takePending(conn, frame.ref) : undefined;
        if (!pending) return; // a reply to a request that timed out
        let result: ReturnType<(typeof resultSchemas)[RequestType]["safeParse"]>;
        try {
          result = resultSchemas[pending.type].safeParse(frame);
        } catch {
          result = { success: false } as never;
        }
        if (result.success) {
          pending.resolve(result.data);
        } else {
          const err = new SwitchboardError("invalid_frame", `the reply to ${pending.type} fails its schema`, {
            issues: result.error ? issuesOf(result.error) : undefined,
            request: pending.type,
          });
          pending.reject(err);
          this.events.emit("error", err);
        }
        return;
      }
      case "error": {
        const pending = typeof frame.ref === "number" ? this.takePending(conn, frame.ref) : undefined;
        if (pending) pending.reject(fromReply(frame, pending.type));
        else this.events.emit("error", fromReply(frame, undefined));
        return;
      }
      case "message": {
        const feed = this.feeds.get(frame.room);
        if (!feed) return;
        const gap = feed.accept(frame);
        if (gap !== null) {
          this.fill(conn, feed, gap).catch((e) => this.backgroundError(conn, e));
        }
        return;
      }
      case "presence":
        if (this.feeds.has(frame.room)) this.events.emit("presence", frame);
        return;
    }
  }

  private takePending(conn: Conn, ref: number): Pending | undefined {
    const pending = conn.pending.get(ref);
    if (!pending) return undefined;
    conn.pending.delete(ref);
    clearTimeout(pending.timer);
    return pending;
  }

  /** Background work failed: a lost connection is handled by `lost`; anything else is reported. */
  private backgroundError(conn: Conn, e: unknown): void {
    if (conn !== this.conn) return;
    if (e instanceof SwitchboardError && e.code === "disconnected") return;
    if (e instanceof SwitchboardError && e.code === "timeout") {
      this.drop(conn, "a request timed out");
      return;
    }
    this.events.emit("error", e instanceof SwitchboardError ? e : new SwitchboardError("internal", String(e), { cause: e }));
  }

  private startHeartbeat(conn: Conn): void {
    if (this.heartbeatMs <= 0) return;
    conn.heartbeat = setInterval(() => {
      if (conn !== this.conn) return;
      this.request(conn, "ping", {}).catch((e) => {
        if (conn === this.conn && e instanceof SwitchboardError && e.code === "timeout") this.drop(conn, "no answer to ping");
      });
    }, this.heartbeatMs);
  }

  /** Gives up on a connection that seems dead: close it and reconnect. */
  private drop(conn: Conn, reason: string): void {
    this.detach(conn, CLIENT_DROP, reason);
    this.lost(conn, CLIENT_DROP, reason);
  }

  private detach(conn: Conn, code: number, reason: string): void {
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onclose = null;
    try {
      conn.ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  /** The connection is gone: settle what was in flight and decide what comes next. */
  private lost(conn: Conn, code: number, reason: string): void {
    if (conn !== this.conn) return;
    this.conn = null;
    conn.alive = false;
    clearInterval(conn.heartbeat);
    const pending = [...conn.pending.values()];
    conn.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new SwitchboardError("disconnected", `the connection closed (${code}) before the reply`, { request: p.type }));
    }
    for (const feed of this.feeds.values()) feed.reset();
    this.inFlight = null;
    if (this.currentState === "closed" || this.currentState === "signed-out") return;
    if (code === 4001) {
      this.signOut("revoked");
      return;
    }
    if (FATAL_CLOSE.has(code)) {
      const err = new SwitchboardError("closed", `the server closed the connection with ${code}: ${reason}`);
      this.events.emit("error", err);
      this.stop(code, reason, err);
      return;
    }
    const attempt = this.attempt++;
    const delayMs = backoffDelay(attempt, this.backoff, this.random);
    this.setState("reconnecting");
    this.events.emit("reconnecting", { attempt: attempt + 1, delayMs, code, reason });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.currentState === "reconnecting") this.openSocket();
    }, delayMs);
  }

  /** The session ended: no reconnect loop until a sign-in request (or `connect()`). */
  private signOut(reason: ClientEvents["signed-out"]["reason"]): void {
    this.sessionToken = null;
    this.currentUser = null;
    // In memory only: the store keeps the place in each room for this user's next sign-in.
    for (const feed of this.feeds.values()) feed.reset();
    this.feeds.clear();
    this.shutdownConn(1000, "signed out");
    this.setState("signed-out");
    this.events.emit("signed-out", { reason });
    const waiters = this.readyWaiters;
    this.readyWaiters = waiters.filter((w) => w.signIn);
    for (const w of waiters) if (!w.signIn) w.reject(new SwitchboardError("signed_out", "the session ended"));
    if (this.readyWaiters.length > 0) this.connect();
  }

  private shutdownConn(code: number, reason: string): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const conn = this.conn;
    if (!conn) return;
    this.detach(conn, code, reason);
    this.conn = null;
    conn.alive = false;
    clearInterval(conn.heartbeat);
    for (const p of conn.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new SwitchboardError("disconnected", reason, { request: p.type }));
    }
    conn.pending.clear();
    for (const feed of this.feeds.values()) feed.reset();
    this.inFlight = null;
  }

  private stop(code: number, reason: string, error: SwitchboardError): void {
    this.shutdownConn(code, reason);
    clearTimeout(this.rateLimitTimer);
    this.rateLimitTimer = undefined;
    this.setState("closed");
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(error);
    this.rejectAllSends(error, false);
    this.flushSave();
    this.events.emit("closed", { code, reason });
  }

  // ---------------------------------------------------------------- rooms and outbox

  private track(room: string, lastDelivered: number | null): RoomFeed {
    const feed = new RoomFeed(room, lastDelivered, (m) => {
      this.persisted.seqs[room] = m.seq;
      this.save(false);
      this.events.emit("message", m);
    });
    this.feeds.set(room, feed);
    return feed;
  }

  /** Stops following `feed`'s room; its unsent messages are dropped with `error`. */
  private untrack(feed: RoomFeed, error: SwitchboardError): void {
    if (this.feeds.get(feed.room) !== feed) return;
    feed.reset();
    this.feeds.delete(feed.room);
    delete this.persisted.seqs[feed.room];
    const dropped = this.persisted.outbox.filter((e) => e.room === feed.room);
    this.persisted.outbox = this.persisted.outbox.filter((e) => e.room !== feed.room);
    this.save(true);
    for (const e of dropped) this.settleSend(e.nonce, null, error);
  }

  /** Follows the rooms the store remembers (and those with unsent messages). */
  private trackStoredRooms(): void {
    for (const [room, seq] of Object.entries(this.persisted.seqs)) if (!this.feeds.has(room)) this.track(room, seq);
    for (const e of this.persisted.outbox) if (!this.feeds.has(e.room)) this.track(e.room, null);
  }

  private settleSend(nonce: string, result: ResultOf<"send"> | null, error?: SwitchboardError): void {
    const list = this.outboxWaiters.get(nonce);
    if (!list) return;
    this.outboxWaiters.delete(nonce);
    for (const w of list) {
      if (result) w.resolve(result);
      else w.reject(error!);
    }
  }

  /** Rejects every waiting `send`; with `forget`, the outbox is emptied too. */
  private rejectAllSends(error: SwitchboardError, forget = true): void {
    if (forget) {
      this.persisted.outbox = [];
      this.save(true);
    }
    const all = [...this.outboxWaiters.values()].flat();
    this.outboxWaiters.clear();
    for (const w of all) w.reject(error);
  }

  /**
   * Sends the oldest unsent message whose room is joined on this connection, one at a
   * time: a refusal (a rate limit, say) can then never let a later message overtake it.
   */
  private pumpOutbox(): void {
    const conn = this.conn;
    if (!conn || !conn.alive || this.inFlight || this.rateLimitTimer !== undefined) return;
    const entry = this.persisted.outbox.find((e) => {
      const phase = this.feeds.get(e.room)?.phase;
      return phase === "live" || phase === "filling";
    });
    if (!entry) return;
    this.inFlight = entry;
    this.request(conn, "send", { room: entry.room, body: entry.body, nonce: entry.nonce }).then(
      (result) => {
        if (this.inFlight === entry) this.inFlight = null;
        this.removeEntry(entry);
        this.settleSend(entry.nonce, result);
        this.pumpOutbox();
      },
      (e: SwitchboardError) => {
        if (conn !== this.conn) return; // lost: the entry is sent again after the reconnect
        if (this.inFlight === entry) this.inFlight = null;
        if (e.code === "disconnected") return;
        if (e.code === "timeout") {
          this.drop(conn, "a send was not answered");
          return;
        }
        if (e.code === "rate_limited") {
          this.rateLimitTimer = setTimeout(() => {
            this.rateLimitTimer = undefined;
            this.pumpOutbox();
          }, e.retryAfterMs ?? 1000);
          return;
        }
        this.removeEntry(entry);
        this.settleSend(entry.nonce, null, e);
        this.pumpOutbox();
      },
    );
  }

  private removeEntry(entry: OutboxEntry): void {
    const i = this.persisted.outbox.indexOf(entry);
    if (i < 0) return;
    this.persisted.outbox.splice(i, 1);
    this.save(true);
  }

  /**
   * Persists the state. Outbox changes are saved at once (a reload must not lose a
   * send); seq updates are coalesced to one write per tick.
   */
  private save(now: boolean): void {
    if (now) {
      this.flushSave();
      return;
    }
    if (this.saveScheduled) return;
    this.saveScheduled = true;
    queueMicrotask(() => {
      if (this.saveScheduled) this.flushSave();
    });
  }

  private flushSave(): void {
    this.saveScheduled = false;
    this.store.save(this.persisted);
    const key = this.persisted.outbox.map((e) => e.nonce).join(" ");
    if (key !== this.outboxKey) {
      this.outboxKey = key;
      this.events.emit("outbox", { pending: this.outbox });
    }
  }
}

/**
 * Creates a Switchboard client and starts connecting.
 *
 * @example
 * import { createClient } from "switchboard/client";
 *
 * const client = createClient({ url: "ws://localhost:8081/ws" });
 * client.on("message", (m) => console.log(`#${m.room} ${m.user}: ${m.body}`));
 * const { token } = await client.signup({ username: "ada", password: "correct horse battery" });
 * await client.join({ room: "lobby" });
 * await client.send({ room: "lobby", body: "hello" });
 */
export function createClient(options: ClientOptions): SwitchboardClient {
  return new SwitchboardClient(options);
}
