import { z } from "zod";
import { StoredMessage } from "./replies.ts";

/** A room message pushed to every member, the sender included. */
export const MessageEvent = StoredMessage.extend({ type: z.literal("message") });
export type MessageEvent = z.infer<typeof MessageEvent>;

/** Another user's first connection joined a room, or its last one left. */
export const PresenceEvent = z.object({
  type: z.literal("presence"),
  room: z.string(),
  user: z.string(),
  state: z.enum(["join", "leave"]),
});
export type PresenceEvent = z.infer<typeof PresenceEvent>;

export const ServerEvent = z.discriminatedUnion("type", [MessageEvent, PresenceEvent]);
export type ServerEvent = z.infer<typeof ServerEvent>;
