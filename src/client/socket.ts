import { CloseCode, type MessageEvent, type PresenceEvent, type RequestType, type ResultOf } from "../protocol/index.ts";
import { DEFAULT_RETRY_AFTER_MS, SwitchboardError } from "./errors.ts";
import { decodeFrame, decodeResult, fromReply } from "./frames.ts";
import { after } from "./timeouts.ts";
import type { WebSocketLike } from "./types.ts";

interface Pending {
  type: RequestType;
  resolve(result: unknown): void;
  reject(error: SwitchboardError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  frame: string;
  written: boolean;
}

const OPEN = 1;
const utf8 = new TextEncoder();
/** Requests in flight on one socket by default (`maxInFlight`). */
export const DEFAULT_MAX_IN_FLIGHT = 32;
/**
 * Requests with limits of their own, whose `rate_limited` says nothing of the others:
 * sign-ins (failed sign-ins, hashing, connections per user; `retryAfterMs` can be
 * minutes) and sends (`SEND_RATE`; the outbox waits them out, one send at a time).
 * Any other request is refused only by the request budget, which every request shares.
 */
const OWN_LIMITS: ReadonlySet<RequestType> = new Set(["signup", "login", "auth", "send"]);

/**
 * One WebSocket of a client and the requests on it, by ref. Requests are paced, so that
 * a burst of calls cannot spend the server's per-connection request budget a whole
 * burst into debt (the server closes such a connection with 1008, and the client stays
 * closed): at most `window` are written and unanswered at a time, the rest wait their
 * turn in call order; a `rate_limited` answer stops all writing until its
 * `retryAfterMs` has passed and halves the window for the rest of the socket's life
 * (except for requests with limits of their own: sign-ins and sends).
 * Frames refused while the client could not know yet cost debt too, at most a window's.
 */
export class Socket {
  alive = true;
  /** Restored: signed in again and rooms re-joined. */
  ready = false;
  signedIn = false;
  heartbeat: ReturnType<typeof setInterval> | undefined;
  private readonly pending = new Map<number, Pending>();
  /** Refs of requests not written yet, oldest first. */
  private queued: number[] = [];
  /** Written and neither answered nor timed out. */
  private inFlight = 0;
  private window: number;
  /** No request is written before this time (`Date.now()`), after a `rate_limited`. */
  private pausedUntil = 0;
  private pauseTimer: ReturnType<typeof setTimeout> | undefined;

  /** Whether a request written now reaches the server: not after a close frame came in, or went out. */
  get writable(): boolean {
    return this.alive && this.ws.readyState === OPEN;
  }

  constructor(
    readonly ws: WebSocketLike,
    /** Refs count up across the client's sockets. */
    private readonly nextRef: () => number,
    private readonly timeoutMs: number,
    maxInFlight: number = DEFAULT_MAX_IN_FLIGHT,
  ) {
    this.window = maxInFlight;
  }

  /** Writes one request (in its turn) and resolves with its validated result; `timeoutMs` counts from now. */
  request<T extends RequestType>(type: T, params: object, timeoutMs: number = this.timeoutMs): Promise<ResultOf<T>> {
    return new Promise<ResultOf<T>>((resolve, reject) => {
      if (!this.writable) {
        reject(new SwitchboardError("disconnected", "not connected", { request: type }));
        return;
      }
      const ref = this.nextRef();
      const frame = JSON.stringify({ type, ref, ...params });
      const pending: Pending = { type, resolve: resolve as (r: unknown) => void, reject, timer: undefined, frame, written: false };
      pending.timer = after(timeoutMs, () => {
        this.forget(ref, pending);
        reject(new SwitchboardError("timeout", `no reply to ${type} within ${Math.round(timeoutMs)} ms`, { request: type }));
      });
      this.pending.set(ref, pending);
      this.queued.push(ref);
      this.writeQueued();
    });
  }

  /**
   * `request`, asked again each time the request budget refuses it (`rate_limited`):
   * the socket holds every request until the refusal's `retryAfterMs`, with its window
   * halved, so the retries cannot flood it. Rejects with anything else, `disconnected`
   * once the socket is gone. Not for sign-ins and sends, which have limits of their own.
   */
  async requestUntilAccepted<T extends RequestType>(type: T, params: object, timeoutMs: number = this.timeoutMs): Promise<ResultOf<T>> {
    for (;;) {
      try {
        return await this.request(type, params, timeoutMs);
      } catch (e) {
        if (!(e instanceof SwitchboardError) || e.code !== "rate_limited" || OWN_LIMITS.has(type)) throw e;
      }
    }
  }

  /** Writes waiting requests while the window has room and no `rate_limited` pause runs. */
  private writeQueued(): void {
    // Not once a close frame came in: the close event rejects what is left, as never written.
    while (this.queued.length > 0 && this.inFlight < this.window && this.writable) {
      const wait = this.pausedUntil - Date.now();
      if (wait > 0) {
        this.pauseTimer ??= setTimeout(() => {
          this.pauseTimer = undefined;
          this.writeQueued();
        }, wait);
        return;
      }
      const ref = this.queued.shift()!;
      const pending = this.pending.get(ref);
      if (!pending) continue;
      try {
        this.ws.send(pending.frame);
        pending.written = true;
        this.inFlight++;
      } catch (cause) {
        this.forget(ref, pending);
        pending.reject(new SwitchboardError("disconnected", "the connection refused the frame", { request: pending.type, cause }));
      }
    }
  }

  /** A request no longer waits for its reply (answered, timed out, refused by the WebSocket). */
  private forget(ref: number, pending: Pending): void {
    this.pending.delete(ref);
    clearTimeout(pending.timer);
    if (pending.written) {
      this.inFlight--;
    } else {
      const i = this.queued.indexOf(ref);
      if (i >= 0) this.queued.splice(i, 1);
    }
    // Answered or given up on: the next one may go (from a later turn, not inside the caller's).
    if (this.queued.length > 0) queueMicrotask(() => this.writeQueued());
  }

  /** A `rate_limited` answer: nothing is written until `retryAfterMs` has passed; the first of a pause halves the window. */
  private refused(type: RequestType, retryAfterMs: number | undefined): void {
    if (OWN_LIMITS.has(type)) return;
    const now = Date.now();
    if (now >= this.pausedUntil) this.window = Math.max(1, Math.floor(this.window / 2));
    // One ms more: `Date.now()` counts whole ms, and the hint is when the server's bucket
    // just holds what the request needs (a ping written on the hint's ms was refused
    // again). Hints of one pause are queued a token apart: the latest covers them all.
    this.pausedUntil = Math.max(this.pausedUntil, now + (retryAfterMs ?? DEFAULT_RETRY_AFTER_MS) + 1);
  }

  /**
   * A frame from the server: a reply settles its request (even a malformed one, so
   * that the caller is not left hanging); a room event is returned. What is wrong
   * outside any request goes to `report`.
   */
  receive(data: unknown, report: (error: SwitchboardError) => void): MessageEvent | PresenceEvent | undefined {
    const decoded = decodeFrame(data);
    if ("error" in decoded) {
      const { error } = decoded;
      const pending = this.take(decoded.ref);
      if (pending) pending.reject(new SwitchboardError("invalid_frame", error.message, { issues: error.issues, request: pending.type }));
      report(error);
      return undefined;
    }
    const frame = decoded.frame;
    switch (frame.type) {
      case "ok": {
        const pending = this.take(frame.ref);
        if (!pending) return undefined; // a reply to a request that timed out
        const decodedResult = decodeResult(pending.type, frame);
        if ("result" in decodedResult) {
          pending.resolve(decodedResult.result);
        } else {
          pending.reject(decodedResult.error);
          report(decodedResult.error);
        }
        return undefined;
      }
      case "error": {
        const pending = this.take(frame.ref);
        if (pending && frame.code === "rate_limited") this.refused(pending.type, frame.retryAfterMs);
        if (pending) pending.reject(fromReply(frame, pending.type));
        else report(fromReply(frame, undefined));
        return undefined;
      }
      case "message":
      case "presence":
        return frame;
    }
  }

  /** Closes the WebSocket without hearing of it again. */
  close(code: number, reason: string): void {
    this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
    try {
      this.ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  /**
   * The socket is gone: stops its heartbeat and rejects the requests in flight with
   * `disconnected`. After a close 1009 (a frame over the server's limit), the largest
   * frame written and unanswered is taken for the one the server refused: it rejects with
   * `too_large` (it was not acted on), and its type is returned.
   */
  end(message: string, code?: number): RequestType | null {
    this.alive = false;
    clearInterval(this.heartbeat);
    clearTimeout(this.pauseTimer);
    this.queued = [];
    const pending = [...this.pending.values()];
    this.pending.clear();
    let tooLarge: Pending | null = null;
    if (code === CloseCode.tooBig) {
      let most = -1;
      for (const p of pending) {
        const bytes = p.written ? utf8.encode(p.frame).length : -1;
        if (bytes > most) [tooLarge, most] = [p, bytes];
      }
      if (tooLarge && !tooLarge.written) tooLarge = null;
    }
    for (const p of pending) {
      clearTimeout(p.timer);
      if (p === tooLarge) p.reject(new SwitchboardError("too_large", `${message}: this request's frame is over the server's size limit (MAX_FRAME_BYTES)`, { request: p.type }));
      else if (p.written) p.reject(new SwitchboardError("disconnected", message, { request: p.type }));
      else p.reject(new SwitchboardError("disconnected", `${message} (it was waiting its turn, never written)`, { request: p.type }));
    }
    return tooLarge?.type ?? null;
  }

  private take(ref: unknown): Pending | undefined {
    if (typeof ref !== "number") return undefined;
    const pending = this.pending.get(ref);
    if (!pending?.written) return undefined; // not ours, or never written
    this.forget(ref, pending);
    return pending;
  }
}
