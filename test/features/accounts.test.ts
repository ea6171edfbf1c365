import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { defaultConfig } from "../../src/config.ts";
import { createArgon2Hasher, HashSkipped } from "../../src/features/accounts/password.ts";
import { createAccountService } from "../../src/features/accounts/service.ts";
import { ProtocolError } from "../../src/protocol/index.ts";
import { freshStore, manualArgon2, TestClock } from "../helpers.ts";

const hasher = createArgon2Hasher({ concurrency: 4, queue: 100 });

function setup(config = defaultConfig()) {
  const store = freshStore();
  const clock = new TestClock();
  const accounts = createAccountService({ store, hasher, clock, config });
  return { store, clock, accounts };
}

async function code(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
  return "ok";
}

describe("accounts service", () => {
  test("signup stores an argon2id hash with the OWASP parameters, never the password", async () => {
    const { store, accounts } = setup();
    const { user, token } = await accounts.signup("Ada", "correct horse battery");
    expect(user).toMatchObject({ id: 1, username: "Ada" });
    expect(user.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const row = store.client.query<{ password_hash: string }, []>("SELECT password_hash FROM users").get()!;
    expect(row.password_hash).toStartWith("$argon2id$v=19$m=19456,t=2,p=1$");
    const dump = new TextDecoder().decode(store.client.serialize());
    expect(dump).not.toContain("correct horse battery");
    expect(dump).not.toContain(token);
  });

  test("tokens are 256-bit base64url and stored only as their SHA-256", async () => {
    const { store, accounts } = setup();
    const { token } = await accounts.signup("ada", "correct horse battery");
    expect(Buffer.from(token, "base64url")).toHaveLength(32);
    const row = store.client.query<{ token_hash: string }, []>("SELECT token_hash FROM sessions").get()!;
    expect(row.token_hash).toBe(createHash("sha256").update(token).digest("hex"));
  });

  test("usernames are unique case-insensitively", async () => {
    const { accounts } = setup();
    await accounts.signup("Ada", "correct horse battery");
    expect(await code(accounts.signup("ada", "another password"))).toBe("username_taken");
    expect(await code(accounts.signup("ADA", "another password"))).toBe("username_taken");
  });

  test("two racing signups for one name: one wins, the other is username_taken", async () => {
    const { accounts } = setup();
    const results = await Promise.all([
      code(accounts.signup("race", "correct horse battery")),
      code(accounts.signup("RACE", "correct horse battery")),
    ]);
    expect(results.sort()).toEqual(["ok", "username_taken"]);
  });

  test("a signup whose session cannot be written stores no account: the name stays free", async () => {
    const { store, accounts } = setup();
    // As a full disk can: the user's row fits, the session's page does not.
    store.client.run("CREATE TEMP TRIGGER no_sessions BEFORE INSERT ON main.sessions BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END");
    await expect(accounts.signup("ada", "correct horse battery")).rejects.toThrow("database or disk is full");
    expect(store.client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 0 });
    store.client.run("DROP TRIGGER no_sessions");
    expect(await code(accounts.login("ada", "correct horse battery", "1.2.3.4"))).toBe("invalid_credentials");
    const { user } = await accounts.signup("ada", "correct horse battery");
    expect(user.username).toBe("ada");
    expect(store.client.query("SELECT count(*) AS n FROM sessions").get()).toEqual({ n: 1 });
  });

  test("login: any case of the name; wrong password and unknown user are the same error", async () => {
    const { accounts } = setup();
    await accounts.signup("Ada", "correct horse battery");
    const s = await accounts.login("ADA", "correct horse battery", "1.1.1.1");
    expect(s.user.username).toBe("Ada");
    const wrong = await accounts.login("ada", "wrong password!", "1.1.1.1").catch((e) => e);
    const unknown = await accounts.login("nobody", "wrong password!", "1.1.1.1").catch((e) => e);
    expect(wrong).toBeInstanceOf(ProtocolError);
    expect([wrong.code, wrong.message]).toEqual([unknown.code, unknown.message]);
    expect(wrong.code).toBe("invalid_credentials");
  });

  test("auth accepts a live token and refuses unknown, expired and revoked ones", async () => {
    const config = defaultConfig({ SESSION_IDLE_DAYS: 1 });
    const { accounts, clock } = setup(config);
    const a = await accounts.signup("ada", "correct horse battery");
    expect(accounts.auth(a.token).user.id).toBe(a.user.id);
    expect(await code(() => accounts.auth("not-a-token"))).toBe("unauthorized");

    // Idle expiry: each use pushes it back.
    clock.advance(86_400_000 - 1000);
    expect(accounts.auth(a.token).sessionId).toBe(a.sessionId);
    clock.advance(86_400_000 - 1000);
    expect(accounts.auth(a.token).sessionId).toBe(a.sessionId);
    clock.advance(86_400_000);
    expect(await code(() => accounts.auth(a.token))).toBe("unauthorized");

    const b = await accounts.login("ada", "correct horse battery", "x");
    expect(accounts.logout(b.sessionId, b.user.id, false)).toEqual([b.sessionId]);
    expect(await code(() => accounts.auth(b.token))).toBe("unauthorized");
  });

  test("a session signed in on an open connection is kept alive by the sweep; one that is not expires", async () => {
    const day = 86_400_000;
    const { accounts, clock } = setup(defaultConfig({ SESSION_IDLE_DAYS: 30 }));
    expect(accounts.sweepEveryMs).toBe(60_000);
    const open = await accounts.signup("ada", "correct horse battery");
    const closed = await accounts.login("ada", "correct horse battery", "1.2.3.4");
    // 60 days with a sweep every 6 hours; only `open` is on a connection.
    for (let hours = 0; hours < 60 * 24; hours += 6) {
      clock.advance(6 * 3_600_000);
      accounts.sweep([open.sessionId]);
    }
    expect(accounts.auth(open.token).sessionId).toBe(open.sessionId);
    expect(await code(() => accounts.auth(closed.token))).toBe("unauthorized");
    // Once its connection is gone, the kept session expires like any other: 30 days after its last use.
    clock.advance(30 * day - 3_600_000);
    accounts.sweep([]);
    expect(accounts.auth(open.token).sessionId).toBe(open.sessionId);
    clock.advance(30 * day);
    expect(accounts.sweep([])).toBe(1); // deleted: the open one; the other went at its own expiry
    expect(await code(() => accounts.auth(open.token))).toBe("unauthorized");
    // A tiny idle period sweeps as often as a tenth of it.
    expect(setup(defaultConfig({ SESSION_IDLE_DAYS: 0.0001 })).accounts.sweepEveryMs).toBeCloseTo(864, 6);
  });

  test("evictSessions keeps the MAX_SESSIONS_PER_USER most recently used live sessions of the user and revokes the rest", async () => {
    const { accounts, clock } = setup(defaultConfig({ MAX_SESSIONS_PER_USER: 3 }));
    const a = await accounts.signup("ada", "correct horse battery");
    const other = await accounts.signup("bob", "correct horse battery");
    const logins: Array<{ token: string; sessionId: number }> = [];
    for (let i = 0; i < 3; i++) {
      clock.advance(120_000);
      logins.push(await accounts.login("ada", "correct horse battery", "1.2.3.4"));
    }
    // Four live sessions of ada; the signup's is used last (its use not even written yet), so the first login's goes.
    clock.advance(120_000);
    expect(accounts.auth(a.token).sessionId).toBe(a.sessionId);
    expect(accounts.evictSessions(a.user.id)).toEqual([logins[0]!.sessionId]);
    expect(await code(() => accounts.auth(logins[0]!.token))).toBe("unauthorized");
    for (const s of [a, logins[1]!, logins[2]!]) expect(accounts.auth(s.token).sessionId).toBe(s.sessionId);
    // At the cap, nothing more goes; another user's sessions are not counted.
    expect(accounts.evictSessions(a.user.id)).toEqual([]);
    expect(accounts.auth(other.token).sessionId).toBe(other.sessionId);
  });

  test("an idle period shorter than a minute: a token used within it stays alive, one left unused expires", async () => {
    const idleMs = 8_640; // SESSION_IDLE_DAYS 0.0001
    const { accounts, clock } = setup(defaultConfig({ SESSION_IDLE_DAYS: 0.0001 }));
    const a = await accounts.signup("ada", "correct horse battery");
    // Used every 2 s for 20 s, more than twice the idle period: each use counts.
    for (let t = 0; t < 10; t++) {
      clock.advance(2_000);
      expect(accounts.auth(a.token).sessionId).toBe(a.sessionId);
    }
    // Its last use is written at most a tenth of the period late, so it lives at least
    // 0.9 of the period after the last use, and not past the whole period.
    clock.advance(idleMs * 0.9 - 1);
    expect(accounts.auth(a.token).sessionId).toBe(a.sessionId);
    clock.advance(idleMs);
    expect(await code(() => accounts.auth(a.token))).toBe("unauthorized");
  });

  test("uses are written together, later: nothing per auth, every one on flushTouches (and a revoke stays revoked)", async () => {
    const { accounts, clock, store } = setup(defaultConfig({ SESSION_IDLE_DAYS: 1 }));
    const first = await accounts.signup("ada", "correct horse battery");
    const logins = await Promise.all(Array.from({ length: 4 }, () => accounts.login("ada", "correct horse battery", "x")));
    const tokens = [first.token, ...logins.map((l) => l.token)];
    const lastUsed = () =>
      Object.fromEntries(store.client.query<{ id: number; at: number }, []>("SELECT id, last_used_at AS at FROM sessions").all().map((r) => [r.id, r.at]));
    const ids = [first.sessionId, ...logins.map((l) => l.sessionId)];
    const each = (at: (id: number) => number) => Object.fromEntries(ids.map((id) => [id, at(id)]));
    const createdAt = clock.now();
    clock.advance(120_000); // past the touch interval: each auth is a use to record
    for (const token of tokens) expect(accounts.auth(token).user.username).toBe("ada");
    expect(lastUsed()).toEqual(each(() => createdAt)); // not written yet
    accounts.logout(logins[0]!.sessionId, first.user.id, false);
    accounts.flushTouches();
    const usedAt = createdAt + 120_000;
    const revoked = logins[0]!.sessionId;
    expect(lastUsed()).toEqual(each((id) => (id === revoked ? createdAt : usedAt))); // the revoked one untouched
    expect(await code(() => accounts.auth(logins[0]!.token))).toBe("unauthorized");
    // Written uses count after a restart: a day after the last use, expired; just before, alive.
    clock.advance(86_400_000 - 1);
    expect(accounts.auth(first.token).user.username).toBe("ada");
  });

  test("logout all revokes every live session of the user and no one else's", async () => {
    const { accounts } = setup();
    const a1 = await accounts.signup("ada", "correct horse battery");
    const a2 = await accounts.login("ada", "correct horse battery", "x");
    const b = await accounts.signup("bob", "correct horse battery");
    expect(accounts.logout(a1.sessionId, a1.user.id, true).sort()).toEqual([a1.sessionId, a2.sessionId].sort());
    expect(await code(() => accounts.auth(a2.token))).toBe("unauthorized");
    expect(accounts.auth(b.token).user.username).toBe("bob");
  });

  test("failed sign-ins per username: the 10th failure still verifies, then rate_limited even with the right password", async () => {
    const { accounts, clock } = setup();
    await accounts.signup("ada", "correct horse battery");
    for (let i = 0; i < 10; i++) {
      // Spread over addresses so only the per-user limit applies.
      expect(await code(accounts.login("ada", "wrong password!", `10.0.0.${i}`))).toBe("invalid_credentials");
    }
    const limited = await accounts.login("ADA", "correct horse battery", "10.0.1.1").catch((e) => e);
    expect(limited.code).toBe("rate_limited");
    expect(limited.extra.retryAfterMs).toBeGreaterThan(0);
    expect(limited.extra.retryAfterMs).toBeLessThanOrEqual(15 * 60_000);
    clock.advance(15 * 60_000);
    expect(await code(accounts.login("ada", "correct horse battery", "10.0.1.1"))).toBe("ok");
  });

  test("failed sign-ins per address: 30 pass through, the 31st is rate_limited for a minute", async () => {
    const { accounts, clock } = setup();
    await accounts.signup("ada", "correct horse battery");
    for (let i = 0; i < 30; i++) {
      expect(await code(accounts.login(`nobody${i}`, "wrong password!", "10.9.9.9"))).toBe("invalid_credentials");
    }
    expect(await code(accounts.login("ada", "correct horse battery", "10.9.9.9"))).toBe("rate_limited");
    expect(await code(accounts.login("ada", "correct horse battery", "10.9.9.8"))).toBe("ok");
    clock.advance(60_000);
    expect(await code(accounts.login("ada", "correct horse battery", "10.9.9.9"))).toBe("ok");
  });
});

describe("session housekeeping", () => {
  test("sweep deletes revoked and expired sessions, and keeps live ones", async () => {
    const { accounts, clock, store } = setup(defaultConfig({ SESSION_IDLE_DAYS: 1 }));
    const live = await accounts.signup("ada", "correct horse battery");
    const revoked = await accounts.login("ada", "correct horse battery", "x");
    accounts.logout(revoked.sessionId, revoked.user.id, false);
    expect(accounts.sweep()).toBe(1);
    clock.advance(86_400_000 - 1);
    expect(accounts.auth(live.token).user.username).toBe("ada"); // pushes the expiry back
    const idle = await accounts.login("ada", "correct horse battery", "x");
    clock.advance(86_400_000);
    expect(accounts.sweep()).toBe(2);
    expect(store.client.query("SELECT count(*) AS n FROM sessions").get()).toEqual({ n: 0 });
    expect(await code(() => accounts.auth(idle.token))).toBe("unauthorized");
  });
});

describe("sign-in limits under parallel guesses", () => {
  test("guesses sent at once count while they are checked: only `limit` reach the hasher", async () => {
    const { accounts } = setup(defaultConfig({ SIGNIN_FAILS_PER_USER: 5 }));
    await accounts.signup("victim", "correct horse battery");
    const codes = await Promise.all(
      Array.from({ length: 20 }, (_, i) => code(accounts.login("victim", `guess ${i}`, `10.1.0.${i}`))),
    );
    expect(codes.filter((c) => c === "invalid_credentials")).toHaveLength(5);
    expect(codes.filter((c) => c === "rate_limited")).toHaveLength(15);
    expect(await code(accounts.login("victim", "correct horse battery", "10.2.0.1"))).toBe("rate_limited");
  });

  test("a successful sign-in releases its reservation without counting as a failure", async () => {
    const { accounts } = setup(defaultConfig({ SIGNIN_FAILS_PER_USER: 2 }));
    await accounts.signup("ada", "correct horse battery");
    const codes = await Promise.all([1, 2, 3].map(() => code(accounts.login("ada", "correct horse battery", "x"))));
    // Two in flight fill the limit for a moment; none of them failed.
    expect(codes.filter((c) => c === "ok").length).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < 5; i++) expect(await code(accounts.login("ada", "correct horse battery", "x"))).toBe("ok");
  });

  test("a dummy hash refused by a busy hasher is not kept: unknown names are not stuck on rate_limited", async () => {
    const store = freshStore();
    const busy = createArgon2Hasher({ concurrency: 1, queue: 0 });
    const blocker = busy.hash("holds the only slot");
    // The service computes its dummy hash at once: refused, the hasher is busy.
    const accounts = createAccountService({ store, hasher: busy, clock: new TestClock(), config: defaultConfig() });
    await blocker;
    expect(await code(accounts.login("ghost", "whatever pw", "x"))).toBe("invalid_credentials");
    expect(await code(accounts.login("ghost", "whatever pw", "x"))).toBe("invalid_credentials");
  });
});

describe("argon2 hasher", () => {
  test("bounds the hashes in flight and answers rate_limited past its queue", async () => {
    const small = createArgon2Hasher({ concurrency: 1, queue: 1 });
    const results = await Promise.allSettled([small.hash("password-1"), small.hash("password-2"), small.hash("password-3")]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected"]);
    const err = (results[2] as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("rate_limited");
    // The slots are released: it works again.
    expect(await small.verify(await small.hash("again-and-again"), "again-and-again")).toBe(true);
  });
});

describe("hashes for clients that have gone", () => {
  test("a queued job whose client has gone is dropped when its turn comes; the next one runs", async () => {
    const m = manualArgon2();
    const hasher = createArgon2Hasher({ concurrency: 1, queue: 10, argon2: m.argon2 });
    let bGone = false;
    const a = hasher.hash("a", () => true);
    const b = hasher.verify("digest", "b", () => !bGone);
    const c = hasher.hash("c", () => true);
    expect(m.started).toEqual(["hash a"]);
    bGone = true; // b's client leaves while b waits
    m.finishNext();
    expect(await a).toBe("digest of a");
    await expect(b).rejects.toBeInstanceOf(HashSkipped);
    await Bun.sleep(0);
    expect(m.started).toEqual(["hash a", "hash c"]); // b never ran
    m.finishNext();
    expect(await c).toBe("digest of c");
    // The slot is free again; a job nobody asked to check always runs.
    const d = hasher.verify("digest", "d");
    m.finishNext();
    expect(await d).toBe(true);
    expect(m.started).toEqual(["hash a", "hash c", "verify d"]);
  });

  test("a login dropped that way is no failed guess, and releases its reservation", async () => {
    const m = manualArgon2();
    const store = freshStore();
    const config = defaultConfig({ SIGNIN_FAILS_PER_USER: 1 });
    const accounts = createAccountService({ store, hasher: createArgon2Hasher({ concurrency: 1, queue: 10, argon2: m.argon2 }), clock: new TestClock(), config });
    const settle = () => Bun.sleep(0);
    m.finishNext(); // the dummy hash the service makes at start
    await settle();
    const signup = accounts.signup("ada", "correct horse battery");
    m.finishNext();
    await signup;
    await settle();
    const first = accounts.login("ada", "correct horse battery", "x", () => true);
    const gone = accounts.login("ada", "correct horse battery", "x", () => false);
    expect(m.started).toHaveLength(3); // dummy, signup, first: `gone` waits for the slot
    m.finishNext();
    expect(await code(first)).toBe("ok");
    expect(await code(gone)).toBe("rate_limited");
    expect(m.started).toHaveLength(3); // `gone` was dropped, not hashed
    // With a limit of one failure, a counted failure or a leaked reservation would refuse this.
    const again = accounts.login("ada", "correct horse battery", "x", () => true);
    await settle();
    m.finishNext();
    expect(await code(again)).toBe("ok");
  });
});
