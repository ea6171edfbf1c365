import { z } from "zod";

/** Every error code of the protocol (PROTOCOL.md, "Error codes"). */
export const ErrorCode = z.enum([
  "bad_request",
  "unknown_type",
  "username_taken",
  "invalid_credentials",
  "unauthorized",
  "not_joined",
  "rate_limited",
  "internal",
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

/** Close codes the server uses (PROTOCOL.md, "Limits and close codes"). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  unsupportedData: 1003,
  policyViolation: 1008,
  tooBig: 1009,
  tryAgainLater: 1013,
  sessionRevoked: 4001,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

export const Issue = z.object({ path: z.string(), message: z.string() });
export type Issue = z.infer<typeof Issue>;

/**
 * A refusal the server sends as `{"type":"error", code, message}`. Thrown by
 * services; only the dispatcher turns it into a reply.
 *
 * @example
 * throw new ProtocolError("not_joined", "join the room first");
 */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: { issues?: Issue[]; retryAfterMs?: number } = {},
  ) {
    super(message);
  }
}

/**
 * zod's issues as the protocol lists them: each failing field once (`limit: 1e300`
 * fails both the safe-integer check and the maximum), its messages joined with "; ".
 */
export function fieldIssues(error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> }): Issue[] {
  const byPath = new Map<string, string[]>();
  for (const issue of error.issues) {
    const path = issue.path.map(String).join(".");
    const messages = byPath.get(path);
    if (!messages) byPath.set(path, [issue.message]);
    else if (!messages.includes(issue.message)) messages.push(issue.message);
  }
  return [...byPath].map(([path, messages]) => ({ path, message: messages.join("; ") }));
}
