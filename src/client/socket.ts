import type { MessageEvent, PresenceEvent, RequestType, ResultOf } from "../protocol/index.ts";
import { SwitchboardError } from "./errors.ts";
import { decodeFrame, decodeResult, fromReply } from "./frames.ts";
import { after } from "./timeouts.ts";
import type { WebSocketLike } from "./types.ts";

interface Pending {
  type: RequestType;
  resolve(result: unknown): void;
  reject(error: SwitchboardError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const OPEN = 1;

/** One WebSocket of a client and the requests in flight on it, by ref. */
export class Socket {
  alive = true;
  /** Restored: signed in again and rooms re-joined. */
  ready = false;
  signedIn = false;
  heartbeat: ReturnType<typeof setInterval> | undefined;
  private readonly pending = new Map<number, Pending>();

  /** Whether a request written now reaches the server: not after a close frame came in, or went out. */
  get writable(): boolean {
    return this.alive && this.ws.readyState === OPEN;
  }

  constructor(
    readonly ws: WebSocketLike,
    /** Refs count up across the client's sockets. */
    private readonly nextRef: () => number,
    private readonly timeoutMs: number,
  ) {}

  /** Writes one request and resolves with its validated result. */
  request<T extends RequestType>(type: T, params: object, timeoutMs: number = this.timeoutMs): Promise<ResultOf<T>> {
    return new Promise<ResultOf<T>>((resolve, reject) => {
      if (!this.writable) {
        reject(new SwitchboardError("disconnected", "not connected", { request: type }));
        return;
      }
      const ref = this.nextRef();
      const pending: Pending = { type, resolve: resolve as (r: unknown) => void, reject, timer: undefined };
      pending.timer = after(timeoutMs, () => {
        this.pending.delete(ref);
        reject(new SwitchboardError("timeout", `no reply to ${type} within ${Math.round(timeoutMs)} ms`, { request: type }));
      });
      this.pending.set(ref, pending);
      try {
        this.ws.send(JSON.stringify({ type, ref, ...params }));
      } catch (cause) {
        this.pending.delete(ref);
        clearTimeout(pending.timer);
        reject(new SwitchboardError("disconnected", "the connection refused the frame", { request: type, cause }));
      }
    });
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

  /** The socket is gone: stops its heartbeat and rejects the requests in flight with `disconnected`. */
  end(message: string): void {
    this.alive = false;
    clearInterval(this.heartbeat);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new SwitchboardError("disconnected", message, { request: p.type }));
    }
  }

  private take(ref: unknown): Pending | undefined {
    if (typeof ref !== "number") return undefined;
    const pending = this.pending.get(ref);
    if (!pending) return undefined;
    this.pending.delete(ref);
    clearTimeout(pending.timer);
    return pending;
  }
}
