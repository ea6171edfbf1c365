import { afterEach, describe, expect, test } from "bun:test";
import { createArgon2Hasher } from "../../src/features/accounts/password.ts";
import { manualArgon2, signedIn, startApp, uname, type TestApp } from "../helpers.ts";

let t: TestApp;
afterEach(() => t?.stop());

const PW = "correct horse battery";

describe("accounts over WebSocket", () => {
  test("signup replies user and token, echoing the ref; the connection is signed in", async () => {
    t = await startApp();
    const s = await t.connect();
    const r = await s.request({ type: "signup", ref: 7, username: "Ada", password: PW });
    expect(r).toMatchObject({ type: "ok", ref: 7, user: { id: 1, username: "Ada" } });
    expect(r.token).toBeString();
    expect(await s.request({ type: "join", room: "lobby" })).toMatchObject({ type: "ok" });
  });

  test("the legacy {username, password} frame is a signup; without a ref the reply has none", async () => {
    t = await startApp();
    const s = await t.connect();
    s.sendRaw({ username: "legacy_user", password: PW });
    const r = await s.next();
    expect(r).toMatchObject({ type: "ok", user: { username: "legacy_user" } });
    expect("ref" in r).toBe(false);
  });

  test("MAX_SESSIONS_PER_USER: a login past it revokes the least recently used session, and its connection gets 4001; at it, none", async () => {
    t = await startApp({ config: { MAX_SESSIONS_PER_USER: 2 } });
    const first = await t.connect();
    await first.request({ type: "signup", username: "ada", password: PW });
    const second = await t.connect();
    expect(await second.request({ type: "login", username: "ada", password: PW })).toMatchObject({ type: "ok" });
    // Two sessions: at the cap, both stand.
    expect(await first.request({ type: "ping" })).toMatchObject({ type: "ok" });
    const third = await t.connect();
    const closed = first.closed;
    expect(await third.request({ type: "login", username: "ada", password: PW })).toMatchObject({ type: "ok" });
    // The third: the signup's session was used least lately, so it goes.
    expect(await closed).toEqual({ code: 4001, reason: "session revoked" });
    expect(await second.request({ type: "who", room: "lobby" })).toMatchObject({ type: "ok" });
    expect(await third.request({ type: "who", room: "lobby" })).toMatchObject({ type: "ok" });
    const live = t.store.client.query("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL").get();
    expect(live).toEqual({ n: 2 });
  });

  test("username_taken, case-insensitively", async () => {
    t = await startApp();
    const s = await t.connect();
    await s.request({ type: "signup", username: "Ada", password: PW });
    const r = await s.request({ type: "signup", username: "aDA", password: PW });
    expect(r).toEqual({ type: "error", ref: r.ref, code: "username_taken", message: "that username is taken" });
  });

  test("signup field limits: 3 and 32 chars pass, 2 and 33 fail; password 8..1024", async () => {
    t = await startApp();
    const s = await t.connect();
    const sign = (username: string, password = PW) => s.request({ type: "signup", username, password });
    expect((await sign("abc")).type).toBe("ok");
    expect((await sign("a".repeat(32))).type).toBe("ok");
    expect((await sign("x.y-z_9" + "q".repeat(3))).type).toBe("ok");
    for (const bad of ["ab", "a".repeat(33), "has space", "émile", ""]) {
      const r = await sign(bad);
      expect(r).toMatchObject({ type: "error", code: "bad_request" });
      expect((r.issues as { path: string }[]).map((i) => i.path)).toContain("username");
      expect((r.issues as { path: string }[]).every((i) => i.path === "username")).toBe(true);
    }
    expect((await sign(uname("p"), "12345678")).type).toBe("ok");
    expect((await sign(uname("p"), "x".repeat(1024))).type).toBe("ok");
    expect(await sign(uname("p"), "1234567")).toMatchObject({ code: "bad_request", issues: [{ path: "password" }] });
    expect(await sign(uname("p"), "x".repeat(1025))).toMatchObject({ code: "bad_request", issues: [{ path: "password" }] });
  });

  test("login and auth sign a new connection in; bad credentials and tokens are refused", async () => {
    t = await startApp();
    const { name, token } = await signedIn(t);
    const s = await t.connect();
    const wrong = await s.request({ type: "login", username: name, password: "wrong password" });
    const unknown = await s.request({ type: "login", username: "nobody_here", password: "wrong password" });
    expect({ ...wrong, ref: 0 }).toEqual({ ...unknown, ref: 0 });
    expect(wrong).toMatchObject({ code: "invalid_credentials" });
    expect(await s.request({ type: "auth", token: "x".repeat(43) })).toMatchObject({ code: "unauthorized" });
    expect(await s.request({ type: "join", room: "lobby" })).toMatchObject({ code: "unauthorized" });

    const login = await s.request({ type: "login", username: name.toUpperCase(), password: PW });
    expect(login).toMatchObject({ type: "ok", user: { username: name } });
    expect(login.token).not.toBe(token);

    const s2 = await t.connect();
    expect(await s2.request({ type: "auth", token })).toMatchObject({ type: "ok", user: { username: name } });
  });

  test("requests written right behind a login run after it, in order", async () => {
    t = await startApp();
    const { name } = await signedIn(t);
    const s = await t.connect();
    s.sendRaw({ type: "login", ref: 1, username: name, password: PW });
    s.sendRaw({ type: "join", ref: 2, room: "lobby" });
    s.sendRaw({ type: "send", ref: 3, room: "lobby", body: "right away" });
    const replies = [await s.next((f) => f.ref === 1), await s.next((f) => f.ref === 2), await s.next((f) => f.ref === 3)];
    expect(replies.map((r) => r.type)).toEqual(["ok", "ok", "ok"]);
  });

  test("a ping is answered while a login is still hashing", async () => {
    t = await startApp();
    const { name } = await signedIn(t);
    const s = await t.connect();
    s.sendRaw({ type: "login", ref: "login", username: name, password: PW });
    s.sendRaw({ type: "ping", ref: "ping" });
    const first = await s.next((f) => f.ref === "login" || f.ref === "ping");
    expect(first.ref).toBe("ping");
  });

  test("logout signs this connection out, keeps it open, and closes the session's other sockets with 4001", async () => {
    t = await startApp();
    const { s, name, token } = await signedIn(t);
    const same = await t.connect();
    await same.request({ type: "auth", token });
    const otherSession = await t.connect();
    await otherSession.request({ type: "login", username: name, password: PW });

    expect(await s.request({ type: "logout" })).toMatchObject({ type: "ok" });
    expect(await same.closed).toEqual({ code: 4001, reason: "session revoked" });
    expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
    expect(await s.request({ type: "who", room: "lobby" })).toMatchObject({ code: "unauthorized" });
    expect(await otherSession.request({ type: "who", room: "lobby" })).toMatchObject({ type: "ok" });
    expect(await (await t.connect()).request({ type: "auth", token })).toMatchObject({ code: "unauthorized" });
  });

  test("logout all closes every other socket of the user with 4001", async () => {
    t = await startApp();
    const { s, name } = await signedIn(t);
    const other = await t.connect();
    await other.request({ type: "login", username: name, password: PW });
    const bystander = (await signedIn(t)).s;
    expect(await s.request({ type: "logout", all: true })).toMatchObject({ type: "ok" });
    expect((await other.closed).code).toBe(4001);
    expect(await bystander.request({ type: "ping" })).toMatchObject({ type: "ok" });
    expect(await s.request({ type: "logout" })).toMatchObject({ code: "unauthorized" });
  });

  test("failed sign-ins: limits per username, then rate_limited with retryAfterMs even with the right password", async () => {
    t = await startApp({ config: { SIGNIN_FAILS_PER_USER: 3 } });
    const { name } = await signedIn(t);
    const s = await t.connect();
    for (let i = 0; i < 3; i++) {
      expect(await s.request({ type: "login", username: name, password: "wrong password" })).toMatchObject({ code: "invalid_credentials" });
    }
    const r = await s.request({ type: "login", username: name, password: PW });
    expect(r).toMatchObject({ type: "error", code: "rate_limited" });
    expect(r.retryAfterMs).toBeNumber();
  });

  test("failed sign-ins per client address", async () => {
    t = await startApp({ config: { SIGNIN_FAILS_PER_ADDRESS: 2 } });
    const { name } = await signedIn(t);
    const s = await t.connect();
    for (const who of ["nobody_a", "nobody_b"]) {
      expect(await s.request({ type: "login", username: who, password: "wrong password" })).toMatchObject({ code: "invalid_credentials" });
    }
    expect(await (await t.connect()).request({ type: "login", username: name, password: PW })).toMatchObject({ code: "rate_limited" });
  });

  test("behind a trusted proxy, failed sign-ins count per X-Forwarded-For client; from any other peer the header is ignored", async () => {
    const { TrustedProxies } = await import("../../src/ws/client-address.ts");
    const fail = async (forwardedFor: string) =>
      (await t.connect({ headers: { "x-forwarded-for": forwardedFor } })).request({ type: "login", username: "nobody", password: "wrong password" });
    // The test's sockets come from 127.0.0.1: here that is the proxy.
    t = await startApp({ config: { SIGNIN_FAILS_PER_ADDRESS: 2, trustedProxies: TrustedProxies.parse("127.0.0.1, ::1, ::ffff:127.0.0.1") } });
    for (let i = 0; i < 2; i++) expect(await fail("203.0.113.1")).toMatchObject({ code: "invalid_credentials" });
    expect(await fail("203.0.113.1")).toMatchObject({ code: "rate_limited" });
    // Another client behind the same proxy has its own count; the address the client wrote itself does not help.
    expect(await fail("203.0.113.2")).toMatchObject({ code: "invalid_credentials" });
    expect(await fail("203.0.113.2, 203.0.113.1")).toMatchObject({ code: "rate_limited" });
    await t.stop();

    // Not a trusted peer: every header names a new address, and all of them count as 127.0.0.1.
    t = await startApp({ config: { SIGNIN_FAILS_PER_ADDRESS: 2 } });
    for (let i = 0; i < 2; i++) expect(await fail(`203.0.113.${10 + i}`)).toMatchObject({ code: "invalid_credentials" });
    expect(await fail("203.0.113.12")).toMatchObject({ code: "rate_limited" });
  });

  test("no password or token appears in replies other than the one that issues it", async () => {
    const lines: string[] = [];
    const { createLogger } = await import("../../src/log.ts");
    t = await startApp({ log: createLogger("debug", (l) => lines.push(l)) });
    const { s, name, token } = await signedIn(t);
    await s.request({ type: "login", username: name, password: "wrong password" });
    await s.request({ type: "auth", token });
    await s.request({ type: "logout" });
    const all = s.frames.map((f) => JSON.stringify(f)).join("\n") + lines.join("\n");
    expect(all).not.toContain(PW);
    expect(all).not.toContain("wrong password");
    expect(lines.join("\n")).not.toContain(token);
  });
});

describe("requests waiting behind a sign-in", () => {
  test("64 requests may wait behind a hashing login; the 65th is rate_limited at once", async () => {
    t = await startApp();
    const { name } = await signedIn(t);
    const s = await t.connect();
    s.sendRaw({ type: "login", ref: "login", username: name, password: PW });
    for (let i = 0; i < 65; i++) s.sendRaw({ type: "who", ref: i, room: "lobby" });
    // The 65th is refused before the login (and the 64 behind it) are answered.
    const first = await s.next((f) => f.ref !== undefined);
    expect(first).toMatchObject({ ref: 64, type: "error", code: "rate_limited", retryAfterMs: expect.any(Number) });
    expect(await s.next((f) => f.ref === "login")).toMatchObject({ type: "ok" });
    for (let i = 0; i < 64; i++) expect(await s.next((f) => f.ref === i)).toMatchObject({ type: "ok", members: [] });
  });
});

describe("login field bounds", () => {
  test("login username up to 64 and password up to 1024 chars are checked; longer is bad_request before any hash", async () => {
    t = await startApp();
    const s = await t.connect();
    expect(await s.request({ type: "login", username: "u".repeat(64), password: "p".repeat(1024) })).toMatchObject({ code: "invalid_credentials" });
    expect(await s.request({ type: "login", username: "u".repeat(65), password: "x" })).toMatchObject({ code: "bad_request", issues: [{ path: "username" }] });
    expect(await s.request({ type: "login", username: "u", password: "p".repeat(1025) })).toMatchObject({ code: "bad_request", issues: [{ path: "password" }] });
    expect(await s.request({ type: "auth", token: "t".repeat(128) })).toMatchObject({ code: "unauthorized" });
    expect(await s.request({ type: "auth", token: "t".repeat(129) })).toMatchObject({ code: "bad_request", issues: [{ path: "token" }] });
  });
});

test("a login whose socket closed while hashing leaves no live session behind", async () => {
  t = await startApp();
  const { name } = await signedIn(t);
  const s = await t.connect();
  s.sendRaw({ type: "login", ref: 1, username: name, password: PW });
  await s.close();
  // The login finishes after the close: its session must be revoked at once.
  const deadline = Date.now() + 5000;
  const count = () =>
    t.store.client.query<{ live: number; total: number }, []>(
      "SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS live, count(*) AS total FROM sessions",
    ).get()!;
  while (count().total < 2 && Date.now() < deadline) await Bun.sleep(5);
  expect(count()).toEqual({ live: 1, total: 2 });
});

test("a login still queued for the hasher when its socket closes is never hashed", async () => {
  const m = manualArgon2();
  t = await startApp({ hasher: createArgon2Hasher({ concurrency: 1, queue: 10, argon2: m.argon2 }) });
  await m.untilStarted(1);
  m.finishNext(); // the dummy hash for unknown names
  const ada = await t.connect();
  const signup = ada.request({ type: "signup", username: "ada_q", password: PW });
  await m.untilStarted(2);
  m.finishNext();
  expect(await signup).toMatchObject({ type: "ok" });

  const [a, b, c] = [await t.connect(), await t.connect(), await t.connect()];
  const first = a.request({ type: "login", username: "ada_q", password: PW });
  await m.untilStarted(3); // a's verify holds the only slot
  b.sendRaw({ type: "login", ref: "b", username: "ada_q", password: "correct horse battery b" });
  expect(await b.request({ type: "ping" })).toMatchObject({ type: "ok" }); // b's login is queued
  await b.close();
  const last = c.request({ type: "login", username: "ada_q", password: "correct horse battery c" });
  expect(await c.request({ type: "ping" })).toMatchObject({ type: "ok" });
  m.finishNext();
  expect(await first).toMatchObject({ type: "ok" });
  await m.untilStarted(4);
  m.finishNext();
  expect(await last).toMatchObject({ type: "ok" });
  // After the dummy hash: the signup, a's login and c's; b's was dropped.
  expect(m.started.slice(1)).toEqual([`hash ${PW}`, `verify ${PW}`, "verify correct horse battery c"]);
  // b's refusal had no socket to go to: it is not counted as an error reply.
  expect(t.app.metrics.errors.get("rate_limited")).toBe(0);
});

test("HASH_PER_ADDRESS: an address's sign-ins being hashed or waiting are capped; past it rate_limited, other addresses unaffected", async () => {
  const m = manualArgon2();
  const { TrustedProxies } = await import("../../src/ws/client-address.ts");
  t = await startApp({
    hasher: createArgon2Hasher({ concurrency: 1, queue: 100, argon2: m.argon2 }),
    config: { HASH_PER_ADDRESS: 2, trustedProxies: TrustedProxies.parse("127.0.0.1, ::1, ::ffff:127.0.0.1") },
  });
  await m.untilStarted(1);
  m.finishNext(); // the dummy hash for unknown names
  const from = (address: string) => t.connect({ headers: { "x-forwarded-for": address } });
  const [a1, a2, a3, b1] = await Promise.all([from("203.0.113.1"), from("203.0.113.1"), from("203.0.113.1"), from("203.0.113.2")]);
  // Two from one address: one hashing, one waiting. The third is refused at once.
  const first = a1.request({ type: "signup", username: "hpa_1", password: PW });
  await m.untilStarted(2);
  const second = a2.request({ type: "signup", username: "hpa_2", password: PW });
  expect(await a2.request({ type: "ping" })).toMatchObject({ type: "ok" }); // queued behind the first
  expect(await a3.request({ type: "login", username: "hpa_1", password: PW })).toMatchObject({
    type: "error",
    code: "rate_limited",
    message: "too many sign-ins at once from this address",
    retryAfterMs: 1000,
  });
  // Another address waits its turn in the queue, not refused.
  const other = b1.request({ type: "signup", username: "hpa_b", password: PW });
  expect(await b1.request({ type: "ping" })).toMatchObject({ type: "ok" });
  for (let n = 3; n <= 4; n++) {
    m.finishNext();
    await m.untilStarted(n);
  }
  m.finishNext();
  for (const r of [first, second, other]) expect(await r).toMatchObject({ type: "ok" });
  // Done hashing: the address may sign in again.
  const again = a3.request({ type: "login", username: "hpa_1", password: PW });
  await m.untilStarted(5);
  m.finishNext();
  expect(await again).toMatchObject({ type: "ok" });
});
