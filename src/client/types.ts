import type { MessageEvent, PresenceEvent, ResultOf, User } from "../protocol/index.ts";
import type { Backoff } from "./backoff.ts";
import type { SwitchboardError } from "./errors.ts";
import type { ClientStore, OutboxEntry } from "./store.ts";

/**
 * A handler property: checked like a method, so that a WebSocket whose handlers take a
 * richer event (the DOM's `(ev: Event) => any`) is accepted.
 */
type Handler<E> = { bivarianceHack(event: E): void }["bivarianceHack"];

/** The part of the WebSocket API the client uses (browsers, Bun, Deno, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onclose: Handler<{ code: number; reason: string }> | null;
  onerror: Handler<unknown> | null;
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
  /**
   * Requests written and not yet answered, at most (default 32; an integer, 1 or more).
   * The rest wait their turn; a `rate_limited` answer pauses writing for its
   * `retryAfterMs` and halves this for the connection. Below 64, a burst of calls cannot
   * get the connection closed with 1008, whatever the server's limits.
   */
  maxInFlight?: number;
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
