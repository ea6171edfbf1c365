import { CloseCode, type MessageEvent, type PresenceEvent, type RequestType, type User } from "../protocol/index.ts";
import { backoffDelay, checkBackoff, defaultBackoff, type Backoff } from "./backoff.ts";
import type { Emitter } from "./emitter.ts";
import { SwitchboardError } from "./errors.ts";
import { DEFAULT_MAX_IN_FLIGHT, Socket } from "./socket.ts";
import { after, checkTimeout } from "./timeouts.ts";
import type { ClientEvents, ClientOptions, ConnectionState, WebSocketConstructor, WebSocketLike } from "./types.ts";

/** What the rest of the client does at each turn of the connection's life. */
export interface ConnectionHooks {
  /** The session token to sign in with on a new socket, or null. */
  token(): string | null;
  /** A new socket is open: end, first, a session whose `logout` the server did not hear. */
  revokeLeftover(socket: Socket): Promise<void>;
  /** The signed-in user, for the `open` event. */
  user(): User | null;
  /** A new socket signed in with the token: resolves when the rooms are joined again. */
  signedIn(socket: Socket, user: User): Promise<void>;
  /** The server refused the token, or revoked the session (close 4001). */
  signOut(reason: "revoked" | "unauthorized"): void;
  /** The socket is restored and requests go out. */
  opened(): void;
  /** A room's message or presence event. */
  roomEvent(socket: Socket, event: MessageEvent | PresenceEvent): void;
  /** The socket is gone: nothing is joined or in flight any more. */
  detached(): void;
  /** The client stopped: what waits is settled with `error`. */
  stopped(error: SwitchboardError): void;
}

interface ReadyWaiter {
  type: RequestType;
  signIn: boolean;
  resolve(socket: Socket): void;
  reject(error: SwitchboardError): void;
}

/** Requests that work without a session: they reconnect a signed-out client. */
const CONNECTS: ReadonlySet<RequestType> = new Set(["signup", "login", "auth", "ping"]);
/** Close codes after which reconnecting would only repeat the failure. */
const FATAL_CLOSE: ReadonlySet<number> = new Set([CloseCode.unsupportedData, CloseCode.policyViolation, CloseCode.tooBig]);
/** Client-initiated close of a connection it gave up on (heartbeat, failed restore). */
const CLIENT_DROP = 4000;

/**
 * The connection's life: opening a socket, signing in again and re-joining on it,
 * the heartbeat, reconnecting with backoff, and the requests waiting for all that.
 */
export class Connection {
  readonly timeoutMs: number;
  private readonly WS: WebSocketConstructor;
  private readonly backoff: Backoff;
  private readonly heartbeatMs: number;
  private readonly maxInFlight: number;
  private readonly random: () => number;

  private currentState: ConnectionState = "closed";
  private socket: Socket | null = null;
  private refs = 0;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private readyWaiters: ReadyWaiter[] = [];

  constructor(
    private readonly options: ClientOptions,
    private readonly events: Emitter<ClientEvents>,
    private readonly hooks: ConnectionHooks,
  ) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("createClient: no WebSocket implementation; pass options.WebSocket");
    this.WS = WS;
    this.timeoutMs = checkTimeout("createClient: requestTimeoutMs", options.requestTimeoutMs ?? 10_000);
    this.backoff = checkBackoff(options.backoff ?? defaultBackoff);
    this.heartbeatMs = options.heartbeatMs ?? 25_000;
    if (!(this.heartbeatMs >= 0) || this.heartbeatMs === Infinity) {
      throw new RangeError(`createClient: heartbeatMs: expected milliseconds (0 turns it off), got ${this.heartbeatMs}`);
    }
    this.maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isSafeInteger(this.maxInFlight) || this.maxInFlight < 1) {
      throw new RangeError(`createClient: maxInFlight: expected an integer, 1 or more, got ${this.maxInFlight}`);
    }
    this.random = options.random ?? Math.random;
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The socket in use, or null between sockets. */
  get current(): Socket | null {
    return this.socket;
  }

  /**
   * Opens a socket. `announce: "later"` (the connection `createClient` starts) emits the
   * `state` and `connecting` events after the caller's synchronous code, so that the
   * listeners it adds right after `createClient` see them; the state is `connecting` at once.
   */
  connect(announce: "now" | "later" = "now"): void {
    if (this.socket || this.reconnectTimer !== undefined) return;
    if (this.currentState === "connecting" || this.currentState === "reconnecting" || this.currentState === "open") return;
    if (announce === "now") {
      this.setState("connecting");
      this.events.emit("connecting", {});
    } else {
      const previous = this.currentState;
      this.currentState = "connecting";
      queueMicrotask(() => {
        // Closed (or already past connecting) meanwhile: those events told the story.
        if (this.currentState !== "connecting") return;
        this.events.emit("state", { state: "connecting", previous });
        this.events.emit("connecting", {});
      });
    }
    this.openSocket();
  }

  close(): void {
    if (this.currentState === "closed") return;
    this.stop(1000, "client closed", new SwitchboardError("closed", "the client was closed"));
  }

  /** Resolves with a restored socket (waiting for one), or rejects when there will be none. */
  whenReady(type: RequestType, deadline: number): Promise<Socket> {
    // A socket whose close frame came in but whose close event has not run yet is not
    // used: the request waits for the next connection (it was rejected "not connected").
    if (this.currentState === "open" && this.socket?.ready && this.socket.writable) return Promise.resolve(this.socket);
    if (this.currentState === "closed") return Promise.reject(new SwitchboardError("closed", "the client was closed", { request: type }));
    if (this.currentState === "signed-out") {
      if (!CONNECTS.has(type)) return Promise.reject(new SwitchboardError("signed_out", "sign in first", { request: type }));
      this.connect();
    }
    return new Promise<Socket>((resolve, reject) => {
      const waiter: ReadyWaiter = { type, signIn: CONNECTS.has(type), resolve, reject };
      this.readyWaiters.push(waiter);
      const timer = after(deadline - Date.now(), () => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(new SwitchboardError("timeout", `not connected within the timeout`, { request: type }));
      });
      waiter.resolve = (socket) => {
        clearTimeout(timer);
        resolve(socket);
      };
      waiter.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
    });
  }

  /** Gives up on a socket that seems dead: close it and reconnect. */
  drop(socket: Socket, reason: string): void {
    socket.close(CLIENT_DROP, reason);
    this.lost(socket, CLIENT_DROP, reason);
  }

  /** Background work failed: a lost connection is handled by `lost`; anything else is reported. */
  backgroundError(socket: Socket, e: unknown): void {
    if (socket !== this.socket) return;
    if (e instanceof SwitchboardError && e.code === "disconnected") return;
    if (e instanceof SwitchboardError && e.code === "timeout") {
      this.drop(socket, "a request timed out");
      return;
    }
    this.events.emit("error", e instanceof SwitchboardError ? e : new SwitchboardError("internal", String(e), { cause: e }));
  }

  /** The session ended: no reconnect loop until a sign-in request (or `connect()`). */
  signedOut(reason: ClientEvents["signed-out"]["reason"]): void {
    this.shutdown(1000, "signed out");
    this.setState("signed-out");
    this.events.emit("signed-out", { reason });
    const waiters = this.readyWaiters;
    this.readyWaiters = waiters.filter((w) => w.signIn);
    for (const w of waiters) if (!w.signIn) w.reject(new SwitchboardError("signed_out", "the session ended", { request: w.type }));
    if (this.readyWaiters.length > 0) this.connect();
  }

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
    const socket = new Socket(ws, () => ++this.refs, this.timeoutMs, this.maxInFlight);
    this.socket = socket;
    // A handshake that gets no answer (a link that drops packets, a captive portal) is
    // given up after the request timeout: the runtime's own limit can be far longer
    // (Bun's took 11 s), and requests would wait behind it.
    const handshake = after(this.timeoutMs, () => {
      if (socket === this.socket && ws.readyState === 0) this.drop(socket, "no answer to the WebSocket handshake"); // 0: still CONNECTING
    });
    ws.onopen = () => {
      clearTimeout(handshake);
      if (socket === this.socket) void this.restore(socket);
    };
    ws.onmessage = (e) => {
      if (socket !== this.socket) return;
      const event = socket.receive(e.data, (error) => this.events.emit("error", error));
      if (event) this.hooks.roomEvent(socket, event);
    };
    ws.onclose = (e) => {
      clearTimeout(handshake);
      if (socket === this.socket) this.lost(socket, e.code, e.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  /** After (re)connecting: sign in with the token, re-join the rooms, then open the gates. */
  private async restore(socket: Socket): Promise<void> {
    try {
      await this.hooks.revokeLeftover(socket);
      if (socket !== this.socket) return;
      const token = this.hooks.token();
      if (token !== null) {
        let user: User;
        try {
          ({ user } = await socket.request("auth", { token }));
        } catch (e) {
          if (e instanceof SwitchboardError && e.code === "unauthorized") {
            if (socket === this.socket) this.hooks.signOut("unauthorized");
            return;
          }
          throw e;
        }
        if (socket !== this.socket) return;
        await this.hooks.signedIn(socket, user);
      }
      if (socket !== this.socket) return;
      socket.ready = true;
      this.attempt = 0;
      this.setState("open");
      this.startHeartbeat(socket);
      this.events.emit("open", { user: this.hooks.user() });
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of waiters) w.resolve(socket);
      this.hooks.opened();
    } catch (e) {
      if (socket !== this.socket) return;
      if (e instanceof SwitchboardError && e.code !== "disconnected" && e.code !== "timeout") this.events.emit("error", e);
      this.drop(socket, "could not restore the session");
    }
  }

  private startHeartbeat(socket: Socket): void {
    if (this.heartbeatMs <= 0) return;
    socket.heartbeat = setInterval(() => {
      if (socket !== this.socket) return;
      socket.request("ping", {}).catch((e) => {
        if (socket === this.socket && e instanceof SwitchboardError && e.code === "timeout") this.drop(socket, "no answer to ping");
      });
    }, this.heartbeatMs);
  }

  /** The socket is gone: settle what was in flight and decide what comes next. */
  private lost(socket: Socket, code: number, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = null;
    const tooLarge = socket.end(`the connection closed (${code}) before the reply`, code);
    this.hooks.detached();
    if (this.currentState === "closed" || this.currentState === "signed-out") return;
    if (code === CloseCode.sessionRevoked) {
      this.hooks.signOut("revoked");
      return;
    }
    // A send over the frame limit is dropped from the outbox (rejected `too_large`), so
    // reconnecting does not repeat it; before, it closed the client for good, and the
    // stored outbox wrote it again after every page reload.
    if (FATAL_CLOSE.has(code) && !(code === CloseCode.tooBig && tooLarge === "send")) {
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

  /** Closes the socket in use (if any) and stops reconnecting. */
  private shutdown(code: number, reason: string): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const socket = this.socket;
    if (!socket) return;
    socket.close(code, reason);
    this.socket = null;
    socket.end(reason);
    this.hooks.detached();
  }

  private stop(code: number, reason: string, error: SwitchboardError): void {
    this.shutdown(code, reason);
    this.setState("closed");
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(error.forRequest(w.type));
    this.hooks.stopped(error);
    this.events.emit("closed", { code, reason });
  }
}
