/**
 * The Switchboard wire protocol v1: zod schemas of every request, reply, event and
 * error code. Shared by the server, the SDK and the demo page; imports nothing but zod.
 */
import { z } from "zod";
import { ErrorReply, OkReply, resultSchemas } from "./replies.ts";
import { MessageEvent, PresenceEvent } from "./events.ts";
import { Password, Request, requestSchemas, Username } from "./requests.ts";

export { CloseCode, ErrorCode, Issue, ProtocolError } from "./errors.ts";
export {
  AuthRequest,
  Body,
  HistoryRequest,
  isRequestType,
  JoinRequest,
  LeaveRequest,
  LoginRequest,
  LogoutRequest,
  Nonce,
  Password,
  PingRequest,
  Ref,
  Request,
  requestSchemas,
  requestTypes,
  RoomName,
  SendRequest,
  Seq,
  SignupRequest,
  Username,
  WhoRequest,
  type RequestOf,
  type RequestParams,
  type RequestType,
} from "./requests.ts";
export { ErrorReply, OkReply, resultSchemas, StoredMessage, Timestamp, User, type ResultOf } from "./replies.ts";
export { MessageEvent, PresenceEvent, ServerEvent } from "./events.ts";
export { decodeRequest, peekRef, type Decoded } from "./decode.ts";

export const PROTOCOL_VERSION = "switchboard.v1";

/** Any frame the server sends: a reply or an event. */
export const ServerFrame = z.discriminatedUnion("type", [OkReply, ErrorReply, MessageEvent, PresenceEvent]);
export type ServerFrame = z.infer<typeof ServerFrame>;

/**
 * JSON Schema (draft 2020-12) of every request, reply and event, for clients in
 * other languages. Served at `GET /protocol.json`.
 */
export function protocolJsonSchema(): Record<string, unknown> {
  const results = Object.fromEntries(
    Object.entries(resultSchemas).map(([type, schema]) => [type, z.toJSONSchema(schema)]),
  );
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: PROTOCOL_VERSION,
    // "input": what a client may send, which allows unknown extra fields (they are ignored).
    requests: Object.fromEntries(
      Object.entries(requestSchemas).map(([type, schema]) => [type, z.toJSONSchema(schema, { io: "input" })]),
    ),
    request: z.toJSONSchema(Request, { io: "input" }),
    replies: { ok: z.toJSONSchema(OkReply), results, error: z.toJSONSchema(ErrorReply) },
    events: { message: z.toJSONSchema(MessageEvent), presence: z.toJSONSchema(PresenceEvent) },
    // What clients of the original Prisma version send: a signup, answered like one.
    legacy: {
      signup: z.toJSONSchema(
        z.object({ username: Username, password: Password }).describe("a frame with username and password and no type: a signup"),
        { io: "input" },
      ),
    },
  };
}
