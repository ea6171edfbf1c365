import type { ServerWebSocket } from "bun";
import type { Request, User } from "../protocol/index.ts";

/** Per-connection state, kept in `ws.data`. Kept small: 10,000 idle connections must stay cheap. */
export interface Conn {
  readonly id: number;
  /** The client's address, for sign-in failure limits. */
  readonly address: string;
  user: User | null;
  sessionId: number | null;
  /** Rooms this connection joined, by name. */
  rooms: Set<string>;
  /** Rooms whose missed messages are still being replayed: name -> last seq sent. */
  catchups: Map<string, number> | null;
  /** Invalid frames in a row. */
  invalidStreak: number;
  /** Send token bucket. */
  sendTokens: number;
  sendRefilledAt: number;
  /** When the last send it refused may run (`nextSlot`, clock ms); the next refused one comes after it. */
  sendQueuedUntil: number;
  /** Request token bucket (every frame), refilled by performance.now(); below 0 it is debt. */
  requestTokens: number;
  requestRefilledAt: number;
  /** When the last frame it refused may run (`nextSlot`, performance.now() ms); see RequestBudget. */
  requestQueuedUntil: number;
  /** Frames that arrived while an earlier sign-in was still hashing; run in order after it (at most MAX_PENDING). */
  pending: Array<{ request: Request; arrivedAt: number }> | null;
  busy: boolean;
  closed: boolean;
  /** The code the server closed the connection with (`Outbound.close`); 0 while it has not. */
  closedWith: number;
  /** Outbound's bound: until this many bytes have been published, the send buffer cannot be past its limit. */
  slackUntil: number;
}

export type Socket = ServerWebSocket<Conn>;

/** Frames a connection may have waiting behind a sign-in (`Conn.pending`); more are refused `rate_limited`. */
export const MAX_PENDING = 64;

let nextId = 1;

export function createConn(address: string, burst: number, now: number, requestBurst: number): Conn {
  return {
    id: nextId++,
    address,
    user: null,
    sessionId: null,
    rooms: new Set(),
    catchups: null,
    invalidStreak: 0,
    sendTokens: burst,
    sendRefilledAt: now,
    sendQueuedUntil: 0,
    requestTokens: requestBurst,
    requestRefilledAt: performance.now(),
    requestQueuedUntil: 0,
    pending: null,
    busy: false,
    closed: false,
    closedWith: 0,
    slackUntil: 0,
  };
}
