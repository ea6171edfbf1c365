import { MAX_PENDING, type Conn } from "./connection.ts";

/**
 * A token bucket's tokens at `now`: `tokens` at `since`, refilled at `rate` a second up
 * to `burst` (times in ms). Every bucket of the server refills this way: sends, requests,
 * and HTTP requests per address.
 */
export function refilled(tokens: number, since: number, now: number, rate: number, burst: number): number {
  return Math.min(burst, tokens + ((now - since) * rate) / 1000);
}

/** Milliseconds until a bucket holding `tokens` is back to `level` at `rate` a second. */
export function msUntil(tokens: number, level: number, rate: number): number {
  return Math.max(0, Math.ceil(((level - tokens) * 1000) / rate));
}

/**
 * Bytes of a reply past its first KiB, or of what a connection makes the server send
 * besides (replayed messages, its presence events to a room), that cost one request
 * token (a request's own token pays for a reply of up to this size). A history
 * page or a catch-up costs far more than the frame that asked for it: two connections
 * pipelining `history` of 100 large messages (a reply of up to half the send buffer
 * each, 200 a second each) kept the server's core busy and other clients' pings at
 * p50 46 ms. Counted in UTF-16 units, which is bytes for ASCII.
 */
export const BYTES_PER_TOKEN = 1024;

/**
 * The least debt that closes a connection (see `RequestBudget.floodDebt`): twice the
 * frames the server holds behind a sign-in (MAX_PENDING). A client with fewer than MAX_PENDING requests
 * unanswered at a time, which stops writing at a `rate_limited` until its
 * `retryAfterMs` (the SDK does), never gets there: its refused frames are fewer than
 * its window, and replies take at most half a burst.
 */
export const FLOOD_DEBT_MIN = 2 * MAX_PENDING;

/**
 * A connection's request budget (`Conn.requestTokens`): `rate` tokens a second up to
 * `burst`, refilled by `performance.now()`. Every frame takes one token (the
 * dispatcher), a reply one more per BYTES_PER_TOKEN past its first, and what else the
 * connection causes to be sent one per BYTES_PER_TOKEN. Below 0 it is debt: requests are refused until it is
 * paid back. Replies take it at most half a burst into debt, so that only frames sent
 * while refused can reach the dispatcher's close at a whole burst.
 */
export class RequestBudget {
  private readonly replyFloor: number;
  /**
   * The debt at which a connection is closed with 1008: a whole burst, and never less
   * than FLOOD_DEBT_MIN, so that a client pipelining requests can hear its first
   * `rate_limited` and stop before it is closed, whatever the configured burst. (With a
   * burst of 20, a client that had 32 requests unanswered was closed while it still
   * read the first refusals: each answer that passed let one more go out.)
   */
  readonly floodDebt: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {
    this.replyFloor = -burst / 2;
    this.floodDebt = Math.max(burst, FLOOD_DEBT_MIN);
  }

  /** Adds what accrued since the last refill; returns the tokens now. */
  refill(conn: Conn, now: number): number {
    conn.requestTokens = refilled(conn.requestTokens, conn.requestRefilledAt, now, this.rate, this.burst);
    conn.requestRefilledAt = now;
    return conn.requestTokens;
  }

  /**
   * Takes the cost of a frame of `chars` from the client: one token, and one more per
   * BYTES_PER_TOKEN past its first, as for a reply (parsing is per byte: 64 KiB frames
   * at 1,900 a second, under the request rate when each cost one token, kept half a core
   * busy; now they cost 64). Returns whether the frame may run: the bucket held its cost
   * (or, for a frame costing more than the whole burst, a full bucket). A frame that
   * runs takes the bucket at most half a burst into debt, as replies do; a refused one
   * adds its whole cost to the debt, so that a flood of large frames is closed sooner.
   */
  spendFrame(conn: Conn, chars: number): boolean {
    const cost = chars > BYTES_PER_TOKEN ? chars / BYTES_PER_TOKEN : 1;
    const runs = conn.requestTokens >= this.need(chars);
    if (runs) this.take(conn, cost);
    else conn.requestTokens -= cost;
    return runs;
  }

  /** The tokens a frame of `chars` needs in the bucket to run (see `spendFrame`). */
  need(chars: number): number {
    return Math.min(this.burst, chars > BYTES_PER_TOKEN ? chars / BYTES_PER_TOKEN : 1);
  }

  /** Takes the cost of a reply of `chars` beyond the request's own token. */
  chargeReply(conn: Conn, chars: number): void {
    if (chars > BYTES_PER_TOKEN) this.take(conn, (chars - BYTES_PER_TOKEN) / BYTES_PER_TOKEN);
  }

  /** Takes the cost of `chars` sent because of the connection (a replayed message, a presence event to others), which no request's token paid for. */
  chargeCaused(conn: Conn, chars: number): void {
    this.take(conn, chars / BYTES_PER_TOKEN);
  }

  private take(conn: Conn, tokens: number): void {
    conn.requestTokens = Math.max(Math.min(this.replyFloor, conn.requestTokens), conn.requestTokens - tokens);
  }

  /** Milliseconds until the tokens are back to `level` (after a refill). */
  msUntil(conn: Conn, level: number): number {
    return msUntil(conn.requestTokens, level, this.rate);
  }
}

/** A refused address is logged at most this often. */
const LOG_EVERY_MS = 10_000;

/**
 * HTTP requests per client address: `rate` a second, bursts of `burst`. A WebSocket
 * upgrade that succeeds takes nothing (its socket has the request budget, and
 * MAX_CONNECTIONS); everything else takes a token. One connection pipelining
 * `GET /nope` 64 to a write was answered 74,000 times a second and held every other
 * client's ping at p50 0.9 s; past the burst the answer is now 429 with
 * `Connection: close`, and Bun drops the requests pipelined behind it.
 * Memory: one entry per address seen lately. `sweep` drops the full ones; past
 * `maxAddresses` they are dropped at once, and if all are busy, all are forgotten (a
 * flood from that many addresses is not one this can stop).
 */
export class AddressLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number; refused: number; loggedAt: number }>();

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly maxAddresses = 100_000,
  ) {}

  /**
   * Takes a token for `address`: `waitMs` 0 if it had one, else the ms until it will;
   * `log` (at most every LOG_EVERY_MS per address) the refusals since the last one logged.
   */
  take(address: string, now: number): { waitMs: number; log: number } {
    let b = this.buckets.get(address);
    if (!b) {
      if (this.buckets.size >= this.maxAddresses) this.sweep(now, true);
      b = { tokens: this.burst, at: now, refused: 0, loggedAt: -Infinity };
      this.buckets.set(address, b);
    }
    b.tokens = refilled(b.tokens, b.at, now, this.rate, this.burst);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { waitMs: 0, log: 0 };
    }
    b.refused++;
    let log = 0;
    if (now - b.loggedAt >= LOG_EVERY_MS) {
      log = b.refused;
      b.refused = 0;
      b.loggedAt = now;
    }
    return { waitMs: msUntil(b.tokens, 1, this.rate), log };
  }

  /** Forgets the addresses whose bucket has refilled (they are as if never seen). */
  sweep(now: number, full = false): void {
    for (const [address, b] of this.buckets) {
      if (refilled(b.tokens, b.at, now, this.rate, this.burst) >= this.burst) this.buckets.delete(address);
    }
    if (full && this.buckets.size >= this.maxAddresses) this.buckets.clear();
  }

  get size(): number {
    return this.buckets.size;
  }
}
