import type { MessageEvent, PresenceEvent, ResultOf } from "../protocol/index.ts";
import type { Connection } from "./connection.ts";
import type { Emitter } from "./emitter.ts";
import { SwitchboardError } from "./errors.ts";
import { RoomFeed } from "./feed.ts";
import type { Outbox } from "./outbox.ts";
import type { Socket } from "./socket.ts";
import type { SavedState } from "./store.ts";
import type { ClientEvents } from "./types.ts";

/**
 * The rooms a client follows, a `RoomFeed` each: joining them (again, with `since`,
 * after a reconnect), reading `history` to close gaps, and keeping each room's last
 * delivered seq in the store.
 */
export class Rooms {
  private readonly feeds = new Map<string, RoomFeed>();
  private readonly pageSize: number;

  constructor(
    historyPageSize: number | undefined,
    private readonly saved: SavedState,
    private readonly connection: Connection,
    private readonly outbox: Outbox,
    private readonly events: Emitter<ClientEvents>,
  ) {
    this.pageSize = Math.max(1, Math.min(100, historyPageSize ?? 100));
  }

  get names(): string[] {
    return [...this.feeds.keys()];
  }

  /** The feeds followed now. */
  all(): RoomFeed[] {
    return [...this.feeds.values()];
  }

  has(room: string): boolean {
    return this.feeds.has(room);
  }

  lastSeq(room: string): number | undefined {
    return this.feeds.get(room)?.lastDelivered ?? undefined;
  }

  /** Joined on the current socket (live, or filling a gap): sends to it can go out. */
  isJoined(room: string): boolean {
    const phase = this.feeds.get(room)?.phase;
    return phase === "live" || phase === "filling";
  }

  /** Follows `room` from `lastDelivered`, unless it is followed already. */
  follow(room: string, lastDelivered: number | null): { feed: RoomFeed; created: boolean } {
    const feed = this.feeds.get(room);
    if (feed) return { feed, created: false };
    const created = this.track(room, lastDelivered);
    created.awaited = true;
    return { feed: created, created: true };
  }

  /**
   * The reply to a `join` of `feed`'s room on `socket`: the join that set the feed up
   * if this call `created` it, else a plain join's fresh members (changing nothing).
   */
  async join(socket: Socket, feed: RoomFeed, created: boolean, deadline: number): Promise<ResultOf<"join">> {
    if (this.feeds.get(feed.room) !== feed) throw new SwitchboardError("not_joined", `${feed.room} was left`, { request: "join" });
    if (feed.phase === "idle") void this.joinFeed(socket, feed, false).catch(() => {});
    if (feed.phase === "joining" && feed.joining) {
      const result = await feed.joining;
      if (created) return result;
    } else if (created && feed.lastJoin) {
      return feed.lastJoin;
    }
    // Already followed: a plain join answers with fresh members and changes nothing.
    return socket.requestUntilAccepted("join", { room: feed.room }, deadline - Date.now());
  }

  /**
   * Forgets `feed`, made by a `join` the client refused before asking the server
   * (signed out, closed): nothing was joined or stored for it.
   */
  unfollow(feed: RoomFeed): void {
    if (this.feeds.get(feed.room) !== feed || feed.phase !== "idle") return;
    this.feeds.delete(feed.room);
  }

  /** Stops following `room`, if followed; its unsent messages are dropped with `error`. */
  leave(room: string, error: SwitchboardError): void {
    const feed = this.feeds.get(room);
    if (feed) this.untrack(feed, error);
  }

  /** Stops following every room, each one's unsent messages dropped with an `error()`. */
  leaveAll(error: () => SwitchboardError): void {
    for (const feed of [...this.feeds.values()]) this.untrack(feed, error());
  }

  /** Follows the rooms the store remembers (and those with unsent messages). */
  trackStored(): void {
    for (const [room, seq] of Object.entries(this.saved.state.seqs)) if (!this.feeds.has(room)) this.track(room, seq);
    for (const e of this.saved.state.outbox) if (!this.feeds.has(e.room)) this.track(e.room, null);
  }

  /**
   * Signed in on `socket`: follows the stored rooms, and joins every room not joined on
   * it, `rejoin` included. Resolves when all are live.
   */
  rejoin(socket: Socket, rejoin: readonly RoomFeed[]): Promise<void[]> {
    this.trackStored();
    for (const feed of rejoin) if (this.feeds.get(feed.room) === feed) feed.reset();
    return Promise.all([...this.feeds.values()].filter((f) => f.phase === "idle").map((f) => this.joinFeed(socket, f, true)));
  }

  /** A room event from the server. */
  receive(socket: Socket, event: MessageEvent | PresenceEvent): void {
    if (event.type === "presence") {
      if (this.feeds.has(event.room)) this.events.emit("presence", event);
      return;
    }
    const feed = this.feeds.get(event.room);
    if (!feed) return;
    const gap = feed.accept(event);
    if (gap !== null) this.fill(socket, feed, gap).catch((e) => this.connection.backgroundError(socket, e));
  }

  /** The socket is gone: nothing is joined any more. */
  reset(): void {
    for (const feed of this.feeds.values()) feed.reset();
  }

  /** Stops following every room in memory; the store keeps the place in each for the next sign-in. */
  forget(): void {
    this.reset();
    this.feeds.clear();
  }

  private track(room: string, lastDelivered: number | null): RoomFeed {
    const feed = new RoomFeed(room, lastDelivered, (m) => {
      this.saved.state.seqs[room] = m.seq;
      this.saved.save(false);
      this.events.emit("message", m);
    });
    this.feeds.set(room, feed);
    return feed;
  }

  private untrack(feed: RoomFeed, error: SwitchboardError): void {
    if (this.feeds.get(feed.room) !== feed) return;
    feed.reset();
    this.feeds.delete(feed.room);
    delete this.saved.state.seqs[feed.room];
    this.outbox.dropRoom(feed.room, error);
  }

  /** Whether work on `feed` begun at `generation` on `socket` is outdated. */
  private stale(socket: Socket, feed: RoomFeed, generation: number): boolean {
    return socket !== this.connection.current || feed.generation !== generation || this.feeds.get(feed.room) !== feed;
  }

  /**
   * Joins `feed`'s room with `since` = the last delivered seq, and reads history to
   * close any gap. Rejects only when the connection failed (to be retried after the
   * reconnect); a refusal stops following the room.
   */
  private async joinFeed(socket: Socket, feed: RoomFeed, rejoin: boolean): Promise<void> {
    feed.phase = "joining";
    const generation = feed.generation;
    const since = feed.lastDelivered ?? undefined;
    // A re-join of many rooms, each with a catch-up to replay, can spend the request
    // budget: a join refused for it must not stop following the room.
    const joining = socket.requestUntilAccepted("join", since === undefined ? { room: feed.room } : { room: feed.room, since });
    feed.joining = joining;
    joining.catch(() => {}); // awaited by whoever asked; the rejection is handled below
    let result: ResultOf<"join">;
    try {
      result = await joining;
    } catch (e) {
      if (this.stale(socket, feed, generation)) return;
      const err = e instanceof SwitchboardError ? e : new SwitchboardError("internal", String(e));
      if (!err.fromClient || err.code === "invalid_frame") {
        this.untrack(feed, err);
        if (rejoin) this.events.emit("error", err);
        return;
      }
      feed.phase = "idle";
      throw err;
    }
    if (this.stale(socket, feed, generation)) return;
    const first = feed.awaited;
    feed.awaited = false;
    const { fillTo, mismatch } = feed.joined(result, since);
    this.saved.state.seqs[feed.room] = feed.lastDelivered ?? result.seq;
    this.saved.save(false);
    if (mismatch) {
      this.events.emit(
        "error",
        new SwitchboardError("history_mismatch", `${feed.room} ends at seq ${result.seq}, before the seq ${since} this client delivered`),
      );
    }
    this.events.emit("joined", { ...result, rejoin: rejoin && !first });
    this.outbox.pump();
    if (fillTo !== null) await this.fill(socket, feed, fillTo);
  }

  /** Reads `history` forward from the last delivered seq up to `target`, then delivers held messages. */
  private async fill(socket: Socket, feed: RoomFeed, target: number): Promise<void> {
    const generation = feed.generation;
    for (;;) {
      while (feed.lastDelivered !== null && feed.lastDelivered < target) {
        const before = Math.min(feed.lastDelivered + this.pageSize + 1, target + 1);
        const page = await socket.requestUntilAccepted("history", { room: feed.room, before, limit: this.pageSize });
        if (this.stale(socket, feed, generation)) return;
        if (!feed.fillPage(page.messages)) {
          this.events.emit(
            "error",
            new SwitchboardError("history_mismatch", `${feed.room}: seqs ${feed.lastDelivered + 1}..${target} are missing from history`),
          );
          feed.skipTo(target);
          this.saved.state.seqs[feed.room] = target;
        }
        this.saved.save(false);
      }
      const next = feed.finishFill();
      this.saved.save(false);
      if (next === null) return;
      target = next;
    }
  }
}
