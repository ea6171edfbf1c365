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
 * When (ms, on `now`'s clock) a request a bucket holding `tokens` has just refused may
 * run, needing `need` tokens, if the requests it refused before, which may run until
 * `queuedUntil`, are each sent again at their own time: after the last of them, by the
 * time `need` more tokens refill, and not before its own `need` is back (a virtual
 * schedule, as GCRA keeps). Its `retryAfterMs` is that time less `now`. When every
 * refusal said only "when the bucket holds a token again", a client retrying each
 * refused request at its hint retried them all at once, and all but one were refused again.
 */
export function nextSlot(queuedUntil: number, tokens: number, need: number, rate: number, now: number): number {
  const own = now + ((need - tokens) * 1000) / rate;
  return queuedUntil > now ? Math.max(own, queuedUntil + (need * 1000) / rate) : own;
}

/** A refused request's `retryAfterMs` for the time `queuedUntil` it may run at (whole ms, rounded up). */
export function hintMs(queuedUntil: number, now: number): number {
  return Math.max(0, Math.ceil(queuedUntil - now));
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
 * The fewest tokens' worth of refused frames, still waiting for their `retryAfterMs`,
 * that closes a connection (see `RequestBudget.floodDebt`): twice the
 * frames the server holds behind a sign-in (MAX_PENDING). A client with fewer than MAX_PENDING requests
 * unanswered at a time, which stops writing at a `rate_limited` until its
 * `retryAfterMs` (the SDK does), never gets there: its refused frames are fewer than
 * its window, and replies take at most half a burst.
 */
export const FLOOD_DEBT_MIN = 2 * MAX_PENDING;

/**
 * A connection's request budget (`Conn.requestTokens`): `rate` tokens a second up to
 * `burst`, refilled by `performance.now()`. Every frame takes one token (the
 * dispatcher), a frame or a reply one more per BYTES_PER_TOKEN past its first, and what else the
 * connection causes to be sent one per BYTES_PER_TOKEN. Below 0 it is debt: requests are refused until it is
 * paid back. Replies take it at most half a burst into debt.
 *
 * A refused frame takes nothing from the bucket: it is given the time it may run after
 * the ones refused before it (`nextSlot`, kept in `Conn.requestQueuedUntil`), so that a
 * client retrying each refused request at its own `retryAfterMs` gets them through one
 * after another, and the tokens those waiting ones stand for close a flood at
 * `floodDebt`. (When refused frames took tokens, a client with 120 sends in flight, each
 * retried at its hint, kept the bucket a little below zero with its retries, which every
 * hint undercounted: nothing passed again, and it was never closed.)
 */
export class RequestBudget {
  private readonly replyFloor: number;
  /**
   * The tokens' worth of refused frames still waiting for their time (`flooding`) at
   * which a connection is closed with 1008: a whole burst, and never less
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
   * Whether the frames refused and still waiting for their time (`Conn.requestQueuedUntil`)
   * are worth `floodDebt` tokens or more: the connection is closed with 1008.
   */
  flooding(conn: Conn, now: number): boolean {
    return ((conn.requestQueuedUntil - now) * this.rate) / 1000 >= this.floodDebt;
  }

  /** For a frame just refused (after `spendFrame`): the ms until it may run, if those refused before it are sent again at their own times. */
  retryAfterMs(conn: Conn, now: number): number {
    return hintMs(conn.requestQueuedUntil, now);
  }

  /**
   * Takes the cost of a frame of `chars` from the client: one token, and one more per
   * BYTES_PER_TOKEN past its first, as for a reply (parsing is per byte: 64 KiB frames
   * at 1,900 a second, under the request rate when each cost one token, kept half a core
   * busy; now they cost 64). Returns whether the frame may run: the bucket held its cost
   * (or, for a frame costing more than the whole burst, a full bucket). A frame that
   * runs takes the bucket at most half a burst into debt, as replies do. A refused one
   * takes nothing: it gets the next time it may run (`nextSlot`), and what waits that
   * way counts toward the close (`flooding`), so a large frame counts for more.
   */
  spendFrame(conn: Conn, chars: number, now: number): boolean {
    const need = this.need(chars);
    const runs = conn.requestTokens >= need;
    if (runs) this.take(conn, this.cost(chars));
    else conn.requestQueuedUntil = nextSlot(conn.requestQueuedUntil, conn.requestTokens, need, this.rate, now);
    return runs;
  }

  /** A frame's cost: one token, and one more per BYTES_PER_TOKEN past its first. */
  private cost(chars: number): number {
    return chars > BYTES_PER_TOKEN ? chars / BYTES_PER_TOKEN : 1;
  }

  /** The tokens a frame of `chars` needs in the bucket to run (see `spendFrame`). */
  need(chars: number): number {
    return Math.min(this.burst, this.cost(chars));
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
