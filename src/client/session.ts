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

  /** Signs out on this client: the store, the outbox, the rooms and the token are forgotten. */
  endHere(): void {
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

  /** The session ended: no reconnect loop until a sign-in request (or `connect()`). */
  signOut(reason: ClientEvents["signed-out"]["reason"]): void {
    this.token = null;
    this.user = null;
    // In memory only: the store keeps the place in each room for this user's next sign-in.
    this.rooms.forget();
    this.connection.signedOut(reason);
  }
}
