import { z } from "zod";
import { ErrorCode, Issue } from "./errors.ts";
import { Ref, type RequestType } from "./requests.ts";

/** ISO 8601 UTC with milliseconds, as produced by `Date.prototype.toISOString`. */
export const Timestamp = z.iso.datetime({ precision: 3 });

export const User = z.object({ id: z.int(), username: z.string(), createdAt: Timestamp });
export type User = z.infer<typeof User>;

export const StoredMessage = z.object({
  room: z.string(),
  seq: z.int().min(1),
  user: z.string(),
  body: z.string(),
  at: Timestamp,
  nonce: z.string().optional(),
});
export type StoredMessage = z.infer<typeof StoredMessage>;

/** The fields of a successful reply to each request type (besides `type` and `ref`). */
export const resultSchemas = {
  signup: z.object({ user: User, token: z.string() }),
  login: z.object({ user: User, token: z.string() }),
  auth: z.object({ user: User }),
  logout: z.object({}),
  join: z.object({
    room: z.string(),
    seq: z.int().min(0),
    members: z.array(z.string()),
    recovered: z.boolean().optional(),
  }),
  leave: z.object({}),
  send: z.object({ seq: z.int().min(1), at: Timestamp }),
  history: z.object({ messages: z.array(StoredMessage), hasMore: z.boolean() }),
  who: z.object({ members: z.array(z.string()) }),
  ping: z.object({}),
} as const satisfies { [K in RequestType]: z.ZodObject };

export type ResultOf<T extends RequestType> = z.infer<(typeof resultSchemas)[T]>;

/** `{"type":"ok","ref":7,...result}`: the result fields are checked per request type by the caller. */
export const OkReply = z.looseObject({ type: z.literal("ok"), ref: Ref.optional() });
export type OkReply = z.infer<typeof OkReply>;

export const ErrorReply = z.object({
  type: z.literal("error"),
  ref: Ref.optional(),
  code: ErrorCode,
  message: z.string(),
  issues: z.array(Issue).optional(),
  retryAfterMs: z.int().min(0).optional(),
});
export type ErrorReply = z.infer<typeof ErrorReply>;
