import type { RequestParams, RequestType, ResultOf, User } from "../protocol/index.ts";
import type { Connection } from "./connection.ts";
import { SwitchboardError } from "./errors.ts";
import type { RoomFeed } from "./feed.ts";
import type { Outbox } from "./outbox.ts";
import type { Rooms } from "./rooms.ts";
import type { Socket } from "./socket.ts";
import type { SavedState } from "./store.ts";
import type { ClientEvents } from "./types.ts";

const SIGN_IN: ReadonlySet<RequestType> = new Set(["signup", "login", "auth"]);

/** Who the client is signed in as, and what signing in and out changes. */
export class Session {
  token: string | null;
  user: User | null = null;
  /**
   * A session this client signed out of without the server hearing of it (a `logout`
   * while reconnecting, unanswered or cut off): ended on the next connection, before
   * anything else. In memory only.
   */
  private unrevoked: { token: string; all: boolean } | null = null;

  constructor(
    token: string | null,
    private readonly saved: SavedState,
    private readonly connection: Connection,
    private readonly rooms: Rooms,
    private readonly outbox: Outbox,
  ) {
    this.token = token;
  }

  /** What a successful request on `socket` changes in the client. */
  afterCall<T extends RequestType>(socket: Socket, type: T, params: RequestParams<T>, result: ResultOf<T>, wasSignedIn: boolean): void {
    if (socket !== this.connection.current) return;
    if (SIGN_IN.has(type)) {
      const r = result as ResultOf<"auth"> | ResultOf<"login">;
      this.token = "token" in r ? r.token : (params as RequestParams<"auth">).token;
      // Signing in on a signed-in connection makes the server leave its rooms: join again.
      const rejoin = wasSignedIn ? this.rooms.all() : [];
      void this.signedIn(socket, r.user, rejoin).catch((e) => this.connection.backgroundError(socket, e));
    } else if (type === "logout") {
      this.endHere();
    }
  }

  /**
   * Signs out on this client: the store, the outbox, the rooms and the token are
   * forgotten. `unheard`: the server did not answer the `logout` (its `all` given), so
   * the next connection ends the session first (see `revokeLeftover`).
   */
  endHere(unheard?: { all: boolean }): void {
    if (unheard && this.token !== null) this.unrevoked = { token: this.token, all: unheard.all };
    this.saved.reset();
    this.saved.save(true);
    this.outbox.rejectAll(new SwitchboardError("signed_out", "signed out before the message was sent", { request: "send" }));
    this.signOut("logout");
  }

  /**
   * `socket` is signed in as `user`: adopt (or reset) the store, follow its rooms,
   * and join every room not joined on this connection. Resolves when all are live.
   */
  async signedIn(socket: Socket, user: User, rejoin: readonly RoomFeed[]): Promise<void> {
    socket.signedIn = true;
    this.user = user;
    if (this.saved.state.user !== null && this.saved.state.user !== user.username) {
      // Someone else's place in the rooms and unsent messages: not ours to send.
      const otherUser = () => new SwitchboardError("signed_out", "signed in as another user", { request: "send" });
      this.rooms.leaveAll(otherUser);
      this.outbox.rejectAll(otherUser());
      this.saved.reset();
    }
    this.saved.state.user = user.username;
    this.saved.save(true);
    await this.rooms.rejoin(socket, rejoin);
  }

  /**
   * Ends the session left over from an unheard `logout` on `socket`, which is new and not
   * signed in: `auth` with its token, then `logout`. A token the server refuses was
   * ended already (revoked, or expired). Any other failure keeps it for the next
   * connection; if the socket may be left signed in as that session (the `auth` passed,
   * the `logout` did not), the failure is thrown, and the socket is dropped.
   */
  async revokeLeftover(socket: Socket): Promise<void> {
    const leftover = this.unrevoked;
    if (leftover === null) return;
    try {
      await socket.request("auth", { token: leftover.token });
    } catch (e) {
      if (e instanceof SwitchboardError && e.code === "unauthorized" && this.unrevoked === leftover) this.unrevoked = null;
      return;
    }
    await socket.requestUntilAccepted("logout", leftover.all ? { all: true } : {});
    if (this.unrevoked === leftover) this.unrevoked = null;
  }

  /** The session ended: no reconnect loop until a sign-in request (or `connect()`). */
  signOut(reason: ClientEvents["signed-out"]["reason"]): void {
    this.token = null;
    this.user = null;
    // In memory only: the store keeps the place in each room for this user's next sign-in.
    this.rooms.forget();
    this.connection.signedOut(reason);
  }
}
