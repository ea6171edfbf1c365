import type { RequestParams, RequestType, ResultOf, User } from "../protocol/index.ts";
import { Connection } from "./connection.ts";
import { Emitter } from "./emitter.ts";
import { SwitchboardError } from "./errors.ts";
import { checkRequest } from "./frames.ts";
import { newNonce, Outbox } from "./outbox.ts";
import { Rooms } from "./rooms.ts";
import { Session } from "./session.ts";
import { memoryStore, SavedState, type OutboxEntry } from "./store.ts";
import { after, checkTimeout } from "./timeouts.ts";
import type { CallOptions, ClientEvents, ClientOptions, ConnectionState } from "./types.ts";

/** What a sign-out the server did not hear of leaves behind. */
const NOT_TOLD = "the server may not know: the client ends the session on its next connection (connect(), or a sign-in), and until then it stays valid";

/**
 * A Switchboard connection that survives network loss: typed requests, exactly-once
 * ordered delivery per room, and an outbox whose sends reach the room exactly once.
 * Create it with `createClient`.
 */
export class SwitchboardClient {
  private readonly events = new Emitter<ClientEvents>();
  private readonly connection: Connection;
  private readonly saved: SavedState;
  private readonly sends: Outbox;
  private readonly roomFeeds: Rooms;
  private readonly session: Session;

  constructor(readonly options: ClientOptions) {
    this.connection = new Connection(options, this.events, {
      token: () => this.session.token,
      revokeLeftover: (socket) => this.session.revokeLeftover(socket),
      user: () => this.session.user,
      signedIn: (socket, user) => this.session.signedIn(socket, user, []),
      signOut: (reason) => this.session.signOut(reason),
      opened: () => this.sends.pump(),
      roomEvent: (socket, event) => this.roomFeeds.receive(socket, event),
      detached: () => {
        this.roomFeeds.reset();
        this.sends.detached();
      },
      stopped: (error) => {
        this.sends.stop(error);
        this.saved.flush();
      },
    });
    this.saved = new SavedState(options.store ?? memoryStore(), () => this.sends.announce());
    this.sends = new Outbox(this.saved, this.connection, this.events, (room) => this.roomFeeds.isJoined(room));
    this.roomFeeds = new Rooms(options.historyPageSize, this.saved, this.connection, this.sends, this.events);
    this.session = new Session(options.token ?? null, this.saved, this.connection, this.roomFeeds, this.sends);
    this.roomFeeds.trackStored();
    if (options.autoConnect ?? true) this.connection.connect("later");
  }

  /** The connection state; every change is also a `state` event. */
  get state(): ConnectionState {
    return this.connection.state;
  }

  /** The signed-in user, or null. */
  get user(): User | null {
    return this.session.user;
  }

  /** The session token the client re-authenticates with after a reconnect, or null. */
  get token(): string | null {
    return this.session.token;
  }

  /** Sends not yet acknowledged by the server, oldest first (they survive reconnects and, with a persistent store, reloads). */
  get outbox(): readonly OutboxEntry[] {
    return this.sends.entries;
  }

  /** Rooms this client follows (joined, or to be re-joined after a reconnect). */
  get rooms(): string[] {
    return this.roomFeeds.names;
  }

  /** The seq of the last message of `room` delivered to the application, if any. */
  lastSeq(room: string): number | undefined {
    return this.roomFeeds.lastSeq(room);
  }

  /**
   * Subscribes to an event; returns the function that unsubscribes.
   *
   * @example
   * const off = client.on("message", (m) => console.log(`#${m.room} ${m.user}: ${m.body}`));
   * client.on("state", ({ state }) => (statusEl.textContent = state));
   * off();
   */
  on<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void {
    return this.events.on(type, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): void {
    this.events.off(type, listener);
  }

  /**
   * Resolves with the next `type` event that satisfies `match` (rejects after `timeoutMs`).
   *
   * @example
   * await client.next("open");
   * const m = await client.next("message", (m) => m.body === "hello");
   */
  next<K extends keyof ClientEvents>(
    type: K,
    match: (event: ClientEvents[K]) => boolean = () => true,
    timeoutMs = this.connection.timeoutMs,
  ): Promise<ClientEvents[K]> {
    try {
      checkTimeout("next: timeoutMs", timeoutMs);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const timer = after(timeoutMs, () => {
        off();
        reject(new SwitchboardError("timeout", `no ${String(type)} event within ${timeoutMs} ms`));
      });
      const off = this.on(type, (event) => {
        if (!match(event)) return;
        clearTimeout(timer);
        off();
        resolve(event);
      });
    });
  }

  /**
   * Opens the connection (done at creation unless `autoConnect: false`); after
   * `close()` or a sign-out, starts again.
   */
  connect(): void {
    this.connection.connect();
  }

  /**
   * Closes the connection and stops reconnecting. Pending requests and sends reject
   * with `closed`; unsent messages stay in the store, for a later client to send.
   */
  close(): void {
    this.connection.close();
  }

  /**
   * Creates an account and signs in.
   *
   * @example
   * const { user, token } = await client.signup({ username: "ada", password: "correct horse battery" });
   * localStorage.setItem("token", token);
   */
  signup(params: RequestParams<"signup">, options?: CallOptions): Promise<ResultOf<"signup">> {
    return this.call("signup", params, options);
  }

  /**
   * Signs in with a password; the client keeps the token to re-authenticate after reconnects.
   *
   * @example
   * const { user } = await client.login({ username: "ada", password: "correct horse battery" });
   */
  login(params: RequestParams<"login">, options?: CallOptions): Promise<ResultOf<"login">> {
    return this.call("login", params, options);
  }

  /**
   * Signs in with a token from an earlier `signup`/`login` (the `token` option does this on connect).
   *
   * @example
   * await client.auth({ token: localStorage.getItem("token")! });
   */
  auth(params: RequestParams<"auth">, options?: CallOptions): Promise<ResultOf<"auth">> {
    return this.call("auth", params, options);
  }

  /**
   * Revokes the session (`all: true`: every session of the user), forgets the rooms,
   * the outbox and the token, and disconnects: the client is then `signed-out`.
   *
   * The client signs out even when the server cannot be told: at once while it is
   * reconnecting, and when the `logout` is not answered in time (`timeout`) or its
   * connection drops (`disconnected`); it then rejects with that code (token, rooms and
   * outbox forgotten, `signed-out` all the same). The server may not have revoked the
   * session then: the client ends it on its next connection (`connect()`, or a sign-in
   * request), before anything else. A refusal by the request budget is asked again.
   *
   * @example
   * await client.logout();
   * localStorage.removeItem("token");
   */
  async logout(params: RequestParams<"logout"> = {}, options?: CallOptions): Promise<ResultOf<"logout">> {
    const invalid = checkRequest("logout", params);
    if (invalid) throw invalid;
    // Reconnecting: the server is known to be out of reach right now. (A first
    // connection still being made is waited for, as for any request.)
    if (this.session.token !== null && this.connection.state === "reconnecting") {
      this.session.endHere({ all: params.all === true });
      throw new SwitchboardError("disconnected", `not connected: signed out on this client only; ${NOT_TOLD}`, { request: "logout" });
    }
    try {
      return await this.withDeadline("logout", options, async (deadline) => {
        const socket = await this.connection.whenReady("logout", deadline);
        const wasSignedIn = socket.signedIn;
        // Refused by the request budget: asked again (the one request a user expects to go through).
        const result = await socket.requestUntilAccepted("logout", params, deadline - Date.now());
        this.session.afterCall(socket, "logout", params, result, wasSignedIn);
        return result;
      });
    } catch (e) {
      const unheard = e instanceof SwitchboardError && (e.code === "timeout" || e.code === "disconnected");
      if (!unheard || this.session.token === null) throw e;
      this.session.endHere({ all: params.all === true });
      throw new SwitchboardError(e.code, `${e.message}: signed out on this client only; ${NOT_TOLD}`, { request: "logout", cause: e });
    }
  }

  /**
   * Joins a room. From then on the client follows it: after a reconnect it joins again
   * with `since` and delivers every message after the last one it delivered, exactly
   * once and in order, until `leave`. Give `since` to start after a known seq; without
   * it, delivery starts with the messages after the reply's `seq` (read older ones with
   * `history`). Joining a followed room returns fresh `members` and changes nothing.
   *
   * @example
   * const { seq, members } = await client.join({ room: "lobby" });
   * const { messages } = await client.history({ room: "lobby", before: seq + 1 });
   */
  async join(params: RequestParams<"join">, options?: CallOptions): Promise<ResultOf<"join">> {
    const invalid = checkRequest("join", params);
    if (invalid) throw invalid;
    const { feed, created } = this.roomFeeds.follow(params.room, params.since ?? null);
    return this.withDeadline("join", options, async (deadline) => {
      let socket;
      try {
        socket = await this.connection.whenReady("join", deadline);
      } catch (e) {
        // Refused here (signed out, closed): not followed, as a refusal by the server.
        // Not on `timeout`: a join that times out keeps the room followed.
        if (created && e instanceof SwitchboardError && (e.code === "signed_out" || e.code === "closed")) this.roomFeeds.unfollow(feed);
        throw e;
      }
      return this.roomFeeds.join(socket, feed, created, deadline);
    });
  }

  /**
   * Leaves a room: the client stops following it at once. Unsent messages to it are
   * dropped (their `send` rejects with `not_joined`).
   *
   * @example
   * await client.leave({ room: "lobby" });
   */
  async leave(params: RequestParams<"leave">, options?: CallOptions): Promise<ResultOf<"leave">> {
    const invalid = checkRequest("leave", params);
    if (invalid) throw invalid;
    this.roomFeeds.leave(params.room, new SwitchboardError("not_joined", `left ${params.room} before the message was sent`, { request: "send" }));
    return this.call("leave", params, options);
  }

  /**
   * Sends a message to a joined room through the outbox: it is written now if
   * connected, else after the reconnect, retried with the same `nonce` until the server
   * acknowledges it, so it appears in the room exactly once. Resolves with its `seq`
   * and `at` (its own `message` event also arrives). Does not time out; rejects when
   * the server refuses it (`bad_request`, `not_joined`, ...) or with `closed`.
   *
   * @example
   * const { seq } = await client.send({ room: "lobby", body: "hello" });
   */
  send(params: RequestParams<"send">): Promise<ResultOf<"send">> {
    const state = this.connection.state;
    if (state === "closed") return Promise.reject(new SwitchboardError("closed", "the client was closed", { request: "send" }));
    if (state === "signed-out") return Promise.reject(new SwitchboardError("signed_out", "sign in first", { request: "send" }));
    const nonce = params.nonce ?? newNonce();
    const invalid = checkRequest("send", { ...params, nonce });
    if (invalid) return Promise.reject(invalid);
    if (!this.roomFeeds.has(params.room)) {
      return Promise.reject(new SwitchboardError("not_joined", `join ${params.room} before sending to it`, { request: "send" }));
    }
    return this.sends.add({ room: params.room, body: params.body, nonce });
  }

  /**
   * Reads stored messages: the newest `limit` (default 50, at most 100) with seq below
   * `before`, ascending. `hasMore` says whether older ones exist.
   *
   * @example
   * let { messages, hasMore } = await client.history({ room: "lobby" });
   * while (hasMore) ({ messages, hasMore } = await client.history({ room: "lobby", before: messages[0]!.seq }));
   */
  history(params: RequestParams<"history">, options?: CallOptions): Promise<ResultOf<"history">> {
    return this.call("history", params, options);
  }

  /**
   * Who is present in a room.
   *
   * @example
   * const { members } = await client.who({ room: "lobby" });
   */
  who(params: RequestParams<"who">, options?: CallOptions): Promise<ResultOf<"who">> {
    return this.call("who", params, options);
  }

  /**
   * A round trip to the server.
   *
   * @example
   * const t0 = performance.now();
   * await client.ping();
   * console.log(`rtt ${performance.now() - t0} ms`);
   */
  ping(options?: CallOptions): Promise<ResultOf<"ping">> {
    return this.call("ping", {}, options);
  }

  // ---------------------------------------------------------------- requests

  private async withDeadline<T>(type: RequestType, options: CallOptions | undefined, run: (deadline: number) => Promise<T>): Promise<T> {
    const ms = checkTimeout(`${type}: timeoutMs`, options?.timeoutMs ?? this.connection.timeoutMs);
    const deadline = Date.now() + ms;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = after(ms, () => reject(new SwitchboardError("timeout", `no reply to ${type} within ${ms} ms`, { request: type })));
    });
    try {
      return await Promise.race([run(deadline), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async call<T extends RequestType>(type: T, params: RequestParams<T>, options?: CallOptions): Promise<ResultOf<T>> {
    const invalid = checkRequest(type, params);
    if (invalid) throw invalid;
    return this.withDeadline(type, options, async (deadline) => {
      const socket = await this.connection.whenReady(type, deadline);
      const wasSignedIn = socket.signedIn;
      const result = await socket.request(type, params, deadline - Date.now());
      this.session.afterCall(socket, type, params, result, wasSignedIn);
      return result;
    });
  }
}

/**
 * Creates a Switchboard client and starts connecting.
 *
 * @example
 * import { createClient } from "switchboard/client";
 *
 * const client = createClient({ url: "ws://localhost:8081/ws" });
 * client.on("message", (m) => console.log(`#${m.room} ${m.user}: ${m.body}`));
 * const { token } = await client.signup({ username: "ada", password: "correct horse battery" });
 * await client.join({ room: "lobby" });
 * await client.send({ room: "lobby", body: "hello" });
 */
export function createClient(options: ClientOptions): SwitchboardClient {
  return new SwitchboardClient(options);
}
