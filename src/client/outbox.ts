import type { ResultOf } from "../protocol/index.ts";
import type { Connection } from "./connection.ts";
import type { Emitter } from "./emitter.ts";
import { SwitchboardError } from "./errors.ts";
import type { OutboxEntry, SavedState } from "./store.ts";
import type { ClientEvents } from "./types.ts";

interface SendWaiter {
  resolve(result: ResultOf<"send">): void;
  reject(error: SwitchboardError): void;
}

/** A nonce for a `send` that was given none. */
export function newNonce(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return `c-${hex}`;
}

/** For a send to a room that was left after the send was written on a connection lost before its answer. */
function maybeStored(room: string): SwitchboardError {
  return new SwitchboardError("disconnected", `left ${room} after the message was written, before its answer: it may have been stored`, { request: "send" });
}

const keyOf = (outbox: readonly OutboxEntry[]): string => outbox.map((e) => e.nonce).join(" ");

/**
 * Sends the server has not acknowledged, kept in the store. One is in flight at a
 * time, and each is retried with its nonce (after a reconnect, after a rate limit)
 * until the server answers, so that it reaches its room exactly once and in order.
 */
export class Outbox {
  private readonly waiters = new Map<string, SendWaiter[]>();
  private inFlight: OutboxEntry | null = null;
  /**
   * Nonces of the entries written on a connection that was lost before it answered: the
   * server may have stored them. (An entry answered, even `rate_limited`, on the
   * connection it was written on, and never written before, was not stored.)
   */
  private readonly lost = new Set<string>();
  /** Nonce -> why its room was left while it was in flight, to reject it with once answered. */
  private readonly leftInFlight = new Map<string, SwitchboardError>();
  private rateLimitTimer: ReturnType<typeof setTimeout> | undefined;
  /** The nonces when the `outbox` event last fired. */
  private key: string;

  constructor(
    private readonly saved: SavedState,
    private readonly connection: Connection,
    private readonly events: Emitter<ClientEvents>,
    /** Whether `room` is joined on the current socket, so that sends to it can go out. */
    private readonly isJoined: (room: string) => boolean,
  ) {
    this.key = keyOf(saved.state.outbox);
  }

  /** Copies of the entries, oldest first. */
  get entries(): readonly OutboxEntry[] {
    return this.saved.state.outbox.map((e) => ({ ...e }));
  }

  /** Queues a send (once per nonce and room); resolves when the server acknowledges it. */
  add(send: { room: string; body: string; nonce: string }): Promise<ResultOf<"send">> {
    const { room, body, nonce } = send;
    const promise = new Promise<ResultOf<"send">>((resolve, reject) => {
      const list = this.waiters.get(nonce) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(nonce, list);
    });
    if (!this.saved.state.outbox.some((e) => e.nonce === nonce && e.room === room)) {
      this.saved.state.outbox.push({ nonce, room, body, createdAt: Date.now() });
      this.saved.save(true);
    }
    this.pump();
    return promise;
  }

  /** The state was written: fires `outbox` if the entries changed since it last fired. */
  announce(): void {
    const key = keyOf(this.saved.state.outbox);
    if (key === this.key) return;
    this.key = key;
    this.events.emit("outbox", { pending: this.entries });
  }

  /**
   * Sends the oldest unsent message, one at a time, once its room is joined on this
   * connection: a refusal (a rate limit, say) can then never let a later message
   * overtake it, in its room or across rooms. (Taking the oldest whose room was joined,
   * after a reconnect the first room re-joined sent its messages before older ones to
   * the rooms still re-joining.) A room whose re-join is refused is no longer followed
   * and its entries leave the outbox (`dropRoom`), so it cannot hold the rest for good.
   */
  pump(): void {
    const socket = this.connection.current;
    if (!socket || !socket.alive || this.inFlight || this.rateLimitTimer !== undefined) return;
    const entry = this.saved.state.outbox[0];
    if (!entry || !this.isJoined(entry.room)) return;
    this.inFlight = entry;
    socket.request("send", { room: entry.room, body: entry.body, nonce: entry.nonce }).then(
      (result) => {
        if (this.inFlight === entry) this.inFlight = null;
        this.remove(entry);
        this.settle(entry.nonce, (w) => w.resolve(result));
        this.pump();
      },
      (e: SwitchboardError) => {
        if (e.code === "too_large") {
          // Refused for its size (close 1009): never stored, and sending it again would
          // only close the next connection too. An entry from the store (a page reload)
          // has no caller to tell: the `error` event says which message went.
          if (this.inFlight === entry) this.inFlight = null;
          this.remove(entry);
          if (!this.waiters.has(entry.nonce)) {
            const what = `the queued message ${entry.nonce} to ${entry.room} is over the server's frame limit (MAX_FRAME_BYTES): dropped, not sent`;
            this.events.emit("error", new SwitchboardError("too_large", what, { request: "send" }));
          }
          this.settle(entry.nonce, (w) => w.reject(e));
          return;
        }
        if (!this.saved.state.outbox.includes(entry)) {
          // Its room was left while it was in flight: it cannot be sent again, so the
          // answer is final. A lost connection (`disconnected`) means "maybe stored"; a
          // refusal (a rate limit, say) that it was not, unless an earlier attempt was lost.
          if (this.inFlight === entry) this.inFlight = null;
          const left = this.leftInFlight.get(entry.nonce);
          const error = e.code === "disconnected" || !left ? e : this.lost.has(entry.nonce) ? maybeStored(entry.room) : left;
          this.settle(entry.nonce, (w) => w.reject(error));
          this.pump();
          return;
        }
        if (socket !== this.connection.current) return; // lost: the entry is sent again after the reconnect
        if (this.inFlight === entry) this.inFlight = null;
        if (e.code === "disconnected") return;
        if (e.code === "timeout") {
          this.connection.drop(socket, "a send was not answered");
          return;
        }
        if (SwitchboardError.is(e, "rate_limited")) {
          this.rateLimitTimer = setTimeout(() => {
            this.rateLimitTimer = undefined;
            this.pump();
          }, e.retryAfterMs);
          return;
        }
        this.remove(entry);
        this.settle(entry.nonce, (w) => w.reject(e));
        this.pump();
      },
    );
  }

  /**
   * Drops the entries to `room` (no longer followed): they are not sent again. Their
   * sends reject with `error`, except the one in flight: the server has its frame and
   * answers it, and that answer settles it (`ok` if it was stored).
   */
  dropRoom(room: string, error: SwitchboardError): void {
    const dropped = this.saved.state.outbox.filter((e) => e.room === room);
    this.saved.state.outbox = this.saved.state.outbox.filter((e) => e.room !== room);
    this.saved.save(true);
    for (const e of dropped) {
      if (e === this.inFlight) {
        this.leftInFlight.set(e.nonce, error);
        continue;
      }
      // Written on a connection that dropped before the answer: stored or not, nobody knows.
      const why = this.lost.has(e.nonce) ? maybeStored(room) : error;
      this.settle(e.nonce, (w) => w.reject(why));
    }
  }

  /** Rejects every waiting `send`; with `forget`, the outbox is emptied too. */
  rejectAll(error: SwitchboardError, forget = true): void {
    if (forget) {
      this.saved.state.outbox = [];
      this.saved.save(true);
      this.lost.clear();
      this.leftInFlight.clear();
    }
    const all = [...this.waiters.values()].flat();
    this.waiters.clear();
    const forSend = error.forRequest("send");
    for (const w of all) w.reject(forSend);
  }

  /** The socket is gone: the send in flight goes again after the reconnect. */
  detached(): void {
    if (this.inFlight) this.lost.add(this.inFlight.nonce);
    this.inFlight = null;
  }

  /** The client stopped: no more retries; sends reject, their entries stay in the store. */
  stop(error: SwitchboardError): void {
    clearTimeout(this.rateLimitTimer);
    this.rateLimitTimer = undefined;
    this.rejectAll(error, false);
  }

  private remove(entry: OutboxEntry): void {
    const i = this.saved.state.outbox.indexOf(entry);
    if (i < 0) return;
    this.saved.state.outbox.splice(i, 1);
    this.saved.save(true);
  }

  private settle(nonce: string, settle: (waiter: SendWaiter) => void): void {
    this.lost.delete(nonce);
    this.leftInFlight.delete(nonce);
    const list = this.waiters.get(nonce);
    if (!list) return;
    this.waiters.delete(nonce);
    for (const w of list) settle(w);
  }
}
