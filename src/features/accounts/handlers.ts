import { CloseCode, ProtocolError, type User } from "../../protocol/index.ts";
import type { Socket } from "../../ws/connection.ts";
import type { Handlers } from "../../ws/dispatcher.ts";
import type { Outbound } from "../../ws/outbound.ts";
import type { SessionIndex } from "../../ws/sessions.ts";
import type { AccountService, SignedIn } from "./service.ts";

/** The signed-in user of a connection, or `unauthorized`. */
export function requireUser(ws: Socket): User {
  const user = ws.data.user;
  if (!user) throw new ProtocolError("unauthorized", "sign in first (signup, login or auth)");
  return user;
}

export function createAccountHandlers(deps: {
  accounts: AccountService;
  sessions: SessionIndex;
  outbound: Outbound;
  /** Called when a connection stops being signed in as its user (it leaves its rooms). */
  onSignOut(ws: Socket): void;
}) {
  const { accounts, sessions, outbound, onSignOut } = deps;

  function signOut(ws: Socket): void {
    const conn = ws.data;
    if (conn.sessionId === null) return;
    onSignOut(ws);
    sessions.remove(conn.sessionId, ws);
    conn.user = null;
    conn.sessionId = null;
  }

  function signIn(ws: Socket, s: SignedIn): void {
    const conn = ws.data;
    if (conn.closed) {
      // The socket closed while the password was hashing: nobody holds this token.
      accounts.logout(s.sessionId, s.user.id, false);
      return;
    }
    if (conn.user?.id === s.user.id && conn.sessionId !== null) {
      // Same user, another session: keep the rooms, move the socket to the new session.
      sessions.remove(conn.sessionId, ws);
    } else {
      signOut(ws);
    }
    conn.user = s.user;
    conn.sessionId = s.sessionId;
    sessions.add(s.sessionId, ws);
  }

  const handlers = {
    async signup({ ws }, req) {
      const s = await accounts.signup(req.username, req.password, { address: ws.data.address, stillWanted: () => !ws.data.closed });
      signIn(ws, s);
      return { user: s.user, token: s.token };
    },
    async login({ ws }, req) {
      const s = await accounts.login(req.username, req.password, ws.data.address, () => !ws.data.closed);
      signIn(ws, s);
      return { user: s.user, token: s.token };
    },
    auth({ ws }, req) {
      const s = accounts.auth(req.token);
      signIn(ws, s);
      return { user: s.user };
    },
    logout({ ws }, req) {
      const user = requireUser(ws);
      const revoked = accounts.logout(ws.data.sessionId!, user.id, req.all === true);
      signOut(ws);
      for (const id of revoked) {
        for (const other of [...sessions.sockets(id)]) {
          outbound.close(other, CloseCode.sessionRevoked, "session revoked");
        }
      }
      return {};
    },
  } satisfies Pick<Handlers, "signup" | "login" | "auth" | "logout">;

  return { handlers, signOut };
}
