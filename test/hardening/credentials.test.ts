import { afterEach, expect, test } from "bun:test";
import { RawWs } from "../../bench/lib/raw-ws.ts";
import { signedIn, startApp, type TestApp } from "../helpers.ts";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

const without = (f: Record<string, unknown>, key: string) => Object.fromEntries(Object.entries(f).filter(([k]) => k !== key));

test("unknown user and wrong password get identical replies (same code, message, fields)", async () => {
  t = await startApp();
  const { name } = await signedIn(t, "alice_creds");
  const s = await t.connect();
  const unknown = await s.request({ type: "login", ref: "u", username: "nobody_here", password: "correct horse battery" });
  const wrong = await s.request({ type: "login", ref: "w", username: name, password: "wrong horse battery" });
  const wrongCase = await s.request({ type: "login", ref: "c", username: name.toUpperCase(), password: "wrong horse battery" });
  const malformed = await s.request({ type: "login", ref: "m", username: "x", password: "wrong horse battery" });
  expect(unknown).toMatchObject({ type: "error", code: "invalid_credentials" });
  for (const r of [wrong, wrongCase, malformed]) expect(without(r, "ref")).toEqual(without(unknown, "ref"));
  // The other side: the right password signs in.
  expect(await s.request({ type: "login", username: name, password: "correct horse battery" })).toMatchObject({ type: "ok", user: { username: name } });
  // A failed login leaves the connection signed out.
  const other = await t.connect();
  await other.request({ type: "login", username: name, password: "nope nope nope" });
  expect(await other.request({ type: "join", room: "lobby" })).toMatchObject({ type: "error", code: "unauthorized" });
});

test("failed sign-ins per username: the limit-th failure is still invalid_credentials, then rate_limited even with the right password", async () => {
  t = await startApp({ config: { SIGNIN_FAILS_PER_USER: 3, SIGNIN_FAILS_PER_ADDRESS: 1000 } });
  const { name } = await signedIn(t, "bob_limits");
  const s = await t.connect();
  for (let i = 0; i < 3; i++) {
    expect(await s.request({ type: "login", username: name, password: `wrong ${i} password` })).toMatchObject({ code: "invalid_credentials" });
  }
  const limited = await s.request({ type: "login", username: name.toUpperCase(), password: "correct horse battery" });
  expect(limited).toMatchObject({ type: "error", code: "rate_limited" });
  expect(limited.retryAfterMs).toBeGreaterThan(0);
  // Another name from the same address is not affected by this name's counter.
  const { name: other } = await signedIn(t, "carol_limits");
  expect(await s.request({ type: "login", username: other, password: "correct horse battery" })).toMatchObject({ type: "ok" });
});

test("failed sign-ins per address: limit failures pass through, the next is rate_limited; unknown names count too", async () => {
  t = await startApp({ config: { SIGNIN_FAILS_PER_ADDRESS: 4, SIGNIN_FAILS_PER_USER: 1000 } });
  const { name } = await signedIn(t, "dave_addr");
  const s = await t.connect();
  for (let i = 0; i < 4; i++) {
    expect(await s.request({ type: "login", username: `ghost${i}`, password: "whatever123" })).toMatchObject({ code: "invalid_credentials" });
  }
  // A new connection from the same address shares the counter.
  const s2 = await RawWs.open(t.port);
  s2.text({ type: "login", ref: 1, username: name, password: "correct horse battery" });
  expect(await s2.reply(1)).toMatchObject({ type: "error", code: "rate_limited" });
  s2.destroy();
});

test("no secret reaches a reply: tokens and password hashes never appear in error frames", async () => {
  t = await startApp();
  const { s, token } = await signedIn(t, "erin_secret");
  const hash = (t.store.client.query("SELECT password_hash AS h FROM users WHERE username = 'erin_secret'").get() as { h: string }).h;
  expect(hash.startsWith("$argon2id$v=19$m=19456,t=2,p=1$")).toBe(true);
  const stored = (t.store.client.query("SELECT token_hash AS h FROM sessions").get() as { h: string }).h;
  expect(stored).not.toBe(token);
  expect(stored).toMatch(/^[0-9a-f]{64}$/);
  expect(Buffer.from(token, "base64url").length).toBeGreaterThanOrEqual(32);
  await s.request({ type: "auth", token: token + "x" });
  await s.request({ type: "signup", username: "erin_secret", password: "correct horse battery" });
  for (const f of s.frames) {
    const text = JSON.stringify(f);
    if (f.type === "error") {
      expect(text).not.toContain(token.slice(0, 20));
      expect(text).not.toContain(hash.slice(0, 30));
      expect(text).not.toMatch(/SQLITE|SELECT|INSERT|at .*\.ts/);
    }
  }
});
