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

/**
 * Why a request failed (or what went wrong in the background, on the `error` event).
 * Branch on `code`; `message` is for people.
 *
 * @example
 * try {
 *   await client.signup({ username: "ada", password: "correct horse battery" });
 * } catch (e) {
 *   if (e instanceof SwitchboardError && e.code === "username_taken") askForAnotherName();
 *   else if (e instanceof SwitchboardError && e.code === "rate_limited") retryIn(e.retryAfterMs);
 *   else throw e;
 * }
 */
export class SwitchboardError extends Error {
  override readonly name = "SwitchboardError";
  /** The protocol's error code, or one of the client's own (`ClientErrorCode`). */
  readonly code: SwitchboardErrorCode;
  /** With `rate_limited`: how long to wait before trying again. */
  readonly retryAfterMs: number | undefined;
  /** With `bad_request` (and `invalid_frame`): each failing field as `{path, message}`. */
  readonly issues: Issue[] | undefined;
  /** The request type that failed, when the error answers a request. */
  readonly request: RequestType | undefined;

  constructor(
    code: SwitchboardErrorCode,
    message: string,
    extra: { retryAfterMs?: number | undefined; issues?: Issue[] | undefined; request?: RequestType | undefined; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.retryAfterMs = extra.retryAfterMs;
    this.issues = extra.issues;
    this.request = extra.request;
  }

  /** This error as the answer to a `request` of that type (a copy, unless it already is one). */
  forRequest(request: RequestType): SwitchboardError {
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
