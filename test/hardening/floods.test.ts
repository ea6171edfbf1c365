import { afterEach, expect, test } from "bun:test";
import { Opcode, RawWs } from "../../bench/lib/raw-ws.ts";
import { defaultMaxConnections } from "../../src/server.ts";
import { AddressLimiter } from "../../src/ws/request-budget.ts";
import { range } from "../client/util.ts";
import { signedIn, startApp, type Frame, type TestApp, type TestSocket } from "../helpers.ts";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

test("a client sending as fast as it can gets rate_limited past its burst; the server and others carry on", async () => {
  t = await startApp({ config: { SEND_RATE: 5, SEND_BURST: 20 } });
  const flooder = await signedIn(t);
  const other = await signedIn(t);
  await flooder.s.request({ type: "join", room: "flood" });
  await other.s.request({ type: "join", room: "flood" });
  const started = performance.now();
  const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => flooder.s.request({ type: "send", room: "flood", body: `m${i}` })));
  const elapsedS = (performance.now() - started) / 1000;
  const ok = replies.filter((r) => r.type === "ok");
  const limited = replies.filter((r) => r.type === "error" && r.code === "rate_limited");
  expect(ok.length + limited.length).toBe(300);
  // Both sides of the bucket: the whole burst passes, and little more than the burst plus what refilled.
  expect(ok.length).toBeGreaterThanOrEqual(20);
  expect(ok.length).toBeLessThanOrEqual(20 + Math.ceil(5 * elapsedS) + 1);
  // Each refusal's retryAfterMs comes after the one before it (a token each, 200 ms at 5 a
  // second), so that a client retrying each at its time is not refused again for a herd.
  const hints = limited.map((r) => r.retryAfterMs as number);
  for (let i = 1; i < hints.length; i++) expect(hints[i]! - hints[i - 1]!).toBeGreaterThan(150);
  expect(hints[0]).toBeGreaterThan(0);
  expect(hints[0]).toBeLessThanOrEqual(200);
  // Accepted sends got gapless seqs, and the other member received exactly those, in order.
  expect(ok.map((r) => r.seq)).toEqual(ok.map((_, i) => i + 1));
  const got = await other.s.messages("flood", ok.length);
  expect(got.map((m) => m.seq)).toEqual(ok.map((_, i) => i + 1));
  expect(await other.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  const rows = t.store.client.query("SELECT count(*) AS n FROM messages").get() as { n: number };
  expect(rows.n).toBe(ok.length);
  // After waiting out the first refusal's retryAfterMs, the flooder may send again.
  await Bun.sleep(hints[0]! + 10);
  expect(await flooder.s.request({ type: "send", room: "flood", body: "again" })).toMatchObject({ type: "ok" });
});

/**
 * Writes `frames` at once, then writes each one refused `rate_limited` again at its
 * `retryAfterMs` (as PROTOCOL.md says to), until all are answered otherwise. Returns the
 * answers and how many times a retry was refused again.
 */
async function retryingAtHints(s: TestSocket, frames: Array<Record<string, unknown>>): Promise<{ answers: Frame[]; refusedAgain: number }> {
  let refusedAgain = 0;
  const answers = await Promise.all(
    frames.map(async (frame, i) => {
      for (let attempt = 0; ; attempt++) {
        const reply = await s.request({ ...frame, ref: `${i}.${attempt}` });
        if (reply.type !== "error" || reply.code !== "rate_limited") return reply;
        if (attempt > 0) refusedAgain++;
        // One ms more, as the SDK does: a timer can fire a hair before its time, and the
        // server counts whole ms (a clean-clone run had one retry refused again without it).
        await Bun.sleep((reply.retryAfterMs as number) + 1);
      }
    }),
  );
  return { answers, refusedAgain };
}

test("a client that retries each refused send at its retryAfterMs gets them all through, each on its first retry (the hints queue them)", async () => {
  // A burst of 10 at 50 a second: retries that a stalled machine delays together (up to
  // 200 ms) still find their tokens saved; at 5 and 100 a second, a 50 ms stall of the
  // test process had retries refused again for the burst's cap.
  t = await startApp({ config: { SEND_RATE: 50, SEND_BURST: 10 } });
  const { s } = await signedIn(t);
  await s.request({ type: "join", room: "queue" });
  const { answers, refusedAgain } = await retryingAtHints(s, range(30).map((i) => ({ type: "send", room: "queue", body: `m${i}`, nonce: `n${i}` })));
  expect(answers.every((a) => a.type === "ok")).toBe(true);
  expect(refusedAgain).toBe(0);
  expect(answers.map((a) => a.seq as number).sort((a, b) => a - b)).toEqual(range(30));
});

test("a client that retries each request refused by the request budget at its retryAfterMs gets them all through, each on its first retry", async () => {
  t = await startApp({ config: { REQUEST_RATE: 50, REQUEST_BURST: 10, SEND_RATE: 0.5, SEND_BURST: 1 } });
  const s = await t.connect();
  const { answers, refusedAgain } = await retryingAtHints(s, range(30).map(() => ({ type: "ping" })));
  expect(answers.every((a) => a.type === "ok")).toBe(true);
  expect(refusedAgain).toBe(0);
});

test("a member that never reads is closed with 1013 during heavy broadcast; readers get every message in order", async () => {
  const SEND_BUFFER_BYTES = 64 * 1024;
  t = await startApp({ config: { SEND_RATE: 100_000, SEND_BURST: 100_000, SEND_BUFFER_BYTES } });
  const sender = await signedIn(t);
  const reader = await signedIn(t);
  await sender.s.request({ type: "join", room: "firehose" });
  await reader.s.request({ type: "join", room: "firehose" });

  // The non-reader: a raw TCP client that signs in, joins, and then stops reading.
  const stuck = await RawWs.open(t.port);
  stuck.text({ type: "auth", ref: "a", token: sender.token });
  stuck.text({ type: "join", ref: "j", room: "firehose" });
  expect(await stuck.reply("j")).toMatchObject({ type: "ok" });
  stuck.pause();

  // ~8 MB of messages: more than the loopback socket buffers can hide.
  const N = 2000;
  const body = "b".repeat(3990);
  let acked = 0;
  for (let batch = 0; batch < N / 100; batch++) {
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => sender.s.request({ type: "send", room: "firehose", body: `${batch * 100 + i}:${body}` })));
    acked += rs.filter((r) => r.type === "ok").length;
  }
  expect(acked).toBe(N);
  const got = await reader.s.messages("firehose", N, 10_000);
  expect(got.map((m) => m.seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
  expect(got.map((m) => String(m.body).split(":")[0])).toEqual(Array.from({ length: N }, (_, i) => String(i)));

  // The server closed the non-reader as a slow consumer, long before it was sent everything.
  expect(t.app.metrics.closes.get(1013)).toBe(1);
  stuck.resume();
  const end = await stuck.end(10_000);
  expect(end.code).toBe(1013);
  const delivered = stuck.json().filter((f) => f.type === "message").map((f) => f.seq as number);
  expect(delivered.length).toBeLessThan(N);
  // What it did get, before the close, has no gap: Bun drops publishes to a socket over
  // the limit, so the server must close it before anything later can reach it.
  expect(delivered).toEqual(Array.from({ length: delivered.length }, (_, i) => i + 1));
  // Its sender's own connection is unaffected, and a new connection works.
  expect(await sender.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  const fresh = await t.connect();
  expect(await fresh.request({ type: "ping" })).toMatchObject({ type: "ok" });
}, 30_000);

test("every request takes a token: past the burst rate_limited (ref echoed, no schema run), a burst (at least 128) more closes with 1008", async () => {
  // One token a second: a fraction of one refills within the test.
  // (Send limits low too: the request bucket is never smaller than twice theirs.)
  t = await startApp({ config: { REQUEST_RATE: 1, REQUEST_BURST: 5, SEND_RATE: 0.5, SEND_BURST: 1 } });
  const flooder = await t.connect();
  const other = await t.connect();
  for (let i = 0; i < 5; i++) expect(await flooder.request({ type: "ping", ref: i })).toEqual({ type: "ok", ref: i });
  // The 6th: refused, with its ref, whatever it is (an invalid frame too: not counted toward 1008 as invalid).
  const refused = await flooder.request({ type: "ping", ref: "six" });
  expect(refused).toMatchObject({ type: "error", ref: "six", code: "rate_limited" });
  // When the bucket holds a token again: almost a second at 1 a second (a little refilled meanwhile).
  expect(refused.retryAfterMs).toBeGreaterThan(900);
  expect(refused.retryAfterMs).toBeLessThanOrEqual(1000);
  // The next one refused comes a token after it.
  const seventh = await flooder.request({ type: "nope", ref: 7 });
  expect(seventh).toMatchObject({ ref: 7, code: "rate_limited" });
  expect((seventh.retryAfterMs as number) - (refused.retryAfterMs as number)).toBeGreaterThan(900);
  expect(await flooder.request({ type: "join", ref: 8, room: "BAD" })).toMatchObject({ ref: 8, code: "rate_limited" });
  expect(await flooder.request({ type: "ping", ref: 9 })).toMatchObject({ ref: 9, code: "rate_limited" });
  // A burst of 5 is less than FLOOD_DEBT_MIN: the close comes at 128 into debt, not 5, so
  // that a client with requests in flight can read its first refusal and stop. 127: open.
  for (let ref = 10; ref < 132; ref++) flooder.sendRaw({ type: "ping", ref });
  expect(await flooder.request({ type: "ping", ref: 132 })).toMatchObject({ ref: 132, code: "rate_limited" });
  // The 128th refused (the 129th, if a token refilled meanwhile) closes, unanswered.
  for (let ref = 133; ref < 137; ref++) flooder.sendRaw({ type: "ping", ref });
  expect(await flooder.closed).toEqual({ code: 1008, reason: "too many requests" });
  const answered = flooder.frames.filter((f) => typeof f.ref === "number" && f.ref >= 133).map((f) => f.ref);
  expect(answered.length).toBeLessThanOrEqual(1);
  // Others have their own buckets.
  expect(await other.request({ type: "ping", ref: 1 })).toEqual({ type: "ok", ref: 1 });
});

test("with a burst above 128, the close comes a whole burst into debt", async () => {
  t = await startApp({ config: { REQUEST_RATE: 1, REQUEST_BURST: 200, SEND_RATE: 0.5, SEND_BURST: 1 } });
  const flooder = await t.connect();
  // 200 pass, then 199 refused: open.
  for (let ref = 0; ref < 398; ref++) flooder.sendRaw({ type: "ping", ref });
  expect(await flooder.request({ type: "ping", ref: 398 })).toMatchObject({ ref: 398, code: "rate_limited" });
  expect(flooder.frames.filter((f) => f.type === "ok")).toHaveLength(200);
  for (let ref = 399; ref < 402; ref++) flooder.sendRaw({ type: "ping", ref });
  expect(await flooder.closed).toEqual({ code: 1008, reason: "too many requests" });
});

test("ping and pong frames take a token too: Bun answers the pings, and a burst (at least 128) into debt closes with 1008", async () => {
  // One token a second: a fraction of one refills within the test.
  t = await startApp({ config: { REQUEST_RATE: 1, REQUEST_BURST: 5, SEND_RATE: 0.5, SEND_BURST: 1 } });
  const raw = await RawWs.open(t.port);
  // 5 tokens, then 126 into debt: still open, each ping answered by Bun with a pong.
  for (let i = 0; i < 130; i++) raw.frame({ opcode: Opcode.ping, payload: `p${i}` });
  raw.frame({ opcode: Opcode.pong, payload: "" });
  const pong = await raw.next((f) => f.opcode === Opcode.pong && f.payload.toString() === "p129");
  expect(pong.payload.toString()).toBe("p129");
  expect(raw.closeReceived).toBeNull();
  // A text request meanwhile (-127) is answered rate_limited, not run.
  raw.text({ type: "ping", ref: 1 });
  expect(await raw.reply(1)).toMatchObject({ code: "rate_limited" });
  expect(raw.closeReceived).toBeNull();
  // One more control frame: -128 (or one more, if a token refilled meanwhile).
  raw.frame({ opcode: Opcode.ping, payload: "last" });
  raw.frame({ opcode: Opcode.ping, payload: "last" });
  expect(await raw.end()).toMatchObject({ code: 1008, reason: "too many requests" });
});

test("a client that waits retryAfterMs gets through again", async () => {
  t = await startApp({ config: { REQUEST_RATE: 50, REQUEST_BURST: 2, SEND_RATE: 1, SEND_BURST: 1 } });
  const s = await t.connect();
  expect((await s.request({ type: "ping" })).type).toBe("ok");
  expect((await s.request({ type: "ping" })).type).toBe("ok");
  const refused = await s.request({ type: "ping" });
  expect(refused).toMatchObject({ type: "error", code: "rate_limited" });
  await Bun.sleep(refused.retryAfterMs as number);
  expect((await s.request({ type: "ping" })).type).toBe("ok");
});

/** A room of `n` messages of `size` chars by `user`, written straight to the database (no send limit applies). */
function storedRoom(app: TestApp, room: string, user: string, n: number, size: number): void {
  const db = app.store.client;
  const roomId = db.query<{ id: number }, [string, number, number]>("INSERT INTO rooms (name, latest_seq, created_at) VALUES (?, ?, ?) RETURNING id").get(room, n, Date.now())!.id;
  const userId = db.query<{ id: number }, [string]>("SELECT id FROM users WHERE username = ?").get(user)!.id;
  const insert = db.prepare("INSERT INTO messages (room_id, seq, user_id, body, created_at) VALUES (?, ?, ?, ?, ?)");
  db.transaction(() => {
    for (let seq = 1; seq <= n; seq++) insert.run(roomId, seq, userId, `${seq}:`.padEnd(size, "x"), Date.now());
  })();
}

test("a large reply costs a token per KiB past its first: the next request waits until it is paid for", async () => {
  // 100 tokens a second, burst 200 (the send limits' defaults need no more than 80).
  t = await startApp({ config: { REQUEST_RATE: 100, REQUEST_BURST: 200 } });
  const m = await signedIn(t);
  storedRoom(t, "big", m.name, 100, 4000);
  // 40 messages of 4,000 chars: a reply of about 160 KiB, within the burst.
  const page = await m.s.request({ type: "history", room: "big", limit: 40 });
  expect((page.messages as unknown[]).length).toBe(40);
  expect(await m.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  // 100 of them, about 400 KiB: past the burst. A reply takes the bucket at most half a
  // burst into debt (the close at a whole burst is for frames sent while refused): paid
  // back in about 1 s.
  const fresh = await t.connect();
  await fresh.request({ type: "auth", token: m.token });
  expect((await fresh.request({ type: "history", room: "big", limit: 100 })).messages).toHaveLength(100);
  const refused = await fresh.request({ type: "ping" });
  expect(refused).toMatchObject({ type: "error", code: "rate_limited" });
  expect(refused.retryAfterMs).toBeGreaterThan(900);
  expect(refused.retryAfterMs).toBeLessThan(1100);
  await Bun.sleep(refused.retryAfterMs as number);
  expect(await fresh.request({ type: "ping" })).toMatchObject({ type: "ok" });
  // Small replies cost nothing on top: a burst of 200 tiny requests passes on a new connection.
  const small = await t.connect();
  const replies = await Promise.all(Array.from({ length: 200 }, () => small.request({ type: "ping" })));
  expect(replies.every((r) => r.type === "ok")).toBe(true);
});

test("a large frame costs a token per KiB past its first, as a reply does; one that costs more than the whole burst runs on a full bucket only", async () => {
  // Almost no refill within the test (0.01 a second), burst 20.
  t = await startApp({ config: { REQUEST_RATE: 0.01, REQUEST_BURST: 20, SEND_RATE: 0.001, SEND_BURST: 1 } });
  /** A ping of exactly `chars` characters (an unknown field pads it), and its reply. */
  const ask = (s: Awaited<ReturnType<TestApp["connect"]>>, ref: number, chars: number) => {
    const pad = "x".repeat(chars - JSON.stringify({ type: "ping", ref, pad: "" }).length);
    expect(JSON.stringify({ type: "ping", ref, pad }).length).toBe(chars);
    return s.request({ type: "ping", ref, pad });
  };
  // 1,024 characters cost one token: twenty pass.
  const kib = await t.connect();
  for (let ref = 0; ref < 20; ref++) expect(await ask(kib, ref, 1024)).toEqual({ type: "ok", ref });
  // 1,025 cost a little more: the twentieth is refused.
  const over = await t.connect();
  for (let ref = 0; ref < 19; ref++) expect(await ask(over, ref, 1025)).toEqual({ type: "ok", ref });
  expect(await ask(over, 19, 1025)).toMatchObject({ ref: 19, code: "rate_limited" });
  // 8 KiB frames cost 8: two pass; the third is refused and waits for the 4 tokens it lacks (400 s at 0.01/s).
  const big = await t.connect();
  expect(await ask(big, 1, 8192)).toEqual({ type: "ok", ref: 1 });
  expect(await ask(big, 2, 8192)).toEqual({ type: "ok", ref: 2 });
  const refused = await ask(big, 3, 8192);
  expect(refused).toMatchObject({ ref: 3, code: "rate_limited" });
  expect(refused.retryAfterMs).toBeGreaterThan(399_000);
  expect(refused.retryAfterMs).toBeLessThanOrEqual(400_000);
  // 30 KiB costs more than the burst: it runs on a full bucket (taking it half a burst
  // into debt, as a large reply may) ...
  const full = await t.connect();
  expect(await ask(full, 1, 30 * 1024)).toEqual({ type: "ok", ref: 1 });
  expect(await full.request({ type: "ping", ref: 2 })).toMatchObject({ ref: 2, code: "rate_limited" });
  // ... and not on one short of full.
  const short = await t.connect();
  expect(await short.request({ type: "ping", ref: 1 })).toEqual({ type: "ok", ref: 1 });
  expect(await ask(short, 2, 30 * 1024)).toMatchObject({ ref: 2, code: "rate_limited" });
});

test("a catch-up is paid from the request budget: it pauses in debt and resumes as it refills, gapless", async () => {
  // 600 messages of ~1 KiB cost ~660 tokens; the burst is 400 and 1,000 refill a second,
  // so the replay cannot end in less than 0.26 s (without the budget: a few ms).
  t = await startApp({ config: { REQUEST_RATE: 1000, REQUEST_BURST: 400 } });
  const m = await signedIn(t);
  storedRoom(t, "backlog", m.name, 600, 1000);
  const started = performance.now();
  expect(await m.s.request({ type: "join", room: "backlog", since: 0 })).toMatchObject({ type: "ok", seq: 600, recovered: true });
  const got = await m.s.messages("backlog", 600);
  expect(performance.now() - started).toBeGreaterThan(200);
  expect(got.map((f) => f.seq)).toEqual(Array.from({ length: 600 }, (_, i) => i + 1));
  // Subscribed once caught up: a live message follows, and nothing twice.
  const other = await signedIn(t);
  await other.s.request({ type: "join", room: "backlog" });
  expect(await other.s.request({ type: "send", room: "backlog", body: "live" })).toMatchObject({ type: "ok", seq: 601 });
  expect(await m.s.next((f) => f.type === "message")).toMatchObject({ seq: 601, body: "live" });
  expect(m.s.unclaimed.filter((f) => f.type === "message")).toEqual([]);
});

test("a join or leave pays for its presence event to every member: a loop of them in a big room is soon rate_limited", async () => {
  // One token a second, burst 40 (the least the send limits below allow is 20).
  const config = { REQUEST_RATE: 1, REQUEST_BURST: 40, SEND_RATE: 0.5, SEND_BURST: 10 };
  const loop = async (audience: number) => {
    t = await startApp({ config });
    const member = await signedIn(t);
    await member.s.request({ type: "join", room: "big" });
    for (let i = 1; i < audience; i++) {
      const s = await t.connect();
      await s.request({ type: "auth", token: member.token });
      await s.request({ type: "join", room: "big" });
    }
    const walker = await signedIn(t);
    const codes: string[] = [];
    for (const type of ["join", "leave", "join", "leave", "join"]) {
      const r = await walker.s.request({ type, room: "big" });
      codes.push(r.type === "ok" ? "ok" : String(r.code));
    }
    await t.stop();
    t = undefined;
    return codes;
  };
  // 200 members: each event is ~60 chars to 200 sockets, ~12 tokens.
  expect(await loop(200)).toEqual(["ok", "ok", "ok", "rate_limited", "rate_limited"]);
  // 2 members: the same loop costs a token a request.
  expect(await loop(2)).toEqual(["ok", "ok", "ok", "ok", "ok"]);
});

test("MAX_ROOMS_PER_CONNECTION: the last room that fits is joined, one more is bad_request; leaving makes room", async () => {
  t = await startApp({ config: { MAX_ROOMS_PER_CONNECTION: 3 } });
  const m = await signedIn(t);
  for (const room of ["a", "b", "c"]) expect(await m.s.request({ type: "join", room })).toMatchObject({ type: "ok", room });
  const refused = await m.s.request({ type: "join", room: "d" });
  expect(refused).toMatchObject({ type: "error", code: "bad_request", issues: [{ path: "room" }] });
  expect(String(refused.message)).toContain("3 rooms");
  // Refused: not a member, and no room made for it.
  expect(await m.s.request({ type: "send", room: "d", body: "x" })).toMatchObject({ code: "not_joined" });
  expect(t.store.client.query<{ n: number }, []>("SELECT count(*) AS n FROM rooms WHERE name = 'd'").get()!.n).toBe(0);
  // Joining one it is in again is fine; leaving one makes room.
  expect(await m.s.request({ type: "join", room: "a" })).toMatchObject({ type: "ok" });
  await m.s.request({ type: "leave", room: "a" });
  expect(await m.s.request({ type: "join", room: "d" })).toMatchObject({ type: "ok", room: "d" });
  // Per connection: another connection of the same user has its own.
  const again = await t.connect();
  await again.request({ type: "auth", token: m.token });
  expect(await again.request({ type: "join", room: "e" })).toMatchObject({ type: "ok" });
});

test("MAX_CONNECTIONS: the last one that fits is upgraded, one more gets 503 before the upgrade; a close makes room", async () => {
  t = await startApp({ config: { MAX_CONNECTIONS: 2 } });
  const first = await t.connect();
  await t.connect();
  await expect(RawWs.open(t.port)).rejects.toThrow("handshake refused: HTTP/1.1 503");
  expect(t.app.metrics.connectionsRefused).toBe(1);
  // Plain HTTP is not a connection of this kind: still answered.
  expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  await first.close(1000);
  for (let i = 0; i < 100 && t.app.metrics.connectionsClosed < 1; i++) await Bun.sleep(5);
  const third = await t.connect();
  expect(await third.request({ type: "ping" })).toMatchObject({ type: "ok" });
});

test("MAX_CONNECTIONS_PER_ADDRESS: of upgrades made together, exactly the cap open; one more gets 429 before the upgrade; other addresses and a close make room", async () => {
  const { TrustedProxies } = await import("../../src/ws/client-address.ts");
  t = await startApp({ config: { MAX_CONNECTIONS_PER_ADDRESS: 3, trustedProxies: TrustedProxies.parse("127.0.0.1, ::1, ::ffff:127.0.0.1") } });
  const from = (address: string) => ({ "x-forwarded-for": address });
  const tries = await Promise.allSettled(Array.from({ length: 5 }, () => t!.connect({ headers: from("203.0.113.7") })));
  const opened = tries.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  expect(opened.length).toBe(3);
  expect(t.app.metrics.addressConnectionsRefused).toBe(2);
  // What a client sees: 429 with Retry-After, before any upgrade.
  await expect(RawWs.open(t.port, { headers: from("203.0.113.7") })).rejects.toThrow("handshake refused: HTTP/1.1 429");
  // Another address, and plain HTTP from this one, are not held back.
  const other = await t.connect({ headers: from("203.0.113.8") });
  expect(await other.request({ type: "ping" })).toMatchObject({ type: "ok" });
  const health = await fetch(`${t.url}/healthz`, { headers: from("203.0.113.7") });
  expect(health.status).toBe(200);
  expect(await (await fetch(`${t.url}/metrics`)).text()).toContain("switchboard_address_connections_refused_total 3");
  // A close makes room for exactly one more.
  await opened[0]!.close(1000);
  for (let i = 0; i < 100 && t.app.metrics.connectionsClosed < 1; i++) await Bun.sleep(5);
  const again = await t.connect({ headers: from("203.0.113.7") });
  expect(await again.request({ type: "ping" })).toMatchObject({ type: "ok" });
  await expect(t.connect({ headers: from("203.0.113.7") })).rejects.toThrow("cannot connect");
});

test("MAX_CONNECTIONS_PER_ADDRESS 0 (the default) caps nothing", async () => {
  t = await startApp();
  const sockets = await Promise.all(Array.from({ length: 40 }, () => t!.connect()));
  for (const s of sockets) expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  expect(t.app.metrics.addressConnectionsRefused).toBe(0);
});

test("MAX_CONNECTIONS_PER_USER: sign-ins past the cap are rate_limited (a login's new session revoked); the same connection, other users and a close are not held back", async () => {
  t = await startApp({ config: { MAX_CONNECTIONS_PER_USER: 2 } });
  const a = await signedIn(t); // 1
  const b = await t.connect();
  expect(await b.request({ type: "auth", token: a.token })).toMatchObject({ type: "ok" }); // 2: the cap
  // Signing in again on a connection already signed in as the user counts nothing.
  expect(await b.request({ type: "auth", token: a.token })).toMatchObject({ type: "ok" });
  const c = await t.connect();
  const refused = await c.request({ type: "auth", token: a.token });
  expect(refused).toMatchObject({ type: "error", code: "rate_limited", retryAfterMs: 5000 });
  expect(refused.message).toBe("this user has 2 connections signed in, the most allowed: close one first");
  expect(await c.request({ type: "join", room: "capped" })).toMatchObject({ type: "error", code: "unauthorized" });
  const sessionsBefore = (t.store.client.query("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL").get() as { n: number }).n;
  expect(await c.request({ type: "login", username: a.name, password: "correct horse battery" })).toMatchObject({ type: "error", code: "rate_limited" });
  // The login's session was made, then revoked: no usable token came of it.
  const sessionsAfter = (t.store.client.query("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL").get() as { n: number }).n;
  expect(sessionsAfter).toBe(sessionsBefore);
  expect(t.app.metrics.userSigninsRefused).toBe(2);
  // A connection signed in as someone else stays so when refused as this user.
  const d = await signedIn(t);
  expect(await d.s.request({ type: "auth", token: a.token })).toMatchObject({ type: "error", code: "rate_limited" });
  expect(await d.s.request({ type: "join", room: "capped" })).toMatchObject({ type: "ok", members: [d.name] });
  // A close makes room for one.
  await b.close(1000);
  for (let i = 0; i < 100 && t.app.metrics.connectionsClosed < 1; i++) await Bun.sleep(5);
  expect(await c.request({ type: "auth", token: a.token })).toMatchObject({ type: "ok" });
  expect(await d.s.request({ type: "auth", token: a.token })).toMatchObject({ type: "error", code: "rate_limited" });
  // So does logout (the connection stays open, signed out).
  expect(await c.request({ type: "logout" })).toMatchObject({ type: "ok" });
  expect(await d.s.request({ type: "login", username: a.name, password: "correct horse battery" })).toMatchObject({ type: "ok" });
});

/** Writes `n` pipelined `GET path` to one TCP connection; resolves with the status of each answer once the server closes it (or after 2 s). */
async function pipelined(port: number, path: string, n: number): Promise<{ statuses: number[]; closed: boolean }> {
  let text = "";
  let closed = false;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, 2000);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (socket) => void socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(n)),
        data: (_socket, chunk) => void (text += chunk.toString("latin1")),
        close: () => {
          closed = true;
          clearTimeout(timer);
          resolve();
        },
        error: (_socket, e) => reject(e),
      },
    }).catch(reject);
  });
  return { statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])), closed };
}

test("HTTP requests per address: the burst passes, then 429 with Retry-After and the connection closed; upgrades take nothing", async () => {
  // Half a token a second: nothing refills within the test.
  t = await startApp({ config: { HTTP_RATE: 0.5, HTTP_BURST: 5 } });
  for (let i = 0; i < 5; i++) expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  const refused = await fetch(`${t.url}/healthz`);
  expect(refused.status).toBe(429);
  expect(await refused.json()).toEqual({ error: "too many requests" });
  expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  expect(refused.headers.get("connection")).toBe("close");
  expect(t.app.metrics.httpRefused).toBe(1);
  // Any path: a 404, the 426 of a plain GET /ws.
  expect((await fetch(`${t.url}/nope`)).status).toBe(429);
  expect((await fetch(`${t.url}/ws`)).status).toBe(429);
  // A WebSocket that upgrades takes no token, and is not refused.
  const ws = await t.connect();
  expect(await ws.request({ type: "ping" })).toMatchObject({ type: "ok" });
});

test("pipelined HTTP requests past the burst: one 429, then the connection is closed and the rest are dropped", async () => {
  t = await startApp({ config: { HTTP_RATE: 0.5, HTTP_BURST: 5 } });
  const { statuses, closed } = await pipelined(t.port, "/nope", 50);
  expect(statuses).toEqual([404, 404, 404, 404, 404, 429]);
  expect(closed).toBe(true);
  expect(t.app.metrics.httpRefused).toBe(1);
});

test("HTTP buckets are per client address (X-Forwarded-For from a trusted proxy; an IPv6 /64 as one), and refill", async () => {
  t = await startApp({ config: { HTTP_RATE: 20, HTTP_BURST: 2, TRUSTED_PROXIES: "127.0.0.1" } });
  const from = (address: string) => fetch(`${t!.url}/healthz`, { headers: { "x-forwarded-for": address } }).then((r) => r.status);
  expect([await from("10.0.0.1"), await from("10.0.0.1"), await from("10.0.0.1")]).toEqual([200, 200, 429]);
  expect([await from("10.0.0.2"), await from("10.0.0.2")]).toEqual([200, 200]);
  // IPv6: one /64 is one client, whichever of its addresses (and spellings) it uses; the next /64 is another.
  expect([await from("2001:db8::1"), await from("2001:DB8:0:0::2"), await from("2001:db8::ffff")]).toEqual([200, 200, 429]);
  expect(await from("2001:db8:0:1::1")).toBe(200);
  await Bun.sleep(100); // 20 a second: two tokens back
  expect(await from("10.0.0.1")).toBe(200);
});

test("the address limiter forgets refilled addresses on sweep, and stays bounded", () => {
  const limiter = new AddressLimiter(10, 2, 3);
  expect(limiter.take("a", 0).waitMs).toBe(0);
  expect(limiter.take("a", 0).waitMs).toBe(0);
  expect(limiter.take("a", 0)).toEqual({ waitMs: 100, log: 1 });
  expect(limiter.take("a", 1)).toEqual({ waitMs: 99, log: 0 }); // logged at most every 10 s
  limiter.take("b", 0);
  limiter.sweep(100); // a: 1 token back of 2; b: full again
  expect(limiter.size).toBe(1);
  limiter.sweep(200);
  expect(limiter.size).toBe(0);
  // Past maxAddresses (3), the full ones go first, and if none is full, all.
  for (const address of ["c", "d", "e"]) limiter.take(address, 1000);
  limiter.take("f", 1000);
  expect(limiter.size).toBe(1);
  expect(limiter.take("f", 1000).waitMs).toBe(0); // its bucket started over, full
});

test("the default MAX_CONNECTIONS is 90% of the open-files limit read from /proc/self/limits", () => {
  const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                20000                files\n`;
  expect(defaultMaxConnections(limits("20000"))).toBe(18_000);
  expect(defaultMaxConnections(limits("unlimited"))).toBe(Number.POSITIVE_INFINITY);
  expect(defaultMaxConnections("no such line")).toBe(Number.POSITIVE_INFINITY);
  // This process's: Bun raised the soft limit to the hard one.
  expect(defaultMaxConnections()).toBeGreaterThan(900);
});

test("raising the send limits raises the request bucket with them: 3,000 pipelined sends all go through", async () => {
  // REQUEST_BURST 100 on its own would refuse the 101st frame; SEND_BURST 5000 lifts it to 10,000.
  t = await startApp({ config: { REQUEST_RATE: 1, REQUEST_BURST: 100, SEND_RATE: 5000, SEND_BURST: 5000 } });
  const m = await signedIn(t);
  await m.s.request({ type: "join", room: "bulk" });
  const replies = await Promise.all(Array.from({ length: 3000 }, (_, i) => m.s.request({ type: "send", room: "bulk", body: `b${i}` })));
  expect(replies.filter((r) => r.type !== "ok")).toEqual([]);
  expect(replies.map((r) => r.seq)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
}, 20_000);
