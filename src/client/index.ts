/**
 * The Switchboard client SDK: typed requests, reconnection with backoff, exactly-once
 * ordered delivery per room, and an outbox that sends each message exactly once.
 * Imports nothing but the protocol module (and zod); runs in browsers and Bun.
 *
 * @example
 * import { createClient, SwitchboardError } from "switchboard/client";
 *
 * const client = createClient({ url: "ws://localhost:8081/ws" });
 * client.on("message", (m) => console.log(`#${m.room} ${m.user}: ${m.body}`));
 * await client.signup({ username: "ada", password: "correct horse battery" });
 * await client.join({ room: "lobby" });
 * await client.send({ room: "lobby", body: "hello" });
 */
export { createClient, SwitchboardClient } from "./client.ts";
export type { CallOptions, ClientEvents, ClientOptions, ConnectionState, WebSocketConstructor, WebSocketLike } from "./types.ts";
export { DEFAULT_RETRY_AFTER_MS, SwitchboardError, type ClientErrorCode, type SwitchboardErrorCode, type SwitchboardErrorOf } from "./errors.ts";
export {
  localStorageStore,
  memoryStore,
  type ClientState,
  type ClientStore,
  type KeyValueStorage,
  type OutboxEntry,
} from "./store.ts";
export { backoffDelay, type Backoff } from "./backoff.ts";
export { newNonce } from "./outbox.ts";
export { RoomFeed, type FeedPhase } from "./feed.ts";
export type { MessageEvent, PresenceEvent, RequestParams, RequestType, ResultOf, User } from "../protocol/index.ts";
