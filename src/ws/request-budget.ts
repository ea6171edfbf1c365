import type { Conn } from "./connection.ts";

/**
 * Bytes of a reply past its first KiB, or of a replayed message, that cost one request
 * token (a request's own token pays for a reply of up to this size). A history
 * page or a catch-up costs far more than the frame that asked for it: two connections
 * pipelining `history` of 100 large messages (a reply of up to half the send buffer
 * each, 200 a second each) kept the server's core busy and other clients' pings at
 * p50 46 ms. Counted in UTF-16 units, which is bytes for ASCII.
 */
export const BYTES_PER_TOKEN = 1024;

/**
 * A connection's request budget (`Conn.requestTokens`): `rate` tokens a second up to
 * `burst`, refilled by `performance.now()`. Every frame takes one token (the
 * dispatcher), a reply one more per BYTES_PER_TOKEN past its first, and a replayed
 * message one per BYTES_PER_TOKEN. Below 0 it is debt: requests are refused until it is
 * paid back. Replies take it at most half a burst into debt, so that only frames sent
 * while refused can reach the dispatcher's close at a whole burst.
 */
export class RequestBudget {
  private readonly replyFloor: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {
    this.replyFloor = -burst / 2;
  }

  /** Adds what accrued since the last refill; returns the tokens now. */
  refill(conn: Conn, now: number): number {
    conn.requestTokens = Math.min(this.burst, conn.requestTokens + ((now - conn.requestRefilledAt) * this.rate) / 1000);
    conn.requestRefilledAt = now;
    return conn.requestTokens;
  }

  /** Takes the cost of a reply of `chars` beyond the request's own token. */
  chargeReply(conn: Conn, chars: number): void {
    if (chars > BYTES_PER_TOKEN) this.take(conn, (chars - BYTES_PER_TOKEN) / BYTES_PER_TOKEN);
  }

  /** Takes the cost of a replayed message of `chars` (no request paid for it). */
  chargeReplay(conn: Conn, chars: number): void {
    this.take(conn, chars / BYTES_PER_TOKEN);
  }

  private take(conn: Conn, tokens: number): void {
    conn.requestTokens = Math.max(Math.min(this.replyFloor, conn.requestTokens), conn.requestTokens - tokens);
  }

  /** Milliseconds until the tokens are back to `level` (after a refill). */
  msUntil(conn: Conn, level: number): number {
    return Math.max(0, Math.ceil(((level - conn.requestTokens) * 1000) / this.rate));
  }
}
