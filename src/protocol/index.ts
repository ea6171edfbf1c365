/**
 * The Switchboard wire protocol v1: zod schemas of every request, reply, event and
 * error code. Shared by the server, the SDK and the demo page; imports nothing but zod.
 */
import { z } from "zod";
import { ErrorReply, OkReply, resultSchemas } from "./replies.ts";
import { MessageEvent, PresenceEvent } from "./events.ts";
import { Password, Ref, requestSchemas, Username } from "./requests.ts";

export { CloseCode, ErrorCode, fieldIssues, Issue, ProtocolError } from "./errors.ts";
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

type JsonSchema = Record<string, unknown>;

/** zod's JSON Schema of `schema`, as a subschema (only the document's root names `$schema`). */
function subschema(schema: z.ZodType, io: "input" | "output" = "output"): JsonSchema {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io }) as JsonSchema;
  return rest;
}

const ref = (name: string): JsonSchema => ({ $ref: `#/$defs/${name}` });

/**
 * JSON Schema (draft 2020-12) of every request, reply and event, for clients in other
 * languages. Served at `GET /protocol.json`: one schema whose root accepts any frame of
 * the protocol, with each kind of frame under `$defs` (`request.<type>`, `request`,
 * `ok.<type>`, `error`, `reply`, `event.message`, `event.presence`, `event`,
 * `legacy.signup`), so that standard validators (Ajv in strict mode) compile it whole.
 */
export function protocolJsonSchema(): JsonSchema {
  const types = Object.keys(requestSchemas) as Array<keyof typeof requestSchemas>;
  const defs: Record<string, JsonSchema> = {};
  // "input": what a client may send, which allows unknown extra fields (they are ignored).
  for (const type of types) defs[`request.${type}`] = subschema(requestSchemas[type], "input");
  defs.request = { description: "any request", oneOf: types.map((type) => ref(`request.${type}`)) };
  for (const type of types) {
    const frame = resultSchemas[type].extend({ type: z.literal("ok"), ref: Ref.optional() });
    defs[`ok.${type}`] = subschema(frame.describe(`the ok reply to ${type}`));
  }
  defs.error = subschema(ErrorReply);
  // Replies to leave, logout and ping are all `{"type":"ok"}`: any of, not one of.
  defs.reply = { description: "any reply", anyOf: [...types.map((type) => ref(`ok.${type}`)), ref("error")] };
  defs["event.message"] = subschema(MessageEvent);
  defs["event.presence"] = subschema(PresenceEvent);
  defs.event = { description: "any event the server pushes", oneOf: [ref("event.message"), ref("event.presence")] };
  // What clients of the original Prisma version send: a signup, answered like one.
  defs["legacy.signup"] = subschema(
    z.object({ username: Username, password: Password }).describe("a frame with username and password and no type: a signup"),
    "input",
  );
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: PROTOCOL_VERSION,
    description: "Any frame of the protocol: a request (or the legacy signup) from a client, a reply or an event from the server.",
    anyOf: [ref("request"), ref("legacy.signup"), ref("reply"), ref("event")],
    $defs: defs,
  };
}
