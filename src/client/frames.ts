import type { z } from "zod";
import {
  fieldIssues,
  requestSchemas,
  resultSchemas,
  ServerFrame,
  type ErrorReply,
  type OkReply,
  type RequestType,
} from "../protocol/index.ts";
import { SwitchboardError } from "./errors.ts";

// Both directions are checked against the protocol's schemas: requests before they are
// written, server frames before anything is trusted. A schema that throws counts as a failure.

/** `schema.safeParse(value)`, where a schema that throws counts as a failure without issues. */
function parse<T>(schema: z.ZodType<T>, value: unknown): z.ZodSafeParseResult<T> | { success: false; error: undefined } {
  try {
    return schema.safeParse(value);
  } catch {
    return { success: false, error: undefined };
  }
}

/** Null when `params` make a valid `type` request, else the `bad_request` to reject it with. */
export function checkRequest(type: RequestType, params: object): SwitchboardError | null {
  try {
    const r = requestSchemas[type].safeParse({ ...params, type });
    if (r.success) return null;
    const issues = fieldIssues(r.error);
    const first = issues[0];
    return new SwitchboardError("bad_request", first ? `${first.path || "frame"}: ${first.message}` : "invalid request", {
      issues,
      request: type,
    });
  } catch {
    return new SwitchboardError("bad_request", "invalid request", { request: type });
  }
}

/** A frame from the server, or why it is not one (with the `ref` it claims, if any). */
export type DecodedFrame = { frame: ServerFrame } | { error: SwitchboardError; ref?: unknown };

export function decodeFrame(data: unknown): DecodedFrame {
  if (typeof data !== "string") return { error: new SwitchboardError("invalid_frame", "the server sent a binary frame") };
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return { error: new SwitchboardError("invalid_frame", "the server sent a frame that is not JSON") };
  }
  const parsed = parse(ServerFrame, json);
  if (parsed.success) return { frame: parsed.data };
  const issues = parsed.error ? fieldIssues(parsed.error) : undefined;
  const error = new SwitchboardError("invalid_frame", "the server sent a frame that fails the protocol schema", { issues });
  return { error, ref: (json as { ref?: unknown } | null)?.ref };
}

/** The result in an `ok` reply to a `type` request, or the `invalid_frame` error it is. */
export function decodeResult(type: RequestType, reply: OkReply): { result: unknown } | { error: SwitchboardError } {
  const parsed = parse<unknown>(resultSchemas[type], reply);
  if (parsed.success) return { result: parsed.data };
  const issues = parsed.error ? fieldIssues(parsed.error) : undefined;
  return { error: new SwitchboardError("invalid_frame", `the reply to ${type} fails its schema`, { issues, request: type }) };
}

export function fromReply(reply: ErrorReply, request: RequestType | undefined): SwitchboardError {
  return new SwitchboardError(reply.code, reply.message, { retryAfterMs: reply.retryAfterMs, issues: reply.issues, request });
}
