/**
 * Reconnection, recovery and the outbox against a real server: every message delivered
 * to the application exactly once and in seq order, every send stored exactly once.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { createClient, memoryStore, type SwitchboardClient } from "../../src/client/index.ts";
import { startTestServer, type TestServer } from "../../src/testing.ts";
import { startProxy, type Proxy } from "./proxy.ts";
import { collect, failure, fast, range, tempDir } from "./util.ts";

let t: TestServer;
let proxy: Proxy | undefined;
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  await proxy?.stop();
  proxy = undefined;
  await t?.stop();
});

const PASSWORD = "correct horse battery";

/** A user signed up directly on the server, and a client of the same user through the proxy. */
async function viaProxy(room: string, extra: Parameters<TestServer["client"]>[0] = {}) {
  proxy = startProxy(t.wsUrl);
  const { token, username } = await t.signedIn(fast);
  const client = await t.client({ ...fast, ...extra, url: proxy.wsUrl, token });
  await client.join({ room });
  return { client, token, username };
}

/** Cuts `a`'s connection with the proxy refusing new ones, and resolves once `a` is reconnecting. */
async function cutAndRefuse(a: SwitchboardClient) {
  proxy!.refuse = true;
  const reconnecting = a.next("reconnecting");
  proxy!.cut();
  await reconnecting;
}

/** Asserts that `seqs` is exactly 1..n. */
function expectGapless(seqs: number[], n: number) {
  expect(seqs).toEqual(range(n));
}

test("network loss (1006) with sends unanswered: retried with the same nonce, stored once", async () => {
  t = await startTestServer();
  const { client: a } = await viaProxy("talk");
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  const gotA = collect(a);
  const gotB = collect(b);

  proxy!.dropReplies = true; // the server stores the sends, but a never hears back
  const sends = ["m1", "m2", "m3"].map((body) => a.send({ room: "talk", body }));
  // One send is in flight at a time (so that a refusal cannot reorder them): m1 is stored.
  await gotB.waitFor(1);
  expect(a.outbox.map((e) => e.body)).toEqual(["m1", "m2", "m3"]);
  const reconnecting = a.next("reconnecting");
  proxy!.cut();
  expect((await reconnecting).code).toBe(1006);
  proxy!.dropReplies = false;

  const results = await Promise.all(sends);
  expect(results.map((r) => r.seq)).toEqual([1, 2, 3]);
  // The ok does not wait for the message events (DELIVERY_INTERVAL_MS).
  await gotB.waitFor(3);
  expect(results.map((r) => r.at)).toEqual(gotB.messages.map((m) => m.at));
  await gotA.waitFor(3);
  expectGapless(gotA.seqs(), 3);
  expect(gotA.bodies()).toEqual(["m1", "m2", "m3"]);
  expect(t.app.metrics.messagesDeduplicated).toBe(1);
  expect((await b.history({ room: "talk" })).messages.map((m) => m.body)).toEqual(["m1", "m2", "m3"]);
  // The retries pushed no second event to anyone.
  await b.send({ room: "talk", body: "after" });
  await gotB.waitFor(4);
  expect(gotB.bodies()).toEqual(["m1", "m2", "m3", "after"]);
  expect(a.outbox).toEqual([]);
});

test("a server restarted mid-conversation on the same file and port: both sides' messages once, in order", async () => {
  const dir = tempDir();
  cleanups.push(dir.remove);
  t = await startTestServer({ dbPath: join(dir.path, "switchboard.db") });
  const ada = await t.signedIn(fast);
  const bob = await t.signedIn(fast);
  const [a, b] = [ada.client, bob.client];
  await a.join({ room: "talk" });
  await b.join({ room: "talk" });
  const gotA = collect(a);
  const gotB = collect(b);
  const sends: Array<Promise<{ seq: number }>> = [];
  const say = (c: SwitchboardClient, body: string) => sends.push(c.send({ room: "talk", body }));

  for (const i of range(5)) {
    say(a, `a${i}`);
    say(b, `b${i}`);
  }
  // Restart while those sends are in flight: some are answered, some cut off.
  const reconnecting = Promise.all([a.next("reconnecting"), b.next("reconnecting")]);
  const restarted = t.restart();
  expect((await reconnecting).map((e) => e.code)).toEqual([1001, 1001]);
  // Sent while the server is down: queued in the outbox.
  for (const i of range(3, 6)) {
    say(a, `a${i}`);
    say(b, `b${i}`);
  }
  t = await restarted;

  const seqs = (await Promise.all(sends)).map((r) => r.seq);
  expect(new Set(seqs).size).toBe(16);
  await gotA.waitFor(16);
  await gotB.waitFor(16);
  for (const got of [gotA, gotB]) {
    expectGapless(got.seqs(), 16);
    expect(got.bodies().filter((x) => x.startsWith("a"))).toEqual(range(8).map((i) => `a${i}`));
    expect(got.bodies().filter((x) => x.startsWith("b"))).toEqual(range(8).map((i) => `b${i}`));
  }
  expect(gotA.messages).toEqual(gotB.messages);
  // And the database agrees: 16 rows, each body once.
  const { messages } = await a.history({ room: "talk", limit: 100 });
  expect(messages.map((m) => m.body)).toEqual(gotA.bodies());
  expect(a.state).toBe("open");
});

test("close 1013 (slow consumer): reconnect and recover the missed messages, no duplicate", async () => {
  t = await startTestServer();
  const { client: a } = await viaProxy("talk");
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  const gotA = collect(a);
  for (const i of range(3)) await b.send({ room: "talk", body: `b${i}` });
  await gotA.waitFor(3);
  proxy!.dropReplies = true; // a falls behind: these never reach it on this connection
  for (const i of range(3, 4)) await b.send({ room: "talk", body: `b${i}` });
  const reconnecting = a.next("reconnecting");
  proxy!.closeAll(1013, "slow consumer: send buffer full");
  expect(await reconnecting).toMatchObject({ code: 1013, attempt: 1 });
  proxy!.dropReplies = false;
  await a.next("open");
  await b.send({ room: "talk", body: "b7" });
  await gotA.waitFor(7);
  expectGapless(gotA.seqs(), 7);
  expect(gotA.bodies()).toEqual(range(7).map((i) => `b${i}`));
});

test("too many missed for recovery (recovered: false): history is paged in, live messages held until the gap closes", async () => {
  t = await startTestServer({ config: { RECOVERY_LIMIT: 3 } });
  const { client: a } = await viaProxy("talk", { historyPageSize: 2 });
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  const gotA = collect(a);
  await b.send({ room: "talk", body: "1" });
  await b.send({ room: "talk", body: "2" });
  await gotA.waitFor(2);

  await cutAndRefuse(a);
  for (const i of range(10, 3)) await b.send({ room: "talk", body: String(i) });
  // As soon as a has re-joined (before its history reads), b keeps talking.
  const live: Array<Promise<unknown>> = [];
  a.on("joined", (j) => {
    expect(j).toMatchObject({ rejoin: true, recovered: false, seq: 12 });
    for (const i of range(8, 13)) live.push(b.send({ room: "talk", body: String(i) }));
  });
  const historyBefore = t.app.metrics.requests.get("history") ?? 0;
  proxy!.refuse = false;
  await gotA.waitFor(20);
  await Promise.all(live);
  expectGapless(gotA.seqs(), 20);
  expect(gotA.bodies()).toEqual(range(20).map(String));
  // 10 missed, 2 per page.
  expect((t.app.metrics.requests.get("history") ?? 0) - historyBefore).toBe(5);
  expect(a.lastSeq("talk")).toBe(20);
});

test("sends made while disconnected wait in the outbox and are delivered once, in order, after the re-join", async () => {
  t = await startTestServer();
  const { client: a } = await viaProxy("talk");
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  const gotB = collect(b);
  await cutAndRefuse(a);
  expect(a.state).toBe("reconnecting");
  const sends = range(5).map((i) => a.send({ room: "talk", body: `x${i}` }));
  expect(a.outbox.map((e) => e.body)).toEqual(range(5).map((i) => `x${i}`));
  // A request other than send waits for the connection too.
  const who = a.who({ room: "talk" });
  await a.next("reconnecting", (e) => e.attempt === 2); // one attempt was refused
  proxy!.refuse = false;
  expect((await Promise.all(sends)).map((r) => r.seq)).toEqual(range(5));
  expect((await who).members.sort()).toEqual([a.user!.username, b.user!.username].sort());
  await gotB.waitFor(5);
  expect(gotB.bodies()).toEqual(range(5).map((i) => `x${i}`));
  expect(t.app.metrics.messagesStored).toBe(5);
  expect(proxy!.refused).toBeGreaterThan(0);
});

test("after a reconnect, queued sends are stored in the order they were made across rooms too, whichever room is re-joined first", async () => {
  t = await startTestServer();
  // Rooms are re-joined in the order followed (first, then second): the oldest sends go to the last one.
  const { client: a } = await viaProxy("first");
  await a.join({ room: "second" });
  await cutAndRefuse(a);
  const order = ["second:0", "first:1", "second:2", "first:3", "first:4", "second:5"];
  const sends = order.map((tag) => a.send({ room: tag.split(":")[0]!, body: tag }));
  proxy!.refuse = false;
  await Promise.all(sends);
  const stored = t.store.client.query<{ body: string }, []>("SELECT body FROM messages ORDER BY id").all();
  expect(stored.map((r) => r.body)).toEqual(order);
});

test("a client made later with the same store and token (a page reload) sends the outbox and resumes the room", async () => {
  t = await startTestServer();
  proxy = startProxy(t.wsUrl);
  const store = memoryStore();
  const { token, username } = await t.signedIn(fast);
  const first = await t.client({ ...fast, url: proxy.wsUrl, token, store });
  await first.join({ room: "talk" });
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  const gotFirst = collect(first);
  await b.send({ room: "talk", body: "before" });
  await gotFirst.waitFor(1);

  proxy.dropRequests = true; // written, never arrives
  const lost = failure(first.send({ room: "talk", body: "queued" }));
  first.close();
  expect((await lost).code).toBe("closed");
  expect(store.state?.outbox.map((e) => e.body)).toEqual(["queued"]);
  expect(store.state?.seqs).toEqual({ talk: 1 });
  await b.send({ room: "talk", body: "while away" });

  const second = createClient({ url: t.wsUrl, ...fast, token, store });
  cleanups.push(() => second.close());
  const gotSecond = collect(second);
  await gotSecond.waitFor(2);
  expect(second.user?.username).toBe(username);
  expect(second.rooms).toEqual(["talk"]);
  expect(gotSecond.bodies()).toEqual(["while away", "queued"]);
  expectGapless(gotSecond.seqs().map((s) => s - 1), 2);
  if (second.outbox.length > 0) await second.next("outbox", (e) => e.pending.length === 0);
  expect(second.outbox).toEqual([]);
  expect(store.state?.outbox).toEqual([]);
  expect(store.state?.seqs).toEqual({ talk: 3 });
});

test("close 4001 (session revoked) means signed-out: no reconnect loop; signing in again resumes the room", async () => {
  t = await startTestServer();
  const { client: a, username } = await viaProxy("talk", { random: () => 0 });
  const gotA = collect(a);
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  const again = await t.client(fast);
  await again.login({ username, password: PASSWORD });

  const signedOut = a.next("signed-out");
  const states: string[] = [];
  a.on("state", (s) => states.push(s.state));
  await again.logout({ all: true });
  expect(again.state).toBe("signed-out");
  expect(await signedOut).toEqual({ reason: "revoked" });
  expect(a.state).toBe("signed-out");
  expect(a.token).toBeNull();
  expect((await failure(a.who({ room: "talk" }))).code).toBe("signed_out");
  expect((await failure(a.send({ room: "talk", body: "x" }))).code).toBe("signed_out");
  await b.send({ room: "talk", body: "missed while signed out" });
  // With a zero backoff a reconnect would come at once; give it a few event-loop turns.
  await Bun.sleep(50);
  expect(proxy!.connections).toBe(1);
  expect(states).toEqual(["signed-out"]);

  await a.login({ username, password: PASSWORD });
  await gotA.waitFor(1);
  expect(gotA.bodies()).toEqual(["missed while signed out"]);
  expect(a.state).toBe("open");
  expect(proxy!.connections).toBe(2);
});

test("a token refused on reconnect (unauthorized) means signed-out, not a retry loop", async () => {
  t = await startTestServer();
  const { client: a, username } = await viaProxy("talk", { random: () => 0 });
  await cutAndRefuse(a);
  // The session is revoked while a is away, so no 4001 reaches it.
  const other = await t.client(fast);
  await other.login({ username, password: PASSWORD });
  await other.logout({ all: true });
  const signedOut = a.next("signed-out");
  proxy!.refuse = false;
  expect(await signedOut).toEqual({ reason: "unauthorized" });
  expect(a.state).toBe("signed-out");
  const connections = proxy!.connections;
  await Bun.sleep(50);
  expect(proxy!.connections).toBe(connections);
});

test("close() while reconnecting stops for good; backoff ceilings double up to maxMs", async () => {
  t = await startTestServer();
  const { client: a } = await viaProxy("talk", { backoff: { minMs: 2, maxMs: 8 }, random: () => 0.999 });
  const delays: number[] = [];
  a.on("reconnecting", (e) => delays.push(e.delayMs));
  proxy!.refuse = true;
  const fifth = a.next("reconnecting", (e) => e.attempt === 5);
  proxy!.cut();
  await fifth;
  expect(delays).toEqual([1, 3, 7, 7, 7]);
  const closed = a.next("closed");
  a.close();
  await closed;
  const refused = proxy!.refused;
  proxy!.refuse = false;
  await Bun.sleep(50);
  expect(proxy!.refused).toBe(refused);
  expect(proxy!.connections).toBe(1);
  expect(a.state).toBe("closed");
});

test("rate-limited sends are retried after retryAfterMs without losing their order", async () => {
  t = await startTestServer({ config: { SEND_BURST: 2, SEND_RATE: 200 } });
  const { client: a } = await t.signedIn(fast);
  await a.join({ room: "talk" });
  const got = collect(a);
  const results = await Promise.all(range(8).map((i) => a.send({ room: "talk", body: `r${i}` })));
  expect(results.map((r) => r.seq)).toEqual(range(8));
  await got.waitFor(8);
  expect(got.bodies()).toEqual(range(8).map((i) => `r${i}`));
  expect(t.app.metrics.errors.get("rate_limited")).toBeGreaterThan(0);
});

test("joins refused by the request budget (many rooms at once, after a reconnect too) are retried: no room is dropped", async () => {
  // A request bucket of 20 at 50 a second (the least the send limits allow).
  t = await startTestServer({ config: { SEND_RATE: 5, SEND_BURST: 10, REQUEST_RATE: 50, REQUEST_BURST: 20 } });
  const rooms = range(30).map((i) => `r${i - 1}`); // r0..r29
  const { client: a } = await viaProxy("r0");
  const errors: string[] = [];
  a.on("error", (e) => errors.push(e.code));
  const joined = await Promise.all(rooms.slice(1).map((room) => a.join({ room })));
  expect(joined.map((j) => j.room)).toEqual(rooms.slice(1));
  expect(t.app.metrics.errors.get("rate_limited")).toBeGreaterThan(0);
  const refusedFirst = t.app.metrics.errors.get("rate_limited")!;

  await cutAndRefuse(a);
  const { client: b } = await t.signedIn(fast);
  for (const room of ["r3", "r17", "r29"]) {
    await b.join({ room });
    await b.send({ room, body: `missed in ${room}` });
  }
  const got = collect(a);
  const reopened = a.next("open");
  proxy!.refuse = false;
  await reopened;
  await got.waitFor(3);
  expect(got.bodies().sort()).toEqual(["missed in r17", "missed in r29", "missed in r3"]);
  // 30 re-joins with since, past the burst: some were refused, and each was asked again.
  expect(t.app.metrics.errors.get("rate_limited")!).toBeGreaterThan(refusedFirst);
  expect(a.rooms.sort()).toEqual([...rooms].sort());
  expect(errors).toEqual([]);
});

test("leave stops delivery and drops the room's unsent messages", async () => {
  t = await startTestServer();
  const { client: a } = await viaProxy("talk");
  await cutAndRefuse(a);
  const pending = failure(a.send({ room: "talk", body: "never" }));
  const left = a.leave({ room: "talk" });
  expect((await pending).code).toBe("not_joined");
  expect(a.rooms).toEqual([]);
  expect(a.outbox).toEqual([]);
  proxy!.refuse = false;
  await left;
  expect((await a.history({ room: "talk" })).messages).toEqual([]);
});

test("leave with a send already written: the server's answer settles it; the sends behind it are dropped", async () => {
  t = await startTestServer();
  const { client: a } = await t.signedIn(fast);
  await a.join({ room: "talk" });
  // One send is written at a time: "one" is on the wire, "two" waits in the outbox.
  const one = a.send({ room: "talk", body: "one" });
  const two = failure(a.send({ room: "talk", body: "two" }));
  await a.leave({ room: "talk" });
  expect((await one).seq).toBe(1);
  expect((await two).code).toBe("not_joined");
  expect(a.outbox).toEqual([]);
  expect((await a.history({ room: "talk" })).messages.map((m) => m.body)).toEqual(["one"]);
});

test("leave with sends refused by the rate limit (waiting to retry, or answered after the leave): not_joined, never stored", async () => {
  // One send every 10 s: the second is refused and waits, the third is never written.
  t = await startTestServer({ config: { SEND_BURST: 1, SEND_RATE: 0.1 } });
  const { client: a } = await t.signedIn(fast);
  await a.join({ room: "talk" });
  const one = a.send({ room: "talk", body: "one" });
  const two = failure(a.send({ room: "talk", body: "two" }));
  await one;
  // "two" is on the wire now; leaving before its answer (rate_limited) comes.
  await a.leave({ room: "talk" });
  const err = await two;
  expect(err.code).toBe("not_joined");
  expect(t.app.metrics.errors.get("rate_limited")).toBe(1);

  // Again, with the refused send already waiting out its retryAfterMs when the room is left.
  await a.join({ room: "talk" });
  const three = failure(a.send({ room: "talk", body: "three" }));
  for (let i = 0; i < 200 && t.app.metrics.errors.get("rate_limited") !== 2; i++) await Bun.sleep(5);
  await a.ping(); // its answer follows the refusal on the socket: the client has read both
  await a.leave({ room: "talk" });
  // Answered on the connection it was written on, and never written before: not stored.
  expect((await three).code).toBe("not_joined");
  expect((await a.history({ room: "talk" })).messages.map((m) => m.body)).toEqual(["one"]);
  expect(a.outbox).toEqual([]);
});

/**
 * `a` (through the proxy) sends `body` to "talk" with the proxy dropping replies, and
 * this resolves once an observer in the room has received it: stored, never answered.
 */
async function storedUnanswered(body: string) {
  const { client: a } = await viaProxy("talk");
  const { client: b } = await t.signedIn(fast);
  await b.join({ room: "talk" });
  proxy!.dropReplies = true;
  const stored = b.next("message", (m) => m.body === body);
  const send = failure(a.send({ room: "talk", body }));
  await stored;
  return { a, send };
}

test("leave with a send written and unanswered when the connection drops: disconnected, and not sent again", async () => {
  t = await startTestServer();
  const { a, send: one } = await storedUnanswered("one");
  const left = failure(a.leave({ room: "talk" }));
  const reconnected = a.next("open");
  proxy!.dropReplies = false;
  proxy!.cut();
  // It reached the server, but its room was left: the client cannot retry it, nor know.
  expect((await one).code).toBe("disconnected");
  expect((await left).code).toBe("disconnected");
  await reconnected;
  expect(a.outbox).toEqual([]);
  await a.ping();
  expect((await a.history({ room: "talk" })).messages.map((m) => m.body)).toEqual(["one"]);
});

test("leave while disconnected: a send written before the drop rejects with disconnected (it was stored), one never written with not_joined", async () => {
  t = await startTestServer();
  const { a, send: written } = await storedUnanswered("written");
  await cutAndRefuse(a);
  const never = failure(a.send({ room: "talk", body: "never written" }));
  const left = a.leave({ room: "talk" });
  expect((await written).code).toBe("disconnected");
  expect((await never).code).toBe("not_joined");
  expect(a.outbox).toEqual([]);
  proxy!.dropReplies = false;
  proxy!.refuse = false;
  await left;
  expect((await a.history({ room: "talk" })).messages.map((m) => m.body)).toEqual(["written"]);
});


test("a join made while the client is still signing in is a first join (rejoin: false); after a reconnect, rejoin: true", async () => {
  t = await startTestServer();
  proxy = startProxy(t.wsUrl);
  const { token } = await t.signedIn(fast);
  // With a token, the client signs in with `auth` and re-joins its rooms before it is open:
  // a join asked meanwhile goes out with those.
  const a = createClient({ ...fast, url: proxy.wsUrl, token });
  cleanups.push(() => a.close());
  const joined: Array<{ room: string; rejoin: boolean }> = [];
  a.on("joined", ({ room, rejoin }) => joined.push({ room, rejoin }));
  expect(a.state).not.toBe("open");
  await a.join({ room: "first" });
  expect(joined).toEqual([{ room: "first", rejoin: false }]);
  const again = a.next("joined");
  proxy.cut();
  expect(await again).toMatchObject({ room: "first", rejoin: true });
  expect(joined).toEqual([{ room: "first", rejoin: false }, { room: "first", rejoin: true }]);
});

test("a sign-in refused rate_limited at the server's MAX_CONNECTIONS_PER_USER: an error event, then retried with backoff until the user has room", async () => {
  t = await startTestServer({ config: { MAX_CONNECTIONS_PER_USER: 1 } });
  const { client: holder, token } = await t.signedIn(fast);
  const b = createClient({ url: t.wsUrl, ...fast, token });
  cleanups.push(() => b.close());
  const refused = await b.next("error");
  expect(refused).toMatchObject({ code: "rate_limited", retryAfterMs: 5000 });
  // Not signed out: the token is good, only the server is full for this user.
  await b.next("reconnecting");
  expect(b.state).toBe("reconnecting");
  const opened = b.next("open");
  holder.close();
  await opened;
  await b.join({ room: "capped" });
  expect(await b.send({ room: "capped", body: "in" })).toMatchObject({ seq: 1 });
});

test("logout while the connection is down signs out here at once (disconnected: the server was not told); the session stays valid", async () => {
  t = await startTestServer();
  const { client: a, token } = await viaProxy("talk");
  await cutAndRefuse(a);
  const queued = failure(a.send({ room: "talk", body: "queued before the sign-out" }));
  const signedOut = a.next("signed-out");
  const err = await failure(a.logout());
  expect(err).toMatchObject({ code: "disconnected", request: "logout" });
  expect(err.message).toContain("signed out on this client only");
  expect(await signedOut).toEqual({ reason: "logout" });
  expect([a.state, a.token, a.user, a.outbox, a.rooms]).toEqual(["signed-out", null, null, [], []]);
  expect((await queued).code).toBe("signed_out");
  // The proxy lets connections through again: the client does not sign in again by itself.
  proxy!.refuse = false;
  await expect(a.next("open", () => true, 300)).rejects.toThrow();
  expect(a.state).toBe("signed-out");
  // Nothing was sent, and the server still honours the token: it was never told.
  const { client: b } = await t.signedIn(fast);
  expect((await b.history({ room: "talk" })).messages).toEqual([]);
  expect((await b.auth({ token })).user.username).toBeString();
  // Connected again (here by connect(); a sign-in request does it too), the client ends
  // that session first: b, signed in with it, is closed with 4001.
  const revoked = b.next("signed-out");
  const opened = a.next("open");
  a.connect();
  expect(await opened).toEqual({ user: null });
  expect(await revoked).toEqual({ reason: "revoked" });
  const { client: c } = await t.signedIn(fast);
  expect((await failure(c.auth({ token }))).code).toBe("unauthorized");
  // Once: another connection does not try again.
  const authsBefore = t.app.metrics.requests.get("auth") ?? 0;
  const reopened = a.next("open");
  proxy!.cut();
  await reopened;
  expect(t.app.metrics.requests.get("auth") ?? 0).toBe(authsBefore);
});

test("logout unanswered (timeout) signs out here too; answered, it revokes the session", async () => {
  t = await startTestServer();
  const { client: a, token } = await viaProxy("talk");
  proxy!.dropReplies = true;
  const err = await failure(a.logout({}, { timeoutMs: 200 }));
  expect(err).toMatchObject({ code: "timeout", request: "logout" });
  expect([a.state, a.token]).toEqual(["signed-out", null]);
  // The frame went out, so here the server did revoke it.
  const { client: b } = await t.signedIn(fast);
  expect((await failure(b.auth({ token }))).code).toBe("unauthorized");
});

test("a send over the server's MAX_FRAME_BYTES (close 1009) rejects too_large and leaves the outbox; the client reconnects and sends on", async () => {
  t = await startTestServer({ config: { MAX_FRAME_BYTES: 1024 } });
  const { token } = await t.signedIn(fast);
  const store = memoryStore();
  const a = await t.client({ ...fast, token, store });
  await a.join({ room: "talk" });
  const got = collect(a);
  const reconnecting = a.next("reconnecting");
  const big = "é".repeat(600); // 1,200 bytes of UTF-8: under the body limit, over the frame limit
  const err = await failure(a.send({ room: "talk", body: big }));
  expect(err).toMatchObject({ code: "too_large", request: "send" });
  expect((await reconnecting).code).toBe(1009);
  expect(a.outbox).toEqual([]);
  expect(await a.send({ room: "talk", body: "small" })).toMatchObject({ seq: 1 });
  await got.waitFor(1);
  expect(got.bodies()).toEqual(["small"]);
  // A page reload (a new client on the same store) has nothing to write again.
  a.close();
  const reloaded = await t.client({ ...fast, token, store });
  cleanups.push(() => reloaded.close());
  expect(reloaded.outbox).toEqual([]);
  await reloaded.join({ room: "talk" });
  expect((await reloaded.history({ room: "talk" })).messages.map((m) => m.body)).toEqual(["small"]);
});

test("close 1009 with no send to blame (a login past the frame limit) stops the client: reconnecting would repeat it", async () => {
  t = await startTestServer({ config: { MAX_FRAME_BYTES: 256 } });
  const a = await t.client(fast);
  const closed = a.next("closed");
  const err = await failure(a.login({ username: "someone", password: "p".repeat(300) }));
  expect(err).toMatchObject({ code: "too_large", request: "login" });
  expect((await closed).code).toBe(1009);
  expect(a.state).toBe("closed");
});

test("logout on a client still making its first connection waits for it and revokes the session", async () => {
  t = await startTestServer();
  const { token } = await t.signedIn(fast);
  const a = createClient({ url: t.wsUrl, ...fast, token });
  cleanups.push(() => a.close());
  expect(a.state).toBe("connecting");
  expect(await a.logout()).toEqual({});
  expect([a.state, a.token]).toEqual(["signed-out", null]);
  const { client: b } = await t.signedIn(fast);
  expect((await failure(b.auth({ token }))).code).toBe("unauthorized");
});

test("logout refused by the request budget is asked again, not left signed in", async () => {
  t = await startTestServer({ config: { SEND_RATE: 1, SEND_BURST: 5, REQUEST_RATE: 50, REQUEST_BURST: 10 } });
  const { client: a, token } = await t.signedIn(fast);
  // Spend the budget: some of these are refused, and so, at first, is the logout.
  const calls = range(40).map((i) => a.who({ room: `r${i}` }).catch(() => {}));
  expect(await a.logout()).toEqual({});
  await Promise.all(calls);
  expect(t.app.metrics.errors.get("rate_limited")).toBeGreaterThan(0);
  expect([a.state, a.token]).toEqual(["signed-out", null]);
  const { client: b } = await t.signedIn(fast);
  expect((await failure(b.auth({ token }))).code).toBe("unauthorized");
});

test("a WebSocket handshake that gets no answer is given up after requestTimeoutMs, and retried", async () => {
  // Accepts TCP connections and never answers the upgrade.
  const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  cleanups.push(() => silent.stop(true));
  const a = createClient({ url: `ws://127.0.0.1:${silent.port}/ws`, ...fast, requestTimeoutMs: 200 });
  cleanups.push(() => a.close());
  const started = Date.now();
  const first = await a.next("reconnecting", () => true, 3000);
  expect(first).toMatchObject({ code: 4000, reason: "no answer to the WebSocket handshake" });
  expect(Date.now() - started).toBeLessThan(2000); // Bun's own limit is about 10 s
  expect((await a.next("reconnecting", () => true, 3000)).attempt).toBe(2);
});

test("a stored message over the frame limit, sent after a reload, is dropped with an error event that names it", async () => {
  t = await startTestServer({ config: { MAX_FRAME_BYTES: 1024 } });
  const { token, username } = await t.signedIn(fast);
  const big = { nonce: "c-stored-big", room: "talk", body: "é".repeat(600), createdAt: Date.now() };
  const small = { nonce: "c-stored-small", room: "talk", body: "small", createdAt: Date.now() };
  const store = memoryStore({ user: username, seqs: { talk: 0 }, outbox: [big, small] });
  const a = createClient({ url: t.wsUrl, ...fast, token, store });
  cleanups.push(() => a.close());
  const dropped = await a.next("error", (e) => e.code === "too_large", 3000);
  expect(dropped.message).toContain("c-stored-big");
  expect(dropped.message).toContain("talk");
  const got = collect(a, "talk");
  await got.waitFor(1);
  expect(got.bodies()).toEqual(["small"]);
  // Its `ok` may come after its message event.
  if (a.outbox.length > 0) await a.next("outbox", (o) => o.pending.length === 0, 3000);
  expect(a.outbox).toEqual([]);
});

test("a left-over session ended elsewhere meanwhile: the next connection's auth is refused, and nothing more is tried", async () => {
  t = await startTestServer();
  const { client: a, token } = await viaProxy("talk");
  await cutAndRefuse(a);
  expect((await failure(a.logout())).code).toBe("disconnected");
  // Ended from another client before `a` is back.
  const { client: b } = await t.signedIn(fast);
  await b.auth({ token });
  await b.logout();
  proxy!.refuse = false;
  const authsBefore = t.app.metrics.requests.get("auth") ?? 0;
  const opened = a.next("open");
  a.connect();
  expect(await opened).toEqual({ user: null });
  expect(t.app.metrics.requests.get("auth")).toBe(authsBefore + 1);
  expect(t.app.metrics.errors.get("unauthorized")).toBeGreaterThan(0);
  const reopened = a.next("open");
  proxy!.cut();
  await reopened;
  expect(t.app.metrics.requests.get("auth")).toBe(authsBefore + 1);
  expect(a.state).toBe("open");
});
