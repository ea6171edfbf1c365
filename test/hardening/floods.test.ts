import { afterEach, expect, test } from "bun:test";
import { RawWs } from "../../bench/lib/raw-ws.ts";
import { signedIn, startApp, type TestApp } from "../helpers.ts";

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
  for (const r of limited) expect(r.retryAfterMs).toBeGreaterThan(0);
  // Accepted sends got gapless seqs, and the other member received exactly those, in order.
  expect(ok.map((r) => r.seq)).toEqual(ok.map((_, i) => i + 1));
  const got = await other.s.messages("flood", ok.length);
  expect(got.map((m) => m.seq)).toEqual(ok.map((_, i) => i + 1));
  expect(await other.s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  const rows = t.store.client.query("SELECT count(*) AS n FROM messages").get() as { n: number };
  expect(rows.n).toBe(ok.length);
  // After waiting out retryAfterMs, the flooder may send again.
  await Bun.sleep((limited.at(-1)?.retryAfterMs as number) + 10);
  expect(await flooder.s.request({ type: "send", room: "flood", body: "again" })).toMatchObject({ type: "ok" });
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
