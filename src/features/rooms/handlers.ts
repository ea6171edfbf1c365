import { LATER, type Handlers } from "../../ws/dispatcher.ts";
import { requireUser } from "../accounts/handlers.ts";
import type { RoomService } from "./service.ts";

const DEFAULT_HISTORY_LIMIT = 50;

export function createRoomHandlers(rooms: RoomService) {
  return {
    join(ctx, req) {
      requireUser(ctx.ws);
      return rooms.join(ctx.ws, req.room, req.since, (fn) => ctx.afterReply(fn));
    },
    leave({ ws }, req) {
      requireUser(ws);
      rooms.leave(ws, req.room);
      return {};
    },
    send(ctx, req) {
      requireUser(ctx.ws);
      rooms.send(ctx.ws, req.room, req.body, req.nonce, ctx.arrivedAt, ctx.later<"send">());
      return LATER;
    },
    history({ ws }, req) {
      requireUser(ws);
      return rooms.history(req.room, req.before, req.limit ?? DEFAULT_HISTORY_LIMIT);
    },
    who({ ws }, req) {
      requireUser(ws);
      return rooms.who(req.room);
    },
    ping() {
      return {};
    },
  } satisfies Pick<Handlers, "join" | "leave" | "send" | "history" | "who" | "ping">;
}
