import type { WriteHealth } from "../db/write-health.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import {
  CloseCode,
  decodeRequest,
  peekRef,
  ProtocolError,
  type Ref,
  type Request,
  type RequestOf,
  type RequestType,
  type ResultOf,
} from "../protocol/index.ts";
import { MAX_PENDING, type Socket } from "./connection.ts";
import type { Outbound } from "./outbound.ts";
import type { RequestBudget } from "./request-budget.ts";

/** A reply given later by calling `ok` or `fail` once, synchronously from whoever holds it. */
export interface Later<K extends RequestType> {
  ok(result: ResultOf<K>): void;
  fail(error: unknown): void;
}

/** What a handler returns when it took `ctx.later()` and will answer through it. */
export const LATER: unique symbol = Symbol("later");

export interface Ctx {
  ws: Socket;
  /** `performance.now()` when the frame arrived. */
  arrivedAt: number;
  /** Runs `fn` right after the reply is sent (a join's catch-up follows its `ok`). */
  afterReply(fn: () => void): void;
  /**
   * The reply, to be given later. Unlike a promise, it is sent synchronously by the
   * caller of `ok`, so that a group commit can answer its sends corked, one write per
   * socket (a reply sent from a promise callback is a write of its own).
   */
  later<K extends RequestType>(): Later<K>;
}

export type Handler<K extends RequestType> = (
  ctx: Ctx,
  request: RequestOf<K>,
) => ResultOf<K> | Promise<ResultOf<K>> | typeof LATER;
export type Handlers = { [K in RequestType]: Handler<K> };

/** `{"type":"ok","ref":..., ...result}`, without copying `result` into a new object first (it is on every send). */
function okFrame(ref: Ref | undefined, result: object): string {
  const body = JSON.stringify(result);
  const head = ref === undefined ? '{"type":"ok"' : `{"type":"ok","ref":${JSON.stringify(ref)}`;
  return body === "{}" ? `${head}}` : `${head},${body.slice(1)}`;
}

interface Replies {
  ok(ws: Socket, ref: Ref | undefined, result: object): void;
  error(ws: Socket, ref: Ref | undefined, err: unknown, type: string): void;
  log: Logger;
}

/** A request's context. A class, not closures: one is made for every frame. */
class RequestCtx implements Ctx {
  after: (() => void) | undefined = undefined;

  constructor(
    private readonly replies: Replies,
    readonly ws: Socket,
    readonly arrivedAt: number,
    private readonly ref: Ref | undefined,
    private readonly type: RequestType,
  ) {}

  afterReply(fn: () => void): void {
    this.after = fn;
  }

  later<K extends RequestType>(): Later<K> {
    return new LaterReply<K>(this.replies, this.ws, this.ref, this.type);
  }
}

class LaterReply<K extends RequestType> implements Later<K> {
  private answered = false;

  constructor(
    private readonly replies: Replies,
    private readonly ws: Socket,
    private readonly ref: Ref | undefined,
    private readonly type: RequestType,
  ) {}

  ok(result: ResultOf<K>): void {
    if (this.first()) this.replies.ok(this.ws, this.ref, result);
  }

  fail(error: unknown): void {
    if (this.first()) this.replies.error(this.ws, this.ref, error, this.type);
  }

  private first(): boolean {
    if (!this.answered) return (this.answered = true);
    this.replies.log.error("answered_twice", { type: this.type, conn: this.ws.data.id });
    return false;
  }
}

/**
 * The one error boundary: frame checks, JSON, validation, the handler, one reply
 * echoing `ref`. A known ProtocolError becomes its reply; anything else is logged with
 * its cause and answered `internal`, never with its message (it may hold SQL).
 */
export function createDispatcher(deps: {
  handlers: Handlers;
  outbound: Outbound;
  metrics: Metrics;
  log: Logger;
  invalidFrameLimit: number;
  /** Requests per connection: every frame takes a token, every frame and reply one more per KiB past the first. */
  budget: RequestBudget;
  /** Told of unexpected errors: a signup on a full disk shows in /healthz. */
  writeHealth: WriteHealth;
}) {
  const { handlers, outbound, metrics, log, invalidFrameLimit, budget, writeHealth } = deps;
  /** Connections whose sign-in is being answered (their later requests wait). */
  let busyConns = 0;
  let idleWaiters: Array<() => void> = [];

  function replyOk(ws: Socket, ref: Ref | undefined, result: object): void {
    const frame = okFrame(ref, result);
    budget.chargeReply(ws.data, frame.length);
    outbound.send(ws, frame);
  }

  function replyError(ws: Socket, ref: Ref | undefined, err: unknown, type: string): void {
    let error: ProtocolError;
    if (err instanceof ProtocolError) {
      error = err;
    } else {
      log.error("request_failed", { type, conn: ws.data.id, err });
      writeHealth.failed(err);
      error = new ProtocolError("internal", "internal error");
    }
    if (ws.data.closed) return; // nobody to answer, and no reply to count
    metrics.error(error.code);
    outbound.send(
      ws,
      JSON.stringify({ type: "error", ...(ref === undefined ? {} : { ref }), code: error.code, message: error.message, ...error.extra }),
    );
  }

  const replies: Replies = { ok: replyOk, error: replyError, log };

  function run(ws: Socket, request: Request, arrivedAt: number): void {
    const conn = ws.data;
    const { ref, type } = request;
    metrics.request(type);
    const ctx = new RequestCtx(replies, ws, arrivedAt, ref, type);
    let out: object | Promise<object> | typeof LATER;
    try {
      out = (handlers[type] as Handler<typeof type>)(ctx, request as never);
    } catch (e) {
      replyError(ws, ref, e, type);
      return;
    }
    if (out === LATER) return;
    if (!(out instanceof Promise)) {
      replyOk(ws, ref, out);
      ctx.after?.();
      return;
    }
    // An async handler (a sign-in hashing a password) holds the connection's later
    // requests until it is answered, so that `login`, `join`, `send` written back to back
    // run in that order. `ping` does not wait; `send` answers through `later`.
    conn.busy = true;
    busyConns++;
    out.then(
      (result) => replyOk(ws, ref, result),
      (e) => replyError(ws, ref, e, type),
    )
      .finally(() => {
        conn.busy = false;
        busyConns--;
        runPending(ws);
        if (busyConns === 0) for (const resolve of idleWaiters.splice(0)) resolve();
      })
      .catch((err) => log.error("reply_failed", { type, conn: conn.id, err }));
  }

  function runPending(ws: Socket): void {
    const conn = ws.data;
    while (!conn.busy && conn.pending && conn.pending.length > 0 && !conn.closed) {
      const next = conn.pending.shift()!;
      run(ws, next.request, next.arrivedAt);
    }
    if (conn.pending?.length === 0) conn.pending = null;
  }

  const dispatcher = {
    /**
     * Resolves once no connection is waiting for a sign-in to be answered, so that the
     * requests held behind one have run (for shutdown).
     */
    idle(): Promise<void> {
      if (busyConns === 0) return Promise.resolve();
      return new Promise<void>((resolve) => idleWaiters.push(resolve));
    },

    message(ws: Socket, message: string | Buffer): void {
      try {
        handleFrame(ws, message);
      } catch (err) {
        // Last resort: a throw escaping a Bun websocket handler ends the whole process.
        // The frame is parsed again for its ref, so that the client can match the answer.
        replyError(ws, typeof message === "string" ? peekRef(message) : undefined, err, "unknown");
      }
    },

    /**
     * A ping or pong frame from the client: Bun answers a ping itself, but it costs a
     * token like any frame. Two connections sending empty pings as fast as they could
     * (never closed: the frames did not reach the app) kept the core busy and others'
     * pings at p50 91 ms. There is nothing to answer `rate_limited` to, so a client that
     * sends a whole burst (at least FLOOD_DEBT_MIN) of them past its budget is closed with
     * 1008, as for requests.
     */
    control(ws: Socket): void {
      if (!ws.data.closed) spendToken(ws, performance.now(), 1, true);
    },
  };

  /**
   * Every frame takes a token (the send limit comes on top): a flood of cheap requests
   * (pings, invalid frames, joins) would otherwise hold the event loop from everyone
   * else. Past the burst a frame is answered `rate_limited` with the time it may run
   * after those refused before it (RequestBudget); a client that goes on until the
   * refused frames still waiting are worth a whole burst (at least FLOOD_DEBT_MIN),
   * ignoring `retryAfterMs`, is closed with 1008.
   * Large replies (history, members) cost their KiB on top (see RequestBudget), so a
   * frame may find the bucket in debt without any flood. A refused frame is only
   * parsed for its `ref` (no schema).
   */
  function takeRequestToken(ws: Socket, now: number, text: string): boolean {
    const conn = ws.data;
    if (spendToken(ws, now, text.length, false)) return true;
    if (conn.closed) return false;
    // When it can run if the frames refused before it are sent again first, each at its time.
    const retryAfterMs = budget.retryAfterMs(conn, now);
    const message = `at most ${budget.rate} requests (or KiB of frames and replies) per second`;
    replyError(ws, peekRef(text), new ProtocolError("rate_limited", message, { retryAfterMs }), "rate_limited");
    return false;
  }

  /**
   * Takes the cost of a frame of `chars` (a control frame too) and returns whether it
   * may run; a connection that has gone a whole burst (at least FLOOD_DEBT_MIN) into
   * debt is closed with 1008.
   */
  function spendToken(ws: Socket, now: number, chars: number, control: boolean): boolean {
    const conn = ws.data;
    budget.refill(conn, now);
    const runs = budget.spendFrame(conn, chars, now);
    if (budget.flooding(conn, now)) {
      log.info("request_flood", { conn: conn.id, address: conn.address, ...(control ? { control } : {}) });
      outbound.close(ws, CloseCode.policyViolation, "too many requests");
    }
    return runs;
  }

  function handleFrame(ws: Socket, message: string | Buffer): void {
    const conn = ws.data;
    if (conn.closed) return;
    if (typeof message !== "string") {
      outbound.close(ws, CloseCode.unsupportedData, "binary frames are not supported");
      return;
    }
    const arrivedAt = performance.now();
    if (!takeRequestToken(ws, arrivedAt, message)) return;
    const decoded = decodeRequest(message);
    if (!decoded.ok) {
      metrics.request("invalid");
      replyError(ws, decoded.ref, decoded.error, "invalid");
      if (++conn.invalidStreak >= invalidFrameLimit) {
        outbound.close(ws, CloseCode.policyViolation, "too many invalid frames");
      }
      return;
    }
    conn.invalidStreak = 0;
    const { request } = decoded;
    if (conn.busy && request.type !== "ping") {
      const pending = (conn.pending ??= []);
      if (pending.length >= MAX_PENDING) {
        replyError(ws, request.ref, new ProtocolError("rate_limited", "too many requests waiting", { retryAfterMs: 100 }), request.type);
        return;
      }
      pending.push({ request, arrivedAt });
      return;
    }
    run(ws, request, arrivedAt);
  }

  return dispatcher;
}

export type Dispatcher = ReturnType<typeof createDispatcher>;
