import { and, eq, isNull, sql } from "drizzle-orm";
import type { Clock } from "../../clock.ts";
import type { Config } from "../../config.ts";
import type { Store } from "../../db/open.ts";
import { sessions, users, type UserRow } from "../../db/schema.ts";
import { ProtocolError, type User } from "../../protocol/index.ts";
import { KeyedCap } from "../../ws/connection-caps.ts";
import { FailureLimiter } from "./failure-limiter.ts";
import type { PasswordHasher, StillWanted } from "./password.ts";
import { hashToken, newToken } from "./tokens.ts";

export interface SignedIn {
  user: User;
  sessionId: number;
}

const DAY_MS = 86_400_000;
/**
 * A session's last use is written at most this often, not on every sign-in; or a tenth
 * of the idle period if that is shorter, so that a token lives at least 0.9 of the idle
 * period after its last use whatever the setting.
 */
const TOUCH_INTERVAL_MS = 60_000;
/**
 * Uses are written together, at most this long after they happen: one `auth` per
 * session unused for a minute was one commit (with `DB_SYNC=FULL`, an fsync on the
 * event loop), and 10,000 such sessions authenticated in a row held the loop 3.9 s.
 */
const TOUCH_FLUSH_MS = 1000;
/** `sweep`'s period, unless the keep-alive of open sessions needs it shorter (a tiny SESSION_IDLE_DAYS). */
const SWEEP_EVERY_MS = 60_000;

export function toUser(row: Pick<UserRow, "id" | "username" | "createdAt">): User {
  return { id: row.id, username: row.username, createdAt: new Date(row.createdAt).toISOString() };
}

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: unknown; cause?: { code?: unknown } };
  return (err?.code ?? err?.cause?.code) === "SQLITE_CONSTRAINT_UNIQUE";
}

export type AccountService = ReturnType<typeof createAccountService>;

export function createAccountService(deps: { store: Store; hasher: PasswordHasher; clock: Clock; config: Config }) {
  const { store, hasher, clock, config } = deps;
  const { db } = store;
  const idleMs = config.SESSION_IDLE_DAYS * DAY_MS;
  const touchEveryMs = Math.min(TOUCH_INTERVAL_MS, idleMs / 10);
  /**
   * How often a session signed in on an open connection is recorded as used (`sweep`):
   * without it, a connection open longer than the idle period (a bot, a kiosk) kept
   * working, and its next reconnect found the token expired.
   */
  const keepAliveEveryMs = Math.min(idleMs / 10, DAY_MS);
  let keptAliveAt = clock.now();
  const byUser = new FailureLimiter(config.SIGNIN_FAILS_PER_USER, config.SIGNIN_USER_WINDOW_MS, clock);
  const byAddress = new FailureLimiter(config.SIGNIN_FAILS_PER_ADDRESS, config.SIGNIN_ADDRESS_WINDOW_MS, clock);
  let dummyHash: Promise<string> | undefined;
  /** Sign-ins being hashed or waiting for the hasher, per client address. */
  const hashing = new KeyedCap<string>(config.HASH_PER_ADDRESS);

  /**
   * Runs `work` (a sign-in's hash) counted against `address`: past HASH_PER_ADDRESS at
   * once, `rate_limited`. The hasher's queue is shared: 300 sockets of one address
   * signing up in a loop kept it full, and others' sign-ins were refused ("busy") or
   * waited 7 s.
   */
  async function hashFor<T>(address: string | undefined, work: () => Promise<T>): Promise<T> {
    if (address === undefined) return work(); // not from a client (tests, embedding)
    if (hashing.full(address)) {
      throw new ProtocolError("rate_limited", "too many sign-ins at once from this address", { retryAfterMs: 1000 });
    }
    hashing.add(address);
    try {
      return await work();
    } finally {
      hashing.remove(address);
    }
  }

  const findUserByName = db
    .select()
    .from(users)
    .where(sql`${users.username} = ${sql.placeholder("username")} COLLATE NOCASE`)
    .prepare();
  const findSession = db
    .select({ session: sessions, user: users })
    .from(sessions)
    .innerJoin(users, eq(users.id, sessions.userId))
    .where(
      and(
        eq(sessions.tokenHash, sql.placeholder("tokenHash")),
        // Expiry is checked in JavaScript: the row may not have its latest use yet (`touched`).
        isNull(sessions.revokedAt),
      ),
    )
    .prepare();
  const writeTouch = store.client.prepare<never, [number, number, number]>(
    "UPDATE sessions SET last_used_at = ?, expires_at = ? WHERE id = ? AND revoked_at IS NULL",
  );
  /** Session id -> its last use, not written yet. */
  const touched = new Map<number, number>();
  let touchTimer: ReturnType<typeof setTimeout> | undefined;
  const writeTouches = store.client.transaction(() => {
    for (const [id, at] of touched) writeTouch.run(at, at + idleMs, id);
    touched.clear();
  });

  const insertSession = db
    .insert(sessions)
    .values({
      tokenHash: sql.placeholder("tokenHash"),
      userId: sql.placeholder("userId"),
      createdAt: sql.placeholder("now"),
      lastUsedAt: sql.placeholder("now"),
      expiresAt: sql.placeholder("expiresAt"),
    })
    .returning({ id: sessions.id })
    .prepare();

  /** Revokes a user's live sessions past the `keep` most recently used; returns their ids. */
  const revokeLeastUsed = store.client.prepare<{ id: number }, [number, number, number]>(
    `UPDATE sessions SET revoked_at = ?1 WHERE id IN (
       SELECT id FROM sessions WHERE user_id = ?2 AND revoked_at IS NULL AND expires_at > ?1
       ORDER BY last_used_at DESC, id DESC LIMIT -1 OFFSET ?3
     ) RETURNING id`,
  );

  const deleteDeadSessions = store.client.prepare<never, [number]>(
    "DELETE FROM sessions WHERE revoked_at IS NOT NULL OR expires_at <= ?",
  );

  function openSession(userId: number): { token: string; sessionId: number } {
    const token = newToken();
    const now = clock.now();
    const row = insertSession.get({ tokenHash: hashToken(token), userId, now, expiresAt: now + idleMs })!;
    return { token, sessionId: row.id };
  }

  /**
   * The user and its first session, in one transaction: a signup that fails (a full
   * disk can refuse the session's page after the user's fitted) leaves no account
   * behind, so that the name is not taken by a signup its client was told had failed.
   */
  const createAccount = store.client.transaction((username: string, passwordHash: string): SignedIn & { token: string } => {
    const row = db.insert(users).values({ username, passwordHash, createdAt: clock.now() }).returning().get();
    const { token, sessionId } = openSession(row.id);
    return { user: toUser(row), token, sessionId };
  });

  /** Reserves a sign-in attempt against both limits, or throws rate_limited. */
  function beginAttempt(userKey: string, address: string): void {
    const wait = Math.max(byUser.retryAfter(userKey), byAddress.retryAfter(address));
    if (wait > 0) {
      throw new ProtocolError("rate_limited", "too many failed sign-ins; try again later", { retryAfterMs: wait });
    }
    byUser.begin(userKey);
    byAddress.begin(address);
  }

  function endAttempt(userKey: string, address: string, failed: boolean): void {
    byUser.end(userKey, failed);
    byAddress.end(address, failed);
  }

  /** A hash to verify unknown names against; only a successful one is kept. */
  function dummy(): Promise<string> {
    dummyHash ??= hasher.hash(newToken()).catch((e: unknown) => {
      dummyHash = undefined;
      throw e;
    });
    return dummyHash;
  }

  // Ready before the first unknown name arrives, so that it costs one verify like the rest.
  dummy().catch(() => {});

  return {
    /** `address`: the client's, for HASH_PER_ADDRESS; `stillWanted` as for `login`. */
    async signup(
      username: string,
      password: string,
      opts: { address?: string; stillWanted?: StillWanted } = {},
    ): Promise<SignedIn & { token: string }> {
      if (findUserByName.get({ username })) throw new ProtocolError("username_taken", "that username is taken");
      const passwordHash = await hashFor(opts.address, () => hasher.hash(password, opts.stillWanted));
      try {
        return createAccount(username, passwordHash);
      } catch (e) {
        // Two signups for one name raced through the check above.
        if (isUniqueViolation(e)) throw new ProtocolError("username_taken", "that username is taken");
        throw e;
      }
    },

    /** `stillWanted`: false once the client has gone, so that a queued verify is dropped. */
    async login(username: string, password: string, address: string, stillWanted?: StillWanted): Promise<SignedIn & { token: string }> {
      const userKey = username.toLowerCase();
      beginAttempt(userKey, address);
      let verdict: "right" | "wrong" | "not checked" = "not checked";
      let row: UserRow | undefined;
      try {
        row = findUserByName.get({ username });
        // An unknown name costs one verify too, so that timing does not tell names apart.
        const ok = await hashFor(address, async () =>
          row
            ? hasher.verify(row.passwordHash, password, stillWanted)
            : (await hasher.verify(await dummy(), password, stillWanted), false),
        );
        verdict = ok ? "right" : "wrong";
      } finally {
        // A hash that did not run (the hasher was busy, or the client left) is no failed guess.
        endAttempt(userKey, address, verdict === "wrong");
      }
      if (!row || verdict !== "right") throw new ProtocolError("invalid_credentials", "wrong username or password");
      const { token, sessionId } = openSession(row.id);
      return { user: toUser(row), token, sessionId };
    },

    auth(token: string): SignedIn {
      const now = clock.now();
      // A use not written yet keeps alive a session whose row says it has expired.
      const found = findSession.get({ tokenHash: hashToken(token) });
      const pending = found ? touched.get(found.session.id) : undefined;
      const lastUsed = Math.max(found?.session.lastUsedAt ?? 0, pending ?? 0);
      const expiresAt = Math.max(found?.session.expiresAt ?? 0, pending === undefined ? 0 : pending + idleMs);
      if (!found || expiresAt <= now) throw new ProtocolError("unauthorized", "unknown, expired or revoked token");
      if (now - lastUsed >= touchEveryMs) this.touch(found.session.id);
      return { user: toUser(found.user), sessionId: found.session.id };
    },

    /** Records a use of the session, which pushes its idle expiry back; written within TOUCH_FLUSH_MS. */
    touch(sessionId: number): void {
      touched.set(sessionId, clock.now());
      touchTimer ??= setTimeout(() => {
        touchTimer = undefined;
        this.flushTouches();
      }, TOUCH_FLUSH_MS);
      touchTimer.unref?.();
    },

    /** Writes the uses recorded and not written yet (also on shutdown and before a sweep). */
    flushTouches(): void {
      clearTimeout(touchTimer);
      touchTimer = undefined;
      if (touched.size > 0) writeTouches();
    },

    /**
     * Revokes the user's live sessions past the MAX_SESSIONS_PER_USER most recently used
     * (after a login: each adds one, and a script logging in on every run made a session
     * a run, each kept for SESSION_IDLE_DAYS). Returns the revoked ids.
     */
    evictSessions(userId: number): number[] {
      this.flushTouches(); // the latest uses decide which go
      return revokeLeastUsed.all(clock.now(), userId, config.MAX_SESSIONS_PER_USER).map((r) => r.id);
    },

    /** Revokes the session (or every live session of its user) and returns the revoked ids. */
    logout(sessionId: number, userId: number, all: boolean): number[] {
      const now = clock.now();
      const target = all ? eq(sessions.userId, userId) : eq(sessions.id, sessionId);
      return db
        .update(sessions)
        .set({ revokedAt: now })
        .where(and(target, isNull(sessions.revokedAt)))
        .returning({ id: sessions.id })
        .all()
        .map((r) => r.id);
    },

    /**
     * Drops failure counters that left their window, and sessions that can never be used
     * again (revoked or expired): `auth` refuses them either way. Returns the rows deleted.
     */
    /**
     * Forgets stale sign-in failures, records a use of every session in `open` (signed in
     * on an open connection) once per keepAliveEveryMs, and deletes revoked and expired
     * sessions. Returns how many it deleted.
     */
    sweep(open: Iterable<number> = []): number {
      byUser.sweep();
      byAddress.sweep();
      const now = clock.now();
      if (now - keptAliveAt >= keepAliveEveryMs) {
        keptAliveAt = now;
        for (const id of open) touched.set(id, now);
      }
      this.flushTouches(); // a session used but not written yet is not dead
      return deleteDeadSessions.run(now).changes;
    },

    /** How often `sweep` should run: often enough for the keep-alive of open sessions. */
    sweepEveryMs: Math.min(SWEEP_EVERY_MS, keepAliveEveryMs),
  };
}
