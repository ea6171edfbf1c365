import { throttled, type Logger } from "../../log.ts";
import type { Metrics } from "../../metrics.ts";
import { CloseCode, ProtocolError, type User } from "../../protocol/index.ts";
import { KeyedCap } from "../../ws/connection-caps.ts";
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

/** What a sign-in refused at MAX_CONNECTIONS_PER_USER is told to wait: no event says when a connection closes. */
const USER_CAP_RETRY_MS = 5000;

export function createAccountHandlers(deps: {
  accounts: AccountService;
  sessions: SessionIndex;
  outbound: Outbound;
  metrics: Metrics;
  log: Logger;
  /** MAX_CONNECTIONS_PER_USER: connections one user may have signed in at once (0: no cap). */
  maxPerUser: number;
  /** Called when a connection stops being signed in as its user (it leaves its rooms). */
  onSignOut(ws: Socket): void;
}) {
  const { accounts, sessions, outbound, metrics, log, onSignOut } = deps;
  /** Signed-in connections per user id. */
  const perUser = new KeyedCap<number>(deps.maxPerUser);
  // Refused sign-ins, for an operator watching for guessing: at most one line a second
  // of each (with `suppressed`), never the name tried (a password typed into the name
  // field would be logged) nor the token.
  const logSigninFailed = throttled(log.info, 1000);
  const logSigninThrottled = throttled(log.info, 1000);
  const logAuthRefused = throttled(log.info, 1000);

  /** Logs a refused sign-in (`err` as thrown), then lets it go on. */
  function refused(ws: Socket, type: "signup" | "login" | "auth", err: unknown): never {
    if (ws.data.closed) throw err; // gone before its hash ran: nobody was refused
    const fields = { conn: ws.data.id, address: ws.data.address, type };
    if (err instanceof ProtocolError && err.code === "invalid_credentials") logSigninFailed("signin_failed", fields);
    else if (err instanceof ProtocolError && err.code === "rate_limited") logSigninThrottled("signin_throttled", { ...fields, retryAfterMs: err.extra.retryAfterMs });
    else if (err instanceof ProtocolError && err.code === "unauthorized") logAuthRefused("auth_refused", fields);
    throw err;
  }

  /**
   * After a login: the user's sessions past MAX_SESSIONS_PER_USER are revoked, least
   * recently used first, and their connections closed with 4001. Housekeeping: if it
   * fails, the login still stands.
   */
  function evictSessions(userId: number): void {
    try {
      const evicted = accounts.evictSessions(userId);
      if (evicted.length === 0) return;
      log.info("sessions_evicted", { user: userId, count: evicted.length });
      closeRevoked(evicted);
    } catch (err) {
      log.error("session_eviction_failed", { user: userId, err });
    }
  }

  /** Closes every connection signed in with one of `revoked` with 4001. */
  function closeRevoked(revoked: number[]): void {
    for (const id of revoked) {
      for (const other of [...sessions.sockets(id)]) outbound.close(other, CloseCode.sessionRevoked, "session revoked");
    }
  }

  function signOut(ws: Socket): void {
    const conn = ws.data;
    if (conn.sessionId === null) return;
    onSignOut(ws);
    sessions.remove(conn.sessionId, ws);
    perUser.remove(conn.user!.id);
    conn.user = null;
    conn.sessionId = null;
  }

  /**
   * Signs `ws` in as `s.user`, or throws `rate_limited` when that user has
   * MAX_CONNECTIONS_PER_USER connections signed in already; then `s`'s session, if new
   * (signup, login), is revoked: its token was never given out. A refused sign-in
   * changes nothing else: a connection signed in as another user stays so.
   */
  function signIn(ws: Socket, s: SignedIn, fresh: boolean): void {
    const conn = ws.data;
    if (conn.closed) {
      // The socket closed while the password was hashing: nobody holds this token.
      if (fresh) accounts.logout(s.sessionId, s.user.id, false);
      return;
    }
    const sameUser = conn.user?.id === s.user.id && conn.sessionId !== null;
    if (!sameUser && perUser.full(s.user.id)) {
      if (fresh) accounts.logout(s.sessionId, s.user.id, false);
      metrics.userSigninsRefused++;
      log.info("user_connection_cap", { conn: conn.id, user: s.user.id, max: perUser.max });
      throw new ProtocolError("rate_limited", `this user has ${perUser.max} connections signed in, the most allowed: close one first`, {
        retryAfterMs: USER_CAP_RETRY_MS,
      });
    }
    if (sameUser) {
      // Same user, another session: keep the rooms, move the socket to the new session.
      sessions.remove(conn.sessionId!, ws);
    } else {
      signOut(ws);
      perUser.add(s.user.id);
    }
    conn.user = s.user;
    conn.sessionId = s.sessionId;
    sessions.add(s.sessionId, ws);
  }

  const handlers = {
    async signup({ ws }, req) {
      const s = await accounts
        .signup(req.username, req.password, { address: ws.data.address, stillWanted: () => !ws.data.closed })
        .catch((e: unknown) => refused(ws, "signup", e));
      signIn(ws, s, true);
      return { user: s.user, token: s.token };
    },
    async login({ ws }, req) {
      const s = await accounts.login(req.username, req.password, ws.data.address, () => !ws.data.closed).catch((e: unknown) => refused(ws, "login", e));
      signIn(ws, s, true);
      evictSessions(s.user.id);
      return { user: s.user, token: s.token };
    },
    auth({ ws }, req) {
      let s: SignedIn;
      try {
        s = accounts.auth(req.token);
      } catch (e) {
        refused(ws, "auth", e);
      }
      signIn(ws, s, false);
      return { user: s.user };
    },
    logout({ ws }, req) {
      const user = requireUser(ws);
      const revoked = accounts.logout(ws.data.sessionId!, user.id, req.all === true);
      log.info("logout", { conn: ws.data.id, user: user.id, all: req.all === true, revoked: revoked.length });
      signOut(ws);
      closeRevoked(revoked);
      return {};
    },
  } satisfies Pick<Handlers, "signup" | "login" | "auth" | "logout">;

  return { handlers, signOut };
}
