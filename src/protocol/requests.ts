import { z } from "zod";
import { BODY_MAX_CHARS } from "./limits.ts";

/** A request's correlation id: a string of at most 64 chars or a safe integer. */
export const Ref = z.union([z.string().max(64), z.int()]);
export type Ref = z.infer<typeof Ref>;

export const Username = z
  .string()
  .min(3)
  .max(32)
  .regex(/^[A-Za-z0-9_.-]+$/, "only letters, digits, '_', '.' and '-'");
export const RoomName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9][a-z0-9_-]*$/, "lowercase letters, digits, '_' and '-', starting with a letter or digit");
/** A message sequence number: a non-negative safe integer. */
export const Seq = z.int().min(0);
/**
 * No unpaired surrogate (JSON can spell one, `"\ud800"`): text that is stored is stored as
 * UTF-8, where it would become U+FFFD, so history and recovery would differ from the
 * live event.
 */
const wellFormed = (s: string) => s.isWellFormed();
const WELL_FORMED = "must be well-formed Unicode (no unpaired surrogate)";
/** Lengths are in code points (zod's rule): an emoji counts 1. */
export const Body = z.string().min(1).max(BODY_MAX_CHARS).refine(wellFormed, WELL_FORMED);
export const Nonce = z.string().min(1).max(64).refine(wellFormed, WELL_FORMED);
/**
 * Well-formed too: argon2 hashes the password's UTF-8, where every unpaired surrogate is
 * U+FFFD, so `"\ud800"` and `"\udc00"` passwords were the same password.
 */
export const Password = z.string().min(8).max(1024).refine(wellFormed, WELL_FORMED);

const base = { ref: Ref.optional() };

export const SignupRequest = z.object({ type: z.literal("signup"), ...base, username: Username, password: Password });
// Login accepts any string so that a malformed name is just an unknown user (no oracle),
// but bounds the sizes so that nothing huge reaches the hasher.
export const LoginRequest = z.object({
  type: z.literal("login"),
  ...base,
  username: z.string().min(1).max(64),
  password: z.string().min(1).max(1024).refine(wellFormed, WELL_FORMED),
});
export const AuthRequest = z.object({ type: z.literal("auth"), ...base, token: z.string().min(1).max(128) });
export const LogoutRequest = z.object({ type: z.literal("logout"), ...base, all: z.boolean().optional() });
export const JoinRequest = z.object({ type: z.literal("join"), ...base, room: RoomName, since: Seq.optional() });
export const LeaveRequest = z.object({ type: z.literal("leave"), ...base, room: RoomName });
export const SendRequest = z.object({
  type: z.literal("send"),
  ...base,
  room: RoomName,
  body: Body,
  nonce: Nonce.optional(),
});
export const HistoryRequest = z.object({
  type: z.literal("history"),
  ...base,
  room: RoomName,
  before: Seq.optional(),
  limit: z.int().min(1).max(100).optional(),
});
export const WhoRequest = z.object({ type: z.literal("who"), ...base, room: RoomName });
export const PingRequest = z.object({ type: z.literal("ping"), ...base });

/** The schema of each request type, keyed by its `type`. */
export const requestSchemas = {
  signup: SignupRequest,
  login: LoginRequest,
  auth: AuthRequest,
  logout: LogoutRequest,
  join: JoinRequest,
  leave: LeaveRequest,
  send: SendRequest,
  history: HistoryRequest,
  who: WhoRequest,
  ping: PingRequest,
} as const;

export type RequestType = keyof typeof requestSchemas;
export const requestTypes = Object.keys(requestSchemas) as RequestType[];

/** Any client frame, discriminated by `type`. */
export const Request = z.discriminatedUnion("type", [
  SignupRequest,
  LoginRequest,
  AuthRequest,
  LogoutRequest,
  JoinRequest,
  LeaveRequest,
  SendRequest,
  HistoryRequest,
  WhoRequest,
  PingRequest,
]);
export type Request = z.infer<typeof Request>;
export type RequestOf<T extends RequestType> = z.infer<(typeof requestSchemas)[T]>;
/** What a caller passes for a request: its fields without `type` and `ref`. */
export type RequestParams<T extends RequestType> = Omit<RequestOf<T>, "type" | "ref">;

export function isRequestType(type: string): type is RequestType {
  return Object.hasOwn(requestSchemas, type);
}
