import type { MessageEvent, ResultOf, StoredMessage } from "../protocol/index.ts";

/**
 * - `idle`: not joined on the current connection (offline, or waiting for sign-in).
 * - `joining`: a `join` is in flight; messages are held until its reply.
 * - `filling`: joined, but a gap is being read from `history`; live messages are held.
 * - `live`: joined and contiguous; messages are delivered as they come.
 */
export type FeedPhase = "idle" | "joining" | "filling" | "live";

/**
 * One room's delivery to the application: exactly once and in seq order. Messages
 * come from three places (live events, a join's catch-up, `history` pages read to fill
 * a gap); whatever their order of arrival, the feed delivers seq `last + 1` next, holds
 * anything later, and drops anything already delivered.
 */
export class RoomFeed {
  phase: FeedPhase = "idle";
  /** Bumped whenever the feed is reset, so that replies to older joins are ignored. */
  generation = 0;
  /** The join in flight (or last completed) on this connection. */
  joining: Promise<ResultOf<"join">> | null = null;
  /** The reply to the last join that set this feed up. */
  lastJoin: ResultOf<"join"> | null = null;
  /**
   * Made by a `join` call that waits for its first join (which may go out as part of the
   * sign-in, with the re-joins, when the call was made while connecting): that join is
   * not a re-join.
   */
  awaited = false;
  private readonly held = new Map<number, MessageEvent>();

  constructor(
    readonly room: string,
    /** Seq of the last message delivered; null before the first join has answered. */
    public lastDelivered: number | null,
    private readonly deliver: (message: MessageEvent) => void,
  ) {}

  /** The connection is gone: forget held messages (they come again after `since`). */
  reset(): void {
    this.phase = "idle";
    this.held.clear();
    this.generation++;
    this.joining = null;
  }

  /** Number of messages held back, waiting for a gap to close. */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * A message event for this room. Returns the seq up to which `history` must be read
   * when it reveals a gap in live delivery (the feed is then `filling`), else null.
   */
  accept(m: MessageEvent): number | null {
    if (this.lastDelivered !== null && m.seq <= this.lastDelivered) return null;
    if (this.phase !== "live" || this.lastDelivered === null) {
      this.held.set(m.seq, m);
      return null;
    }
    if (m.seq === this.lastDelivered + 1) {
      this.emit(m);
      return null;
    }
    this.held.set(m.seq, m);
    this.phase = "filling";
    return m.seq - 1;
  }

  /**
   * The reply to a join that asked for `since` (undefined: live only). Returns the seq
   * up to which history must be read (the feed is then `filling`), or null when the
   * feed is live. `mismatch` is true when the room's history is shorter than what was
   * delivered: the server does not have the history this client saw.
   */
  joined(result: ResultOf<"join">, since: number | undefined): { fillTo: number | null; mismatch: boolean } {
    this.lastJoin = result;
    if (since === undefined || this.lastDelivered === null) {
      this.lastDelivered = result.seq;
      return { fillTo: this.goLive(), mismatch: false };
    }
    if (result.seq < this.lastDelivered) {
      this.lastDelivered = result.seq;
      return { fillTo: this.goLive(), mismatch: true };
    }
    if (result.recovered === false && result.seq > this.lastDelivered) {
      this.phase = "filling";
      return { fillTo: result.seq, mismatch: false };
    }
    // Recovered: the server replays everything after `since`, then live messages.
    return { fillTo: this.goLive(), mismatch: false };
  }

  /**
   * A page of `history` (ascending). Delivers the messages that continue the
   * delivered sequence; returns false when the page did not move it forward.
   */
  fillPage(messages: readonly StoredMessage[]): boolean {
    const start = this.lastDelivered;
    for (const m of messages) {
      if (this.lastDelivered === null || m.seq <= this.lastDelivered) continue;
      if (m.seq !== this.lastDelivered + 1) break;
      this.emit({ ...m, type: "message" });
    }
    return this.lastDelivered !== start;
  }

  /** Gives up on seqs up to `seq` (they are not in history): delivery resumes after it. */
  skipTo(seq: number): void {
    if (this.lastDelivered === null || seq > this.lastDelivered) this.lastDelivered = seq;
  }

  /** The gap is closed: delivers held messages. Returns a new gap's end, or null when live. */
  finishFill(): number | null {
    return this.goLive();
  }

  private goLive(): number | null {
    this.phase = "live";
    const seqs = [...this.held.keys()].sort((a, b) => a - b);
    for (const seq of seqs) {
      const m = this.held.get(seq)!;
      if (this.lastDelivered !== null && seq <= this.lastDelivered) {
        this.held.delete(seq);
      } else if (this.lastDelivered !== null && seq === this.lastDelivered + 1) {
        this.held.delete(seq);
        this.emit(m);
      } else {
        this.phase = "filling";
        return seq - 1;
      }
    }
    return null;
  }

  private emit(m: MessageEvent): void {
    this.lastDelivered = m.seq;
    this.deliver(m);
  }
}
