import { afterEach, describe, expect, test } from "bun:test";
import { signedIn, startApp, TestClock, type Frame, type TestApp, type TestSocket } from "../helpers.ts";

let t: TestApp;
afterEach(() => t?.stop());

const FAST = { SEND_RATE: 100_000, SEND_BURST: 100_000 };

async function member(room = "lobby") {
  const m = await signedIn(t);
  const r = await m.s.request({ type: "join", room });
  expect(r.type).toBe("ok");
  return m;
}

const seqs = (frames: Frame[]) => frames.map((f) => f.seq as number);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("join, leave, who", () => {
  test("join answers room, latest seq and members; joining again changes nothing", async () => {
    t = await startApp();
    const a = await member();
    await a.s.request({ type: "send", room: "lobby", body: "one" });
    const b = await signedIn(t);
    expect(await b.s.request({ type: "join", room: "lobby" })).toMatchObject({ type: "ok", room: "lobby", seq: 1, members: [a.name, b.name] });
    expect(await b.s.request({ type: "join", room: "lobby" })).toMatchObject({ type: "ok", seq: 1, members: [a.name, b.name] });
    await a.s.request({ type: "send", room: "lobby", body: "two" });
    const [m] = await b.s.messages("lobby", 1);
    expect(m!.seq).toBe(2);
    // Exactly one presence event for b's join, and no second copy of message 2.
    await a.s.request({ type: "ping" });
    await b.s.request({ type: "ping" });
    expect(a.s.unclaimed.filter((f) => f.type === "presence")).toEqual([{ type: "presence", room: "lobby", user: b.name, state: "join" }]);
    expect(b.s.unclaimed.filter((f) => f.type === "message")).toEqual([]);
  });

  test("joining again with since pushes nothing, and says recovered only when nothing was missed", async () => {
    t = await startApp();
    const a = await member();
    for (const body of ["one", "two", "three"]) await a.s.request({ type: "send", room: "lobby", body });
    await a.s.messages("lobby", 3);
    // Already receiving live: since 3 (the latest) missed nothing; since 1 is refused a
    // replay (it would deliver 2 and 3 twice), so the client is told to read history.
    expect(await a.s.request({ type: "join", room: "lobby", since: 3 })).toMatchObject({ type: "ok", seq: 3, recovered: true });
    expect(await a.s.request({ type: "join", room: "lobby", since: 1 })).toMatchObject({ type: "ok", seq: 3, recovered: false });
    expect(await a.s.request({ type: "join", room: "lobby", since: 9 })).toMatchObject({ type: "ok", seq: 3, recovered: false });
    await a.s.request({ type: "ping" });
    expect(a.s.unclaimed.filter((f) => f.type === "message")).toEqual([]);
  });

  test("a room exists once joined; who lists members each once; leave removes", async () => {
    t = await startApp();
    const a = await member("room-1");
    const second = await t.connect();
    await second.request({ type: "auth", token: a.token });
    await second.request({ type: "join", room: "room-1" });
    expect(await a.s.request({ type: "who", room: "room-1" })).toMatchObject({ members: [a.name] });
    expect(await a.s.request({ type: "who", room: "empty" })).toMatchObject({ type: "ok", members: [] });
    expect(await a.s.request({ type: "leave", room: "room-1" })).toMatchObject({ type: "ok" });
    expect(await a.s.request({ type: "who", room: "room-1" })).toMatchObject({ members: [a.name] });
    expect(await second.request({ type: "leave", room: "room-1" })).toMatchObject({ type: "ok" });
    expect(await a.s.request({ type: "who", room: "room-1" })).toMatchObject({ members: [] });
    expect(await a.s.request({ type: "leave", room: "never-joined" })).toMatchObject({ type: "ok" });
  });

  test("a join writes nothing: a room is stored with its first message, and found again after its members left", async () => {
    t = await startApp();
    const stored = () => t.store.client.query<{ name: string; latest_seq: number; created_at: number }, []>("SELECT name, latest_seq, created_at FROM rooms").all();
    const a = await signedIn(t);
    // Joining and leaving new names, past the rooms-per-connection limit: no row, no write.
    for (let i = 0; i < 150; i++) {
      expect(await a.s.request({ type: "join", room: `churn-${i}` })).toMatchObject({ type: "ok", seq: 0 });
      expect(await a.s.request({ type: "leave", room: `churn-${i}` })).toMatchObject({ type: "ok" });
    }
    expect(await a.s.request({ type: "join", room: "talk" })).toMatchObject({ type: "ok", seq: 0 });
    expect(stored()).toEqual([]);
    const roomsMetric = async () => /\nswitchboard_rooms (\d+)\n/.exec(await (await fetch(`${t.url}/metrics`)).text())?.[1];
    expect(await roomsMetric()).toBe("0");
    const sent = await a.s.request({ type: "send", room: "talk", body: "first" });
    expect(sent).toMatchObject({ type: "ok", seq: 1 });
    expect(stored()).toEqual([{ name: "talk", latest_seq: 1, created_at: Date.parse(sent.at as string) }]);
    // Counted as stored (kept in memory, not a count(*) per scrape), once.
    expect(await roomsMetric()).toBe("1");
    // Unloaded once nobody is in it; loaded again from its row.
    await a.s.request({ type: "leave", room: "talk" });
    expect(await a.s.request({ type: "join", room: "talk", since: 0 })).toMatchObject({ type: "ok", seq: 1, recovered: true });
    expect(await a.s.next((f) => f.type === "message")).toMatchObject({ seq: 1, body: "first" });
    expect(await a.s.request({ type: "send", room: "talk", body: "second" })).toMatchObject({ type: "ok", seq: 2 });
    expect(stored()).toEqual([{ name: "talk", latest_seq: 2, created_at: Date.parse(sent.at as string) }]);
    expect(await roomsMetric()).toBe("1");
  });

  test("room names: 1 and 64 chars of [a-z0-9_-] pass; 65, uppercase, a leading '-' fail", async () => {
    t = await startApp();
    const { s } = await signedIn(t);
    for (const ok of ["a", "0", "x".repeat(64), "a_b-c9"]) expect((await s.request({ type: "join", room: ok })).type).toBe("ok");
    for (const bad of ["", "x".repeat(65), "Lobby", "-a", "_a", "a b", "é"]) {
      const r = await s.request({ type: "join", room: bad });
      expect(r).toMatchObject({ code: "bad_request", issues: expect.arrayContaining([expect.objectContaining({ path: "room" })]) });
    }
  });

  test("every room request needs a signed-in connection; ping does not", async () => {
    t = await startApp();
    const s = await t.connect();
    for (const f of [
      { type: "join", room: "a" },
      { type: "leave", room: "a" },
      { type: "send", room: "a", body: "x" },
      { type: "history", room: "a" },
      { type: "who", room: "a" },
    ]) {
      expect(await s.request(f)).toMatchObject({ type: "error", code: "unauthorized" });
    }
    expect(await s.request({ type: "ping" })).toEqual({ type: "ok", ref: expect.any(String) });
  });
});

describe("presence", () => {
  test("first connection's join and last connection's leave or close; never about oneself", async () => {
    t = await startApp();
    const a = await member();
    const b = await member();
    expect(await a.s.next((f) => f.type === "presence")).toEqual({ type: "presence", room: "lobby", user: b.name, state: "join" });

    // b's second connection: no event; its leave: none either, b is still there.
    const b2 = await t.connect();
    await b2.request({ type: "auth", token: b.token });
    await b2.request({ type: "join", room: "lobby" });
    await b2.request({ type: "leave", room: "lobby" });
    // b's last connection closes: leave.
    await b.s.close();
    expect(await a.s.next((f) => f.type === "presence")).toEqual({ type: "presence", room: "lobby", user: b.name, state: "leave" });
    await a.s.request({ type: "ping" });
    expect(a.s.unclaimed.filter((f) => f.type === "presence")).toEqual([]);
    expect(b.s.frames.filter((f) => f.type === "presence" && f.user === b.name)).toEqual([]);
  });

  test("a graceful stop closes everyone with 1001 and tells nobody who left", async () => {
    t = await startApp();
    const members = [await member(), await member(), await member()];
    // Each hears of those who joined after it.
    for (const [i, m] of members.entries()) {
      for (let k = i + 1; k < members.length; k++) await m.s.next((f) => f.type === "presence" && f.user === members[k]!.name);
    }
    const closed = members.map((m) => m.s.closed);
    await t.app.shutdown();
    expect((await Promise.all(closed)).map((c) => c.code)).toEqual([1001, 1001, 1001]);
    for (const m of members) expect(m.s.unclaimed.filter((f) => f.type === "presence")).toEqual([]);
  });

  test("logout leaves the rooms", async () => {
    t = await startApp();
    const a = await member();
    const b = await member();
    await a.s.next((f) => f.type === "presence");
    await b.s.request({ type: "logout" });
    expect(await a.s.next((f) => f.type === "presence")).toMatchObject({ user: b.name, state: "leave" });
    expect(await a.s.request({ type: "who", room: "lobby" })).toMatchObject({ members: [a.name] });
  });
});

describe("send", () => {
  test("not_joined before join and after leave", async () => {
    t = await startApp();
    const { s } = await signedIn(t);
    expect(await s.request({ type: "send", room: "lobby", body: "x" })).toMatchObject({ code: "not_joined" });
    await s.request({ type: "join", room: "lobby" });
    await s.request({ type: "leave", room: "lobby" });
    expect(await s.request({ type: "send", room: "lobby", body: "x" })).toMatchObject({ code: "not_joined" });
  });

  test("body 1..4000 chars and nonce 1..64 chars, both sides", async () => {
    t = await startApp();
    const { s } = await member();
    const send = (body: string, nonce?: string) => s.request({ type: "send", room: "lobby", body, ...(nonce === undefined ? {} : { nonce }) });
    expect((await send("x")).type).toBe("ok");
    expect((await send("x".repeat(4000))).type).toBe("ok");
    expect((await send("😀".repeat(4000))).type).toBe("ok"); // 4000 code points, 8000 UTF-16 units
    expect(await send("😀".repeat(4001))).toMatchObject({ code: "bad_request", issues: [{ path: "body" }] });
    expect(await send("half \ud800")).toMatchObject({ code: "bad_request", issues: [{ path: "body" }] });
    expect(await send("")).toMatchObject({ code: "bad_request", issues: [{ path: "body" }] });
    expect(await send("x".repeat(4001))).toMatchObject({ code: "bad_request", issues: [{ path: "body" }] });
    expect((await send("y", "n")).type).toBe("ok");
    expect((await send("y", "n".repeat(64))).type).toBe("ok");
    expect(await send("y", "")).toMatchObject({ code: "bad_request", issues: [{ path: "nonce" }] });
    expect(await send("y", "n".repeat(65))).toMatchObject({ code: "bad_request", issues: [{ path: "nonce" }] });
    const history = await s.request({ type: "history", room: "lobby", limit: 100 });
    expect((history.messages as Frame[]).length).toBe(5);
  });

  test("every member, the sender included, gets the message with the reply's seq and at, and the nonce", async () => {
    t = await startApp();
    const a = await member();
    const b = await member();
    const ok = await a.s.request({ type: "send", room: "lobby", body: "hi", nonce: "c-17" });
    expect(ok).toEqual({ type: "ok", ref: ok.ref, seq: 1, at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) });
    const expected = { type: "message", room: "lobby", seq: 1, user: a.name, body: "hi", at: ok.at, nonce: "c-17" };
    expect((await a.s.messages("lobby", 1))[0]).toEqual(expected);
    expect((await b.s.messages("lobby", 1))[0]).toEqual(expected);
    const noNonce = await b.s.request({ type: "send", room: "lobby", body: "plain" });
    const [m] = await a.s.messages("lobby", 1);
    expect(m).toEqual({ type: "message", room: "lobby", seq: 2, user: b.name, body: "plain", at: noNonce.at });
  });

  test("a repeated nonce stores nothing, pushes nothing and answers the original seq and at, also from a new connection", async () => {
    t = await startApp();
    const a = await member();
    const b = await member();
    const first = await a.s.request({ type: "send", room: "lobby", body: "once", nonce: "n1" });
    const again = await a.s.request({ type: "send", room: "lobby", body: "once (retry)", nonce: "n1" });
    expect([again.seq, again.at]).toEqual([first.seq, first.at]);
    // Same nonce, same user, after a reconnect.
    const a2 = await t.connect();
    await a2.request({ type: "auth", token: a.token });
    await a2.request({ type: "join", room: "lobby" });
    const third = await a2.request({ type: "send", room: "lobby", body: "once (after reconnect)", nonce: "n1" });
    expect([third.seq, third.at]).toEqual([first.seq, first.at]);
    // The same nonce by another user, or in another room, is a different message.
    expect((await b.s.request({ type: "send", room: "lobby", body: "b's", nonce: "n1" })).seq).toBe(2);
    await a.s.request({ type: "join", room: "other" });
    expect((await a.s.request({ type: "send", room: "other", body: "elsewhere", nonce: "n1" })).seq).toBe(1);

    const received = await b.s.messages("lobby", 2);
    expect(received.map((m) => m.body)).toEqual(["once", "b's"]);
    const h = await b.s.request({ type: "history", room: "lobby" });
    expect((h.messages as Frame[]).map((m) => [m.seq, m.body])).toEqual([[1, "once"], [2, "b's"]]);
  });

  test("the same nonce twice in one burst (one group commit) stores one message", async () => {
    t = await startApp();
    const a = await member();
    a.s.sendRaw({ type: "send", ref: 1, room: "lobby", body: "x", nonce: "dup" });
    a.s.sendRaw({ type: "send", ref: 2, room: "lobby", body: "x", nonce: "dup" });
    const [r1, r2] = [await a.s.next((f) => f.ref === 1), await a.s.next((f) => f.ref === 2)];
    expect(r1).toMatchObject({ type: "ok", seq: 1 });
    expect(r2).toMatchObject({ type: "ok", seq: 1, at: r1!.at });
    expect(await a.s.request({ type: "history", room: "lobby" })).toMatchObject({ messages: [{ seq: 1 }], hasMore: false });
  });

  test("100 sends written back to back keep their order in seq, in delivery and in history", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    const b = await member();
    for (let i = 0; i < 100; i++) a.s.sendRaw({ type: "send", ref: i, room: "lobby", body: `m${i}` });
    const replies: Frame[] = [];
    for (let i = 0; i < 100; i++) replies.push(await a.s.next((f) => f.ref === i));
    expect(replies.map((r) => r.seq)).toEqual(range(1, 100));
    const delivered = await b.s.messages("lobby", 100);
    expect(delivered.map((m) => m.body)).toEqual(range(0, 99).map((i) => `m${i}`));
    expect(seqs(delivered)).toEqual(range(1, 100));
    const h = await b.s.request({ type: "history", room: "lobby", limit: 100 });
    expect((h.messages as Frame[]).map((m) => m.body)).toEqual(range(0, 99).map((i) => `m${i}`));
  });

  test("seqs stay gapless and ordered per room with several senders in several rooms", async () => {
    t = await startApp({ config: FAST });
    const senders = await Promise.all([member("r1"), member("r1"), member("r1")]);
    for (const s of senders) await s.s.request({ type: "join", room: "r2" });
    const watcher = await member("r1");
    await watcher.s.request({ type: "join", room: "r2" });
    for (let i = 0; i < 30; i++) for (const s of senders) s.s.sendRaw({ type: "send", room: i % 2 ? "r1" : "r2", body: `${i}` });
    expect(seqs(await watcher.s.messages("r1", 45))).toEqual(range(1, 45));
    expect(seqs(await watcher.s.messages("r2", 45))).toEqual(range(1, 45));
  });

  test("send rate: a burst of 40 passes, the 41st is rate_limited with retryAfterMs, refilled at 20/s", async () => {
    const clock = new TestClock();
    t = await startApp({ clock });
    const { s } = await member();
    for (let i = 0; i < 40; i++) s.sendRaw({ type: "send", ref: i, room: "lobby", body: `${i}` });
    for (let i = 0; i < 40; i++) expect(await s.next((f) => f.ref === i)).toMatchObject({ type: "ok" });
    const limited = await s.request({ type: "send", room: "lobby", body: "41st" });
    expect(limited).toMatchObject({ type: "error", code: "rate_limited", retryAfterMs: 50 });
    clock.advance(50);
    expect(await s.request({ type: "send", room: "lobby", body: "after 50 ms" })).toMatchObject({ type: "ok", seq: 41 });
    expect(await s.request({ type: "send", room: "lobby", body: "too soon" })).toMatchObject({ code: "rate_limited" });
    // Refused sends stored nothing.
    expect(await s.request({ type: "history", room: "lobby", limit: 1 })).toMatchObject({ messages: [{ seq: 41, body: "after 50 ms" }] });
  });
});

describe("history", () => {
  test("newest `limit` before `before`, ascending, with hasMore; default 50; limit 1..100", async () => {
    t = await startApp({ config: FAST });
    const { s } = await member();
    for (let i = 1; i <= 120; i++) s.sendRaw({ type: "send", room: "lobby", body: `m${i}` });
    await s.messages("lobby", 120);
    const page = async (f: Record<string, unknown>) => {
      const r = await s.request({ type: "history", room: "lobby", ...f });
      return { seqs: seqs(r.messages as Frame[]), hasMore: r.hasMore };
    };
    expect(await page({})).toEqual({ seqs: range(71, 120), hasMore: true });
    expect(await page({ limit: 100 })).toEqual({ seqs: range(21, 120), hasMore: true });
    expect(await page({ limit: 1 })).toEqual({ seqs: [120], hasMore: true });
    expect(await page({ before: 71 })).toEqual({ seqs: range(21, 70), hasMore: true });
    expect(await page({ before: 21 })).toEqual({ seqs: range(1, 20), hasMore: false });
    expect(await page({ before: 1 })).toEqual({ seqs: [], hasMore: false });
    expect(await page({ before: 0 })).toEqual({ seqs: [], hasMore: false });
    expect(await page({ before: 10_000 })).toEqual({ seqs: range(71, 120), hasMore: true });
    for (const bad of [{ limit: 0 }, { limit: 101 }, { before: -1 }, { before: 1.5 }, { limit: "5" }]) {
      expect(await s.request({ type: "history", room: "lobby", ...bad })).toMatchObject({ code: "bad_request" });
    }
    const one = await s.request({ type: "history", room: "lobby", limit: 1 });
    expect((one.messages as unknown[])[0]).toEqual({ room: "lobby", seq: 120, user: expect.any(String), body: "m120", at: expect.any(String) });
  });

  test("history of a room nobody joined is empty, and needs no join", async () => {
    t = await startApp();
    const { s } = await signedIn(t);
    expect(await s.request({ type: "history", room: "nowhere" })).toMatchObject({ type: "ok", messages: [], hasMore: false });
  });
});

describe("recovery", () => {
  async function seed(s: TestSocket, n: number, room = "lobby") {
    for (let i = 1; i <= n; i++) s.sendRaw({ type: "send", room, body: `m${i}` });
    await s.messages(room, n);
  }

  test("join with since answers ok first, then every missed message in order, then live ones", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    await seed(a.s, 10);
    const b = await signedIn(t);
    const reply = await b.s.request({ type: "join", room: "lobby", since: 4 });
    expect(reply).toMatchObject({ type: "ok", seq: 10, recovered: true });
    await a.s.request({ type: "send", room: "lobby", body: "live" });
    const got = await b.s.messages("lobby", 7);
    expect(seqs(got)).toEqual(range(5, 11));
    expect(got.at(-1)!.body).toBe("live");
    // The ok came before any replayed message.
    const idx = b.s.frames.findIndex((f) => f.ref === reply.ref);
    expect(b.s.frames.findIndex((f) => f.type === "message")).toBeGreaterThan(idx);
  });

  test("since equal to the latest seq recovers nothing and delivers live ones", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    await seed(a.s, 3);
    const b = await signedIn(t);
    expect(await b.s.request({ type: "join", room: "lobby", since: 3 })).toMatchObject({ seq: 3, recovered: true });
    await a.s.request({ type: "send", room: "lobby", body: "4" });
    expect(seqs(await b.s.messages("lobby", 1))).toEqual([4]);
  });

  test("exactly the recovery limit missed is recovered; one more gives recovered: false and pushes nothing", async () => {
    t = await startApp({ config: { ...FAST, RECOVERY_LIMIT: 5 } });
    const a = await member();
    await seed(a.s, 10);
    const b = await signedIn(t);
    expect(await b.s.request({ type: "join", room: "lobby", since: 5 })).toMatchObject({ recovered: true });
    expect(seqs(await b.s.messages("lobby", 5))).toEqual(range(6, 10));
    const c = await signedIn(t);
    expect(await c.s.request({ type: "join", room: "lobby", since: 4 })).toMatchObject({ seq: 10, recovered: false });
    await a.s.request({ type: "send", room: "lobby", body: "live" });
    expect(seqs(await c.s.messages("lobby", 1))).toEqual([11]);
  });

  test("since beyond the latest seq gives recovered: false; without since there is no recovered field", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    await seed(a.s, 2);
    const b = await signedIn(t);
    expect(await b.s.request({ type: "join", room: "lobby", since: 3 })).toMatchObject({ seq: 2, recovered: false });
    const c = await signedIn(t);
    const plain = await c.s.request({ type: "join", room: "lobby" });
    expect("recovered" in plain).toBe(false);
  });

  test("a large backlog (1000 messages of 3000 chars, past the 1 MiB send buffer) is paced, not a 1013", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    const body = "z".repeat(3000);
    for (let i = 0; i < 1000; i++) a.s.sendRaw({ type: "send", ref: i, room: "lobby", body });
    await a.s.next((f) => f.ref === 999, 20_000);
    const b = await signedIn(t);
    expect(await b.s.request({ type: "join", room: "lobby", since: 0 })).toMatchObject({ recovered: true, seq: 1000 });
    expect(seqs(await b.s.messages("lobby", 1000, 20_000))).toEqual(range(1, 1000));
  }, 30_000);

  /** Sends `n` messages of `body` in chunks, reading its own echoes as it goes (so it is never a slow consumer). */
  async function seedLarge(s: TestSocket, n: number, body: string, chunk = 40) {
    for (let i = 0; i < n; i += chunk) {
      const k = Math.min(chunk, n - i);
      for (let j = 0; j < k; j++) s.sendRaw({ type: "send", room: "lobby", body });
      await s.messages("lobby", k, 20_000);
    }
  }

  test("a paced catch-up (backlog past the buffer) while another connection keeps sending: no gap, no duplicate", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    // 1000 x 8000 bytes: more than loopback's kernel buffers take at once, so the replay must wait for drain.
    await seedLarge(a.s, 1000, "é".repeat(4000));
    const b = await signedIn(t);
    b.s.sendRaw({ type: "join", ref: "j", room: "lobby", since: 0 });
    // Live sends land while the replay is paused on a full buffer.
    for (let i = 0; i < 50; i++) a.s.sendRaw({ type: "send", ref: `live${i}`, room: "lobby", body: `live ${i}` });
    await a.s.next((f) => f.ref === "live49", 20_000);
    const got = await b.s.messages("lobby", 1050, 20_000);
    expect(seqs(got)).toEqual(range(1, 1050));
    await b.s.request({ type: "ping" });
    expect(b.s.unclaimed.filter((f) => f.type === "message")).toEqual([]);
  }, 30_000);

  test("a member still catching up hears presence too (it is not subscribed yet), once, in order", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    await seedLarge(a.s, 1000, "é".repeat(4000));
    const b = await signedIn(t);
    const c = await signedIn(t);
    // b's replay of 8 MB waits for drain; meanwhile c comes and goes.
    expect(await b.s.request({ type: "join", room: "lobby", since: 0 })).toMatchObject({ recovered: true, seq: 1000 });
    await c.s.request({ type: "join", room: "lobby" });
    await c.s.close();
    const expected = [
      { type: "presence", room: "lobby", user: c.name, state: "join" },
      { type: "presence", room: "lobby", user: c.name, state: "leave" },
    ];
    expect([await b.s.next((f) => f.type === "presence", 20_000), await b.s.next((f) => f.type === "presence", 20_000)]).toEqual(expected);
    // a, subscribed all along, by the room's publish.
    expect(await a.s.next((f) => f.type === "presence" && f.user === b.name)).toMatchObject({ state: "join" });
    expect([await a.s.next((f) => f.type === "presence"), await a.s.next((f) => f.type === "presence")]).toEqual(expected);
    expect(seqs(await b.s.messages("lobby", 1000, 20_000))).toEqual(range(1, 1000));
    await b.s.request({ type: "ping" });
    expect(b.s.unclaimed.filter((f) => f.type === "presence")).toEqual([]);
  }, 30_000);

  test("a catch-up of bodies that escape to 24 KB each is paced within a page, not closed with 1013", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    const body = "\u0001".repeat(4000);
    await seedLarge(a.s, 300, body, 20);
    const b = await signedIn(t);
    expect(await b.s.request({ type: "join", room: "lobby", since: 0 })).toMatchObject({ recovered: true });
    expect(seqs(await b.s.messages("lobby", 300, 20_000))).toEqual(range(1, 300));
    expect(await b.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  }, 30_000);

  test("a history page of huge bodies is cut short to fit the send buffer, with hasMore", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    await seedLarge(a.s, 100, "\u0001".repeat(4000), 20);
    const h = await a.s.request({ type: "history", room: "lobby", limit: 100 });
    const got = seqs(h.messages as Frame[]);
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(100);
    expect(got).toEqual(range(101 - got.length, 100));
    expect(h.hasMore).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(h))).toBeLessThanOrEqual(512 * 1024);
    // Small bodies: the whole page.
    await seedLarge(a.s, 100, "small", 50);
    expect(seqs((await a.s.request({ type: "history", room: "lobby", limit: 100 })).messages as Frame[])).toEqual(range(101, 200));
  }, 30_000);

  test("race: joins with since while another connection keeps sending see no gap and no duplicate", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    const b = await signedIn(t);
    let sent = 0;
    let sending = true;
    const sender = (async () => {
      while (sending) {
        for (let i = 0; i < 5; i++) a.s.sendRaw({ type: "send", room: "lobby", body: `m${++sent}` });
        await a.s.request({ type: "ping" });
      }
    })();
    let lastSeen = 0;
    for (let round = 0; round < 40; round++) {
      const r = await b.s.request({ type: "join", room: "lobby", since: lastSeen });
      expect(r.recovered).toBe(true);
      // Read past the latest seq at join time, so live delivery is covered too.
      const target = (r.seq as number) + 3;
      const got = await b.s.messages("lobby", target - lastSeen);
      expect(seqs(got)).toEqual(range(lastSeen + 1, target));
      await b.s.request({ type: "leave", room: "lobby" });
      // Drop whatever was in flight before the leave took effect.
      while (b.s.unclaimed.length > 0) b.s.unclaimed.pop();
      lastSeen = target;
    }
    sending = false;
    await sender;
    expect(lastSeen).toBeGreaterThan(100);
  }, 30_000);
});

describe("signing in again on a connection", () => {
  test("as the same user keeps the rooms; as another user leaves them", async () => {
    t = await startApp();
    const a = await member();
    const watcher = await member();
    await a.s.next((f) => f.type === "presence" && f.user === watcher.name);
    // Same user, by token: still a member, no presence event.
    expect(await a.s.request({ type: "auth", token: a.token })).toMatchObject({ type: "ok" });
    expect(await a.s.request({ type: "send", room: "lobby", body: "still here" })).toMatchObject({ type: "ok" });
    // Another user: a leaves, and the connection is no longer in the room.
    const other = await signedIn(t);
    expect(await a.s.request({ type: "auth", token: other.token })).toMatchObject({ type: "ok", user: { username: other.name } });
    expect(await watcher.s.next((f) => f.type === "presence")).toEqual({ type: "presence", room: "lobby", user: a.name, state: "leave" });
    expect(await a.s.request({ type: "send", room: "lobby", body: "x" })).toMatchObject({ code: "not_joined" });
    // The old session no longer holds this socket: revoking it closes nothing here.
    const elsewhere = await t.connect();
    await elsewhere.request({ type: "auth", token: a.token });
    await elsewhere.request({ type: "logout" });
    expect(await a.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  });
});

describe("write failures", () => {
  test("a send the database refuses is answered internal; the others in its group commit are stored, gapless", async () => {
    t = await startApp({ config: FAST });
    t.store.client.run(
      "CREATE TRIGGER refuse_boom BEFORE INSERT ON messages WHEN NEW.body = 'boom' BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END",
    );
    const a = await member();
    for (const [ref, body] of [[1, "first"], [2, "boom"], [3, "second"]] as const) {
      a.s.sendRaw({ type: "send", ref, room: "lobby", body });
    }
    const [r1, r2, r3] = [await a.s.next((f) => f.ref === 1), await a.s.next((f) => f.ref === 2), await a.s.next((f) => f.ref === 3)];
    expect(r1).toMatchObject({ type: "ok", seq: 1 });
    expect(r2).toEqual({ type: "error", ref: 2, code: "internal", message: "internal error" });
    expect(r3).toMatchObject({ type: "ok", seq: 2 });
    expect(seqs(await a.s.messages("lobby", 2))).toEqual([1, 2]);
    const h = await a.s.request({ type: "history", room: "lobby" });
    expect((h.messages as Frame[]).map((m) => [m.seq, m.body])).toEqual([[1, "first"], [2, "second"]]);
  });

  test("a socket that closes with sends queued: they are still committed, and nothing breaks", async () => {
    t = await startApp({ config: FAST });
    const a = await member();
    for (let i = 0; i < 20; i++) a.s.sendRaw({ type: "send", room: "lobby", body: `m${i}` });
    await a.s.close();
    const b = await member();
    const h = await b.s.request({ type: "history", room: "lobby" });
    expect((h.messages as Frame[]).map((m) => m.body)).toEqual(range(0, 19).map((i) => `m${i}`));
  });
});
