import type { ErrorCode, Issue, RequestType } from "../protocol/index.ts";

/**
 * Codes the client itself produces, besides the server's `ErrorCode`s:
 * - `timeout`: no reply within the request timeout (the request may still have taken effect).
 * - `disconnected`: the connection dropped after the request was written (it may have taken effect).
 * - `closed`: the client was closed with `close()` (or by a close code it must not retry).
 * - `signed_out`: the request needs a session and the client has none (after `logout`,
 *   a revoked session, or a token the server refused).
 * - `invalid_frame`: the server sent a frame that fails the protocol schemas.
 * - `history_mismatch`: the server's history does not continue the one this client
 *   delivered (a `since` beyond the room's latest seq, or missing seqs).
 * - `too_large`: the server closed the connection with 1009 (a frame over its
 *   `MAX_FRAME_BYTES`), and this request's frame was the largest unanswered one: it
 *   was not acted on. A send is dropped from the outbox, and the client reconnects.
 */
export type ClientErrorCode = "timeout" | "disconnected" | "closed" | "signed_out" | "invalid_frame" | "history_mismatch" | "too_large";

/** Every code a `SwitchboardError` can carry: the protocol's and the client's own. */
export type SwitchboardErrorCode = ErrorCode | ClientErrorCode;

const clientCodes: ReadonlySet<string> = new Set<ClientErrorCode>([
  "timeout",
  "disconnected",
  "closed",
  "signed_out",
  "invalid_frame",
  "history_mismatch",
  "too_large",
]);

/** What `retryAfterMs` is when a `rate_limited` answer does not say (PROTOCOL.md makes it optional). */
export const DEFAULT_RETRY_AFTER_MS = 1000;

/** `retryAfterMs` is a number with `rate_limited`, and absent with every other code. */
type RetryAfter<C extends SwitchboardErrorCode> = C extends "rate_limited" ? number : undefined;

/**
 * A `SwitchboardError` with one of the codes `K`, as a union by code, so that a
 * `switch (e.code)` or an `if (e.code === ...)` narrows it (`SwitchboardError.is` gives one).
 */
export type SwitchboardErrorOf<K extends SwitchboardErrorCode = SwitchboardErrorCode> = K extends SwitchboardErrorCode
  ? SwitchboardError<K>
  : never;

/**
 * Why a request failed (or what went wrong in the background, on the `error` event).
 * Branch on `code` (`SwitchboardError.is` narrows by it); `message` is for people.
 *
 * @example
 * try {
 *   await client.signup({ username: "ada", password: "correct horse battery" });
 * } catch (e) {
 *   if (SwitchboardError.is(e, "username_taken")) askForAnotherName();
 *   else if (SwitchboardError.is(e, "rate_limited")) retryIn(e.retryAfterMs); // a number
 *   else throw e;
 * }
 */
export class SwitchboardError<C extends SwitchboardErrorCode = SwitchboardErrorCode> extends Error {
  override readonly name = "SwitchboardError";
  /** The protocol's error code, or one of the client's own (`ClientErrorCode`). */
  readonly code: C;
  /**
   * With `rate_limited` (and only then): how long to wait before trying again, in ms.
   * The server's hint, or DEFAULT_RETRY_AFTER_MS when its answer gave none.
   */
  readonly retryAfterMs: RetryAfter<C>;
  /** With `bad_request` (and `invalid_frame`): each failing field as `{path, message}`. */
  readonly issues: Issue[] | undefined;
  /** The request type that failed, when the error answers a request. */
  readonly request: RequestType | undefined;

  constructor(
    code: C,
    message: string,
    extra: { retryAfterMs?: number | undefined; issues?: Issue[] | undefined; request?: RequestType | undefined; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.retryAfterMs = (code === "rate_limited" ? (extra.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS) : undefined) as RetryAfter<C>;
    this.issues = extra.issues;
    this.request = extra.request;
  }

  /**
   * Whether `error` is a `SwitchboardError` with one of `codes` (with none, any code),
   * typed so that its code narrows it: after `SwitchboardError.is(e, "rate_limited")`,
   * or in `case "rate_limited":` of a `switch (e.code)` after `SwitchboardError.is(e)`,
   * `e.retryAfterMs` is a `number`. (`instanceof` alone does not narrow by code.)
   *
   * @example
   * if (SwitchboardError.is(e, "timeout", "disconnected")) showMaybeSent();
   */
  static is<K extends SwitchboardErrorCode = SwitchboardErrorCode>(error: unknown, ...codes: K[]): error is SwitchboardErrorOf<K> {
    return error instanceof SwitchboardError && (codes.length === 0 || (codes as SwitchboardErrorCode[]).includes(error.code));
  }

  /** This error as the answer to a `request` of that type (a copy, unless it already is one). */
  forRequest(request: RequestType): SwitchboardError<C> {
    if (this.request === request) return this;
    return new SwitchboardError(this.code, this.message, { retryAfterMs: this.retryAfterMs, issues: this.issues, request, cause: this.cause });
  }

  /**
   * True for the client's own codes (`ClientErrorCode`). A protocol code is false even
   * when the client raised it before sending (a `bad_request` from its own check of
   * the params, a `not_joined` for a room it has not joined).
   */
  get fromClient(): boolean {
    return clientCodes.has(this.code);
  }
}
