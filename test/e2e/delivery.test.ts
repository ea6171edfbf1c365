/**
 * DELIVERY_INTERVAL_MS: a busy room's message events wait for the room's next write,
 * and nothing about who receives what changes (no gap, no duplicate, same order).
 * The interval here is long enough that "held" is a state a test can see.
 */
import { afterEach, expect, test } from "bun:test";
import type { Config } from "../../src/config.ts";
import { signedIn, startApp, type Frame, type TestApp } from "../helpers.ts";

let t: TestApp;
afterEach(() => t?.stop());

const FAST = { SEND_RATE: 100_000, SEND_BURST: 100_000 };
const INTERVAL = 400;

async function member(room = "lobby") {
  const m = await signedIn(t);
  expect(await m.s.request({ type: "join", room })).toMatchObject({ type: "ok" });
  return m;
}

const heldMetric = async () => Number(/\nswitchboard_message_events_held_total (\d+)\n/.exec(await (await fetch(`${t.url}/metrics`)).text())?.[1]);

const messageSeqs = (frames: Frame[]) => frames.filter((f) => f.type === "message").map((f) => f.seq as number);

/** Sends `bodies` in order, each answered ok; returns the seqs. */
async function sendAll(s: Awaited<ReturnType<typeof member>>["s"], bodies: string[], room = "lobby"): Promise<number[]> {
  const seqs: number[] = [];
  for (const body of bodies) {
    const r = await s.request({ type: "send", room, body });
    expect(r.type).toBe("ok");
    seqs.push(r.seq as number);
  }
  return seqs;
}

/** a and b in the lobby, and "one" from a has reached b (at once: the room was quiet). */
async function oneDelivered(config: Partial<Config>) {
  t = await startApp({ config: { ...FAST, ...config } });
  const a = await member();
  const b = await member();
  await sendAll(a.s, ["one"]);
  await b.s.messages("lobby", 1);
  return { a, b };
}

/** As `oneDelivered`, then "two" and "three" are answered ok and held. */
async function twoHeld(interval = INTERVAL) {
  const { a, b } = await oneDelivered({ DELIVERY_INTERVAL_MS: interval });
  await sendAll(a.s, ["two", "three"]);
  return { a, b };
}

test("a quiet room's message goes out at once; those sent within the interval wait for its end and arrive together, in order", async () => {
  t = await startApp({ config: { ...FAST, DELIVERY_INTERVAL_MS: INTERVAL } });
  const a = await member();
  const b = await member();
  const start = performance.now();
  await sendAll(a.s, ["one"]);
  expect(messageSeqs(await b.s.messages("lobby", 1))).toEqual([1]);
  // The sender's ok does not wait for the interval: the message is committed.
  expect(await sendAll(a.s, ["two", "three"])).toEqual([2, 3]);
  await b.s.request({ type: "ping" });
  expect(messageSeqs(b.s.unclaimed)).toEqual([]);
  expect(messageSeqs(await b.s.messages("lobby", 2))).toEqual([2, 3]);
  const waited = performance.now() - start;
  // Released at the interval's end after "one" was published (a timer may fire 1 ms early).
  expect(waited).toBeGreaterThanOrEqual(INTERVAL - 2);
  expect(waited).toBeLessThan(INTERVAL + 2000);
  // The sender gets its own messages the same way.
  expect(messageSeqs(await a.s.messages("lobby", 3))).toEqual([1, 2, 3]);
  expect(await heldMetric()).toBe(2);
});

test("DELIVERY_INTERVAL_MS=0: every commit's message events are written in its own turn", async () => {
  t = await startApp({ config: { ...FAST, DELIVERY_INTERVAL_MS: 0 } });
  const a = await member();
  const b = await member();
  expect(await sendAll(a.s, ["one", "two", "three"])).toEqual([1, 2, 3]);
  // Published in the commit's turn, before b's ping is even read: on b's socket first.
  await b.s.request({ type: "ping" });
  expect(messageSeqs(b.s.unclaimed)).toEqual([1, 2, 3]);
  expect(await heldMetric()).toBe(0);
});

test("a join while messages are held: the members hear of them before the join's presence, and the joiner gets each once", async () => {
  const { a, b } = await twoHeld();

  // With since: replayed from the database up to seq 3, then live, with no second copy of 2 and 3.
  const c = await signedIn(t);
  expect(await c.s.request({ type: "join", room: "lobby", since: 0 })).toMatchObject({ type: "ok", seq: 3, recovered: true });
  expect(messageSeqs(await c.s.messages("lobby", 3))).toEqual([1, 2, 3]);
  // Without since: nothing up to the reply's seq is pushed.
  const d = await signedIn(t);
  expect(await d.s.request({ type: "join", room: "lobby" })).toMatchObject({ type: "ok", seq: 3 });

  // b gets 2 and 3, then the presence event, queued behind them.
  const joined = await b.s.next((f) => f.type === "presence" && f.user === c.name, 500);
  expect(joined.state).toBe("join");
  const order = b.s.frames.filter((f) => f.type === "message" || f.type === "presence").map((f) => (f.type === "message" ? f.seq : f.user));
  expect(order.slice(0, 4)).toEqual([1, 2, 3, c.name]);

  await sendAll(a.s, ["four"]);
  expect(messageSeqs(await c.s.messages("lobby", 1))).toEqual([4]);
  expect(messageSeqs(await d.s.messages("lobby", 1))).toEqual([4]);
  await c.s.request({ type: "ping" });
  await d.s.request({ type: "ping" });
  expect(messageSeqs(c.s.frames)).toEqual([1, 2, 3, 4]);
  expect(messageSeqs(d.s.frames)).toEqual([4]);
});

test("a member that leaves while messages are held still gets what was committed before it left", async () => {
  const { a, b } = await twoHeld();
  expect(await b.s.request({ type: "leave", room: "lobby" })).toMatchObject({ type: "ok" });
  expect(messageSeqs(b.s.frames)).toEqual([1, 2, 3]);
  // And nothing after it.
  await sendAll(a.s, ["four"]);
  expect(messageSeqs(await a.s.messages("lobby", 4))).toEqual([1, 2, 3, 4]);
  await b.s.request({ type: "ping" });
  expect(messageSeqs(b.s.frames)).toEqual([1, 2, 3]);
});

test("a room left empty while its messages are held, and joined again: each message once", async () => {
  t = await startApp({ config: { ...FAST, DELIVERY_INTERVAL_MS: INTERVAL } });
  const a = await member();
  await sendAll(a.s, ["one", "two"]); // two is held
  expect(await a.s.request({ type: "leave", room: "lobby" })).toMatchObject({ type: "ok" });
  const b = await signedIn(t);
  expect(await b.s.request({ type: "join", room: "lobby", since: 0 })).toMatchObject({ type: "ok", seq: 2, recovered: true });
  expect(messageSeqs(await b.s.messages("lobby", 2))).toEqual([1, 2]);
  await sendAll(b.s, ["three"]);
  expect(messageSeqs(await b.s.messages("lobby", 1))).toEqual([3]);
  await b.s.request({ type: "ping" });
  expect(messageSeqs(b.s.frames)).toEqual([1, 2, 3]);
  expect(messageSeqs(a.s.frames)).toEqual([1, 2]);
});

test("a graceful stop writes the held messages before closing with 1001", async () => {
  const { a, b } = await twoHeld(60_000);
  await t.app.shutdown();
  expect((await b.s.closed).code).toBe(1001);
  expect(messageSeqs(b.s.frames)).toEqual([1, 2, 3]);
  expect(messageSeqs(a.s.frames)).toEqual([1, 2, 3]);
});

test("a room whose last member closed before its message was committed: joined again, each message once", async () => {
  t = await startApp({ config: { ...FAST, DELIVERY_INTERVAL_MS: INTERVAL } });
  const a = await member();
  await sendAll(a.s, ["one"]);
  // Committed after a's close was read (the next turn), so held with no member left.
  a.s.sendRaw({ type: "send", room: "lobby", body: "two" });
  await a.s.close();
  const b = await signedIn(t);
  for (;;) {
    // a's close may take a moment to reach the server: until then a is still a member.
    const r = await b.s.request({ type: "who", room: "lobby" });
    if ((r.members as string[]).length === 0) break;
  }
  expect(await b.s.request({ type: "join", room: "lobby", since: 0 })).toMatchObject({ type: "ok", seq: 2, recovered: true });
  expect(messageSeqs(await b.s.messages("lobby", 2))).toEqual([1, 2]);
  // "three" goes out at once (a fresh load of the room); "four" waits for the interval,
  // past the end of the one "two" was held for: nothing of the old load comes after it.
  await sendAll(b.s, ["three", "four"]);
  expect(messageSeqs(await b.s.messages("lobby", 2))).toEqual([3, 4]);
  await b.s.request({ type: "ping" });
  expect(messageSeqs(b.s.frames)).toEqual([1, 2, 3, 4]);
});

/** `n` sends of `size`-character bodies written back to back; resolves with the replies. */
function burst(s: Awaited<ReturnType<typeof member>>["s"], n: number, size: number): Promise<Frame[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => s.request({ type: "send", room: "lobby", body: `${i}:`.padEnd(size, "x") })));
}

for (const interval of [0, 1000]) {
  test(`DELIVERY_INTERVAL_MS=${interval}: megabytes of events at once reach readers that keep up, all of them, in order, and nobody is closed`, async () => {
    // The smallest send buffer: a turn may publish 32 KiB (bound) of events.
    t = await startApp({ config: { ...FAST, DELIVERY_INTERVAL_MS: interval, SEND_BUFFER_BYTES: 65_536 } });
    const a = await member();
    const readers = [await member(), await member()];
    const n = 1500;
    const replies = await burst(a.s, n, 4000); // 6 MB
    expect(replies.every((r) => r.type === "ok")).toBe(true);
    for (const r of readers) {
      expect(messageSeqs(await r.s.messages("lobby", n, 20_000))).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      expect(await r.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
    }
    expect(messageSeqs(await a.s.messages("lobby", n, 20_000))).toHaveLength(n);
  });
}

test("a graceful stop with megabytes held writes them all before the 1001", async () => {
  const { a, b } = await oneDelivered({ DELIVERY_INTERVAL_MS: 60_000, SEND_BUFFER_BYTES: 65_536 });
  const n = 1000;
  await burst(a.s, n, 4000); // held for a minute
  await t.app.shutdown();
  expect((await b.s.closed).code).toBe(1001);
  expect(messageSeqs(b.s.frames)).toEqual(Array.from({ length: n + 1 }, (_, i) => i + 1));
});

for (const interval of [0, INTERVAL]) {
  test(`DELIVERY_INTERVAL_MS=${interval}: a send followed at once by a leave: the sender still gets its own event, and nothing after`, async () => {
    t = await startApp({ config: { ...FAST, DELIVERY_INTERVAL_MS: interval } });
    const a = await member();
    const b = await member();
    await sendAll(a.s, ["one"]);
    const sent = a.s.request({ type: "send", room: "lobby", body: "two" });
    const left = a.s.request({ type: "leave", room: "lobby" });
    expect(await sent).toMatchObject({ type: "ok", seq: 2 });
    expect(await left).toMatchObject({ type: "ok" });
    expect(messageSeqs(await a.s.messages("lobby", 2))).toEqual([1, 2]);
    await sendAll(b.s, ["three"]);
    expect(messageSeqs(await b.s.messages("lobby", 3))).toEqual([1, 2, 3]);
    await a.s.request({ type: "ping" });
    expect(messageSeqs(a.s.frames)).toEqual([1, 2]);
  });
}

test("a room holds at most a quarter of SEND_BUFFER_BYTES of events: past it, it publishes without waiting for the interval", async () => {
  // 1 MiB send buffer: the room publishes once it holds 256 KiB, counted at 3 bytes a character.
  const { a, b } = await oneDelivered({ DELIVERY_INTERVAL_MS: 60_000, SEND_BUFFER_BYTES: 1_048_576 });
  // 20 events of about 4,100 characters: about 246,000 bytes counted, under the cap.
  await sendAll(a.s, Array.from({ length: 20 }, (_, i) => `${i}:`.padEnd(4000, "x")));
  await b.s.request({ type: "ping" });
  expect(messageSeqs(b.s.unclaimed)).toEqual([]);
  // One whose 4,000 characters JSON writes as 24,000 (\u0001 each): past the cap.
  await sendAll(a.s, ["\u0001".repeat(4000)]);
  expect(messageSeqs(await b.s.messages("lobby", 21))).toEqual(Array.from({ length: 21 }, (_, i) => i + 2));
});
