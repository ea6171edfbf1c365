import { afterEach, describe, expect, test } from "bun:test";
import { createClient, DEFAULT_RETRY_AFTER_MS, SwitchboardError, type ResultOf, type SwitchboardClient } from "../../src/client/index.ts";
import { startTestServer, type TestServer } from "../../src/testing.ts";
import { startProxy, type Proxy } from "./proxy.ts";
import { collect, fast, range } from "./util.ts";

let t: TestServer;
let proxy: Proxy | undefined;
afterEach(async () => {
  await proxy?.stop();
  proxy = undefined;
  await t?.stop();
});

async function rejection(p: Promise<unknown>): Promise<SwitchboardError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SwitchboardError);
    return e as SwitchboardError;
  }
  throw new Error("expected a rejection");
}

describe("requests", () => {
  test("signup, join, send, history, who, ping: typed results and the sender's own message event", async () => {
    t = await startTestServer();
    const client = await t.client(fast);
    expect(client.state).toBe("open");
    const got = collect(client);
    const { user, token } = await client.signup({ username: "ada_sdk", password: "correct horse battery" });
    expect(user.username).toBe("ada_sdk");
    expect(client.user).toEqual(user);
    expect(client.token).toBe(token);
    const joined: ResultOf<"join"> = await client.join({ room: "lobby" });
    expect(joined).toEqual({ room: "lobby", seq: 0, members: ["ada_sdk"] });
    const sent = await client.send({ room: "lobby", body: "hello" });
    expect(sent.seq).toBe(1);
    await got.waitFor(1);
    expect(got.messages[0]).toMatchObject({ type: "message", room: "lobby", seq: 1, user: "ada_sdk", body: "hello", at: sent.at });
    expect(got.messages[0]!.nonce).toMatch(/^c-[0-9a-f]{24}$/);
    expect(client.lastSeq("lobby")).toBe(1);
    expect(await client.history({ room: "lobby" })).toMatchObject({ hasMore: false, messages: [{ seq: 1, body: "hello" }] });
    expect(await client.who({ room: "lobby" })).toEqual({ members: ["ada_sdk"] });
    expect(await client.ping()).toEqual({});
    expect(client.outbox).toEqual([]);
  });

  test("server refusals reject with the spec's code; bad params are refused before sending, with issues", async () => {
    t = await startTestServer();
    const { client, username } = await t.signedIn(fast);
    const other = await t.client(fast);
    expect((await rejection(other.signup({ username: username.toUpperCase(), password: "correct horse battery" }))).code).toBe("username_taken");
    const wrong = await rejection(other.login({ username, password: "wrong password!" }));
    expect(wrong).toMatchObject({ code: "invalid_credentials", request: "login" });
    expect(wrong.fromClient).toBe(false);
    expect((await rejection(other.who({ room: "lobby" }))).code).toBe("unauthorized");

    const bad = await rejection(client.send({ room: "lobby", body: "" }));
    expect(bad.code).toBe("bad_request");
    expect(bad.issues?.map((i) => i.path)).toEqual(["body"]);
    expect((await rejection(client.join({ room: "Not A Room" }))).issues?.[0]?.path).toBe("room");
    // Sending to a room the client does not follow is refused without a round trip.
    expect(await rejection(client.send({ room: "elsewhere", body: "hi" }))).toMatchObject({ code: "not_joined" });
    expect(client.outbox).toEqual([]);
  });

  test("a reply that does not come in time rejects with timeout; the connection is kept", async () => {
    t = await startTestServer();
    proxy = startProxy(t.wsUrl);
    const client = await t.client({ ...fast, url: proxy.wsUrl });
    proxy.dropReplies = true;
    const err = await rejection(client.ping({ timeoutMs: 50 }));
    expect(err).toMatchObject({ code: "timeout", request: "ping" });
    expect(err.fromClient).toBe(true);
    proxy.dropReplies = false;
    expect(await client.ping()).toEqual({});
    expect(proxy.connections).toBe(1);
  });

  test("a request in flight when the connection drops rejects with disconnected", async () => {
    t = await startTestServer();
    proxy = startProxy(t.wsUrl);
    const client = await t.client({ ...fast, url: proxy.wsUrl });
    proxy.dropReplies = true;
    const pending = client.ping();
    const reconnecting = client.next("reconnecting");
    proxy.cut();
    expect((await rejection(pending)).code).toBe("disconnected");
    expect((await reconnecting).code).toBe(1006);
    proxy.dropReplies = false;
    await client.next("open");
  });

  test("close() rejects what waits and stops the client; requests afterwards reject with closed", async () => {
    t = await startTestServer();
    const { client } = await t.signedIn(fast);
    await client.join({ room: "lobby" });
    // The server stops (every connection closed with 1001): a send made now waits in the outbox.
    void t.app.shutdown();
    const waitingSend = rejection(client.send({ room: "lobby", body: "waiting" }));
    const closed = client.next("closed");
    client.close();
    expect(await closed).toEqual({ code: 1000, reason: "client closed" });
    const waiting = await waitingSend;
    expect([waiting.code, waiting.request]).toEqual(["closed", "send"]);
    expect(client.state).toBe("closed");
    expect((await rejection(client.ping())).code).toBe("closed");
    expect((await rejection(client.send({ room: "lobby", body: "late" }))).code).toBe("closed");
  });

  test("a join refused on the client (signed out) does not follow the room; signing in again does not join it", async () => {
    t = await startTestServer();
    const { client, username } = await t.signedIn({ ...fast, username: "ada_out" });
    await client.join({ room: "kept" });
    await client.logout();
    expect((await rejection(client.join({ room: "refused" }))).code).toBe("signed_out");
    expect(client.rooms).toEqual([]);
    await client.login({ username, password: "correct horse battery" });
    await client.ping();
    expect(client.rooms).not.toContain("refused");
    expect(await client.who({ room: "refused" })).toEqual({ members: [] });
  });
});

describe("frames from the server are validated, not trusted", () => {
  /** A fake server that answers each request with `reply(ref)` and can push raw frames. */
  function fakeServer(reply: (ref: number, type: string) => string | null) {
    const sockets = new Set<import("bun").ServerWebSocket<unknown>>();
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (req, srv) => (srv.upgrade(req) ? undefined : new Response("no", { status: 400 })),
      websocket: {
        open: (ws) => void sockets.add(ws),
        message(ws, m) {
          const f = JSON.parse(String(m)) as { ref: number; type: string };
          const out = reply(f.ref, f.type);
          if (out !== null) ws.send(out);
        },
      },
    });
    return {
      url: `ws://127.0.0.1:${server.port}/ws`,
      push: (frame: string) => sockets.forEach((ws) => ws.send(frame)),
      stop: () => server.stop(true),
    };
  }

  test("a reply that fails its result schema rejects with invalid_frame and is reported", async () => {
    const fake = fakeServer((ref, type) => (type === "who" ? JSON.stringify({ type: "ok", ref, members: "everyone" }) : null));
    const client = createClient({ url: fake.url, ...fast });
    try {
      await client.next("open");
      const errors: SwitchboardError[] = [];
      client.on("error", (e) => errors.push(e));
      const err = await rejection(client.who({ room: "lobby" }));
      expect(err).toMatchObject({ code: "invalid_frame", request: "who" });
      expect(err.issues?.[0]?.path).toBe("members");
      expect(errors.map((e) => e.code)).toEqual(["invalid_frame"]);
    } finally {
      client.close();
      await fake.stop();
    }
  });

  test("malformed events and non-JSON frames become error events; nothing is delivered", async () => {
    const fake = fakeServer(() => null);
    const client = createClient({ url: fake.url, ...fast });
    try {
      await client.next("open");
      const got = collect(client);
      const errors: SwitchboardError[] = [];
      client.on("error", (e) => errors.push(e));
      const third = client.next("error", () => errors.length === 3);
      fake.push("not json");
      fake.push(JSON.stringify({ type: "message", room: "lobby", seq: "1", user: "x", body: "hi", at: "yesterday" }));
      fake.push(JSON.stringify({ type: "error", code: "made_up", message: "?" }));
      await third;
      expect(errors.map((e) => e.code)).toEqual(["invalid_frame", "invalid_frame", "invalid_frame"]);
      expect(errors[1]!.issues?.map((i) => i.path).sort()).toEqual(["at", "seq"]);
      expect(got.messages).toEqual([]);
    } finally {
      client.close();
      await fake.stop();
    }
  });
});

// Compile-time checks: request params and results are inferred from the protocol schemas.
function typeChecks(client: SwitchboardClient) {
  void (async () => {
    const r = await client.history({ room: "lobby", before: 10, limit: 5 });
    const seq: number = r.messages[0]!.seq;
    void seq;
    // @ts-expect-error: limit is a number
    await client.history({ room: "lobby", limit: "5" });
    // @ts-expect-error: body is required
    await client.send({ room: "lobby" });
    // @ts-expect-error: join has no `user`
    (await client.join({ room: "lobby" })).user;
    // @ts-expect-error: no such event
    client.on("mesage", () => {});
  });
}
void typeChecks;

describe("options and timeouts", () => {
  test("the platform's WebSocket is accepted as the WebSocket option, types included", async () => {
    t = await startTestServer();
    // A type error here before the handler types were made bivariant (DOM and Bun types alike).
    const client = createClient({ ...fast, url: t.wsUrl, WebSocket: globalThis.WebSocket });
    await client.next("open");
    expect(await client.ping()).toEqual({});
    client.close();
  });

  test("listeners added right after createClient see the first connection's events", async () => {
    t = await startTestServer();
    const client = createClient({ ...fast, url: t.wsUrl });
    expect(client.state).toBe("connecting");
    const seen: string[] = [];
    client.on("state", ({ state, previous }) => seen.push(`state ${previous}->${state}`));
    client.on("connecting", () => seen.push("connecting"));
    client.on("open", () => seen.push("open"));
    await client.next("open");
    expect(seen).toEqual(["state closed->connecting", "connecting", "state connecting->open", "open"]);
    // Closed before the events go out: none of them.
    const other = createClient({ ...fast, url: t.wsUrl });
    const early: string[] = [];
    other.on("connecting", () => early.push("connecting"));
    other.on("state", ({ state }) => early.push(state));
    other.close();
    await Promise.resolve();
    await Promise.resolve();
    expect(early).toEqual(["closed"]);
    client.close();
  });

  test("timeouts: Infinity (or past 2^31-1 ms) waits without limit; zero, negative or NaN is a RangeError", async () => {
    t = await startTestServer();
    expect(() => createClient({ url: t.wsUrl, autoConnect: false, requestTimeoutMs: 0 })).toThrow(RangeError);
    expect(() => createClient({ url: t.wsUrl, autoConnect: false, requestTimeoutMs: Number.NaN })).toThrow(RangeError);
    expect(() => createClient({ url: t.wsUrl, autoConnect: false, backoff: { minMs: 10 } as never })).toThrow(RangeError);
    expect(() => createClient({ url: t.wsUrl, autoConnect: false, backoff: { minMs: 100, maxMs: 10 } })).toThrow(RangeError);
    expect(() => createClient({ url: t.wsUrl, autoConnect: false, heartbeatMs: Number.NaN })).toThrow(RangeError);
    const client = await t.client({ ...fast, requestTimeoutMs: Infinity });
    // Before: these fired at once (setTimeout turns Infinity and 2^40 into 1 ms).
    expect(await client.ping({ timeoutMs: Infinity })).toEqual({});
    expect(await client.ping({ timeoutMs: 2 ** 40 })).toEqual({});
    const later = client.next("joined", () => true, 2 ** 40);
    await Bun.sleep(5);
    await client.signup({ username: "tim_eout", password: "correct horse battery" });
    await client.join({ room: "lobby" });
    expect(await later).toMatchObject({ room: "lobby" });
    for (const bad of [0, -1, Number.NaN]) {
      await expect(client.ping({ timeoutMs: bad })).rejects.toThrow(RangeError);
      await expect(client.next("open", () => true, bad)).rejects.toThrow(RangeError);
    }
  });

  test("startTestServer's client() rejects, instead of hanging, when it cannot connect", async () => {
    t = await startTestServer();
    const url = t.wsUrl;
    await t.stop();
    const started = Date.now();
    await expect(t.client(fast)).rejects.toThrow(`could not connect to ${url}`);
    expect(Date.now() - started).toBeLessThan(fast.requestTimeoutMs);
  });
});

describe("pacing: requests in flight and rate_limited answers", () => {
  /** A fake server that records each request frame (with when it came) and answers only when told. */
  function holdingServer() {
    const frames: Array<{ ref: number; type: string; room?: string; at: number; ws: import("bun").ServerWebSocket<unknown> }> = [];
    let arrived: (() => void) | null = null;
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (req, srv) => (srv.upgrade(req) ? undefined : new Response("no", { status: 400 })),
      websocket: {
        message(ws, m) {
          const f = JSON.parse(String(m)) as { ref: number; type: string; room?: string };
          frames.push({ ...f, at: Date.now(), ws });
          arrived?.();
        },
      },
    });
    return {
      url: `ws://127.0.0.1:${server.port}/ws`,
      frames,
      /** Resolves once `n` request frames have come in. */
      async received(n: number): Promise<void> {
        while (frames.length < n) await new Promise<void>((resolve) => (arrived = resolve));
      },
      answer(i: number, reply: object): void {
        const f = frames[i]!;
        f.ws.send(JSON.stringify({ ref: f.ref, ...reply }));
      },
      stop: () => server.stop(true),
    };
  }

  test("at most maxInFlight requests are written unanswered; each answer lets the next one out, in call order", async () => {
    const fake = holdingServer();
    const client = createClient({ url: fake.url, ...fast, heartbeatMs: 0, maxInFlight: 3 });
    try {
      await client.next("open");
      const calls = range(7).map((i) => client.who({ room: `r${i}` }));
      await fake.received(3);
      // What must not happen has no event to await: a bounded wait for frames the client should not write.
      await Bun.sleep(50);
      expect(fake.frames.length).toBe(3);
      fake.answer(1, { type: "ok", members: [] });
      await fake.received(4);
      await Bun.sleep(50);
      expect(fake.frames.length).toBe(4);
      for (let i = 0; i < 7; i++) {
        if (i !== 1) {
          await fake.received(Math.min(7, i + 3));
          fake.answer(i, { type: "ok", members: [] });
        }
      }
      expect((await Promise.all(calls)).length).toBe(7);
      expect(fake.frames.map((f) => f.room)).toEqual(range(7).map((i) => `r${i}`)); // written in call order
    } finally {
      client.close();
      await fake.stop();
    }
  });

  test("a rate_limited answer holds every request until retryAfterMs has passed, and halves the window; a sign-in's does not", async () => {
    const fake = holdingServer();
    const client = createClient({ url: fake.url, ...fast, heartbeatMs: 0, maxInFlight: 4 });
    try {
      await client.next("open");
      const calls = range(8).map((i) => client.who({ room: `r${i}` }).catch((e: SwitchboardError) => e.code));
      await fake.received(4);
      const refusedAt = Date.now();
      fake.answer(0, { type: "error", code: "rate_limited", message: "slow down", retryAfterMs: 200 });
      fake.answer(1, { type: "error", code: "rate_limited", message: "slow down", retryAfterMs: 150 });
      fake.answer(2, { type: "ok", members: [] });
      fake.answer(3, { type: "ok", members: [] });
      await fake.received(5);
      expect(fake.frames[4]!.at - refusedAt).toBeGreaterThanOrEqual(195);
      // The window is 2 now (halved once for the two refusals of one pause).
      await fake.received(6);
      await Bun.sleep(50);
      expect(fake.frames.length).toBe(6);
      for (let i = 4; i < 8; i++) {
        await fake.received(Math.min(8, i + 2));
        fake.answer(i, { type: "ok", members: [] });
      }
      expect(await Promise.all(calls)).toEqual(["rate_limited", "rate_limited", ...range(6).map(() => ({ members: [] }))]);

      // A sign-in refused for a minute says nothing of other requests: they go at once.
      const login = client.login({ username: "ada", password: "correct horse battery" }).catch((e: SwitchboardError) => e.code);
      await fake.received(9);
      fake.answer(8, { type: "error", code: "rate_limited", message: "too many failed sign-ins", retryAfterMs: 60_000 });
      expect(await login).toBe("rate_limited");
      const who = client.who({ room: "after" });
      await fake.received(10);
      fake.answer(9, { type: "ok", members: ["x"] });
      expect(await who).toEqual({ members: ["x"] });
    } finally {
      client.close();
      await fake.stop();
    }
  });

  test("a rate_limited answer without retryAfterMs (the spec makes it optional) waits DEFAULT_RETRY_AFTER_MS, and says so", async () => {
    const fake = holdingServer();
    const client = createClient({ url: fake.url, ...fast, heartbeatMs: 0 });
    try {
      await client.next("open");
      const refused = client.who({ room: "a" }).catch((e: unknown) => e);
      await fake.received(1);
      const refusedAt = Date.now();
      fake.answer(0, { type: "error", code: "rate_limited", message: "slow down" });
      const e = await refused;
      if (!SwitchboardError.is(e, "rate_limited")) throw new Error(`expected rate_limited, got ${String(e)}`);
      expect(e.retryAfterMs).toBe(DEFAULT_RETRY_AFTER_MS);
      const next = client.who({ room: "b" });
      await fake.received(2);
      expect(fake.frames[1]!.at - refusedAt).toBeGreaterThanOrEqual(DEFAULT_RETRY_AFTER_MS - 5);
      fake.answer(1, { type: "ok", members: [] });
      expect(await next).toEqual({ members: [] });
    } finally {
      client.close();
      await fake.stop();
    }
  });

  test("a burst of calls against a small request budget: refused ones reject rate_limited, the client stays open (without the pacing, 1008)", async () => {
    // A budget of 10 requests (SEND_BURST lowered to allow it), refilled at 200 a second.
    t = await startTestServer({ config: { SEND_RATE: 1, SEND_BURST: 5, REQUEST_RATE: 200, REQUEST_BURST: 10 } });
    // The default window (32) is three times this burst: the server closes only at 128 into debt.
    const { client: paced } = await t.signedIn(fast);
    const outcomes = await Promise.all(range(200).map((i) => paced.who({ room: `r${i}` }).then(() => "ok", (e: SwitchboardError) => e.code)));
    expect(outcomes.filter((o) => o !== "ok" && o !== "rate_limited")).toEqual([]);
    expect(outcomes.filter((o) => o === "rate_limited").length).toBeGreaterThan(0);
    expect(paced.state).toBe("open");
    // The bucket may be empty still (the last calls spent it): a ping refused now holds
    // the client's next request until its retryAfterMs, and that one passes.
    const first = await paced.ping().then(() => "ok", (e: SwitchboardError) => e.code);
    if (first !== "ok") {
      expect(first).toBe("rate_limited");
      expect(await paced.ping()).toEqual({});
    }

    // The other side: a window of 1,000 writes all 200 at once, and the server closes with 1008.
    const { client: unpaced } = await t.signedIn({ ...fast, maxInFlight: 1000 });
    const closed = unpaced.next("closed");
    await Promise.all(range(200).map((i) => unpaced.who({ room: `r${i}` }).catch(() => {})));
    expect((await closed).code).toBe(1008);
    expect(unpaced.state).toBe("closed");
  });

  test("requests still waiting their turn when the connection drops reject disconnected, saying they were never written", async () => {
    const fake = holdingServer();
    const client = createClient({ url: fake.url, ...fast, heartbeatMs: 0, maxInFlight: 1 });
    try {
      await client.next("open");
      const written = client.who({ room: "a" }).catch((e: SwitchboardError) => e);
      const waiting = client.who({ room: "b" }).catch((e: SwitchboardError) => e);
      await fake.received(1);
      fake.frames[0]!.ws.close(1011, "gone");
      const [w, q] = (await Promise.all([written, waiting])) as SwitchboardError[];
      expect([w!.code, q!.code]).toEqual(["disconnected", "disconnected"]);
      expect(w!.message).not.toContain("never written");
      expect(q!.message).toContain("never written");
      expect(fake.frames.length).toBe(1);
    } finally {
      client.close();
      await fake.stop();
    }
  });

  test("once the close frame has come in (CLOSING), waiting requests are not written: the close event rejects them as never written", async () => {
    // A WebSocket of our own: a real one cannot be held between its close frame and its close event.
    const sockets: FakeWebSocket[] = [];
    class FakeWebSocket {
      readyState = 0;
      readonly sent: string[] = [];
      onopen: ((e: unknown) => void) | null = null;
      onmessage: ((e: { data: unknown }) => void) | null = null;
      onclose: ((e: { code: number; reason: string }) => void) | null = null;
      onerror: ((e: unknown) => void) | null = null;
      constructor(readonly url: string) {
        sockets.push(this);
      }
      send(data: string): void {
        this.sent.push(data);
      }
      close(): void {
        this.readyState = 3;
      }
    }
    const client = createClient({ url: "ws://fake.invalid/ws", WebSocket: FakeWebSocket, ...fast, heartbeatMs: 0, maxInFlight: 1 });
    try {
      while (sockets.length === 0) await Bun.sleep(0);
      const ws = sockets[0]!;
      const opened = client.next("open");
      ws.readyState = 1;
      ws.onopen?.({});
      await opened;
      const written = client.who({ room: "a" });
      const waiting = client.who({ room: "b" }).catch((e: unknown) => e);
      while (ws.sent.length === 0) await Bun.sleep(0);
      await Bun.sleep(0);
      expect(ws.sent.length).toBe(1); // the window is 1
      const { ref } = JSON.parse(ws.sent[0]!) as { ref: number };
      ws.readyState = 2; // the server's close frame came in: the close event follows
      ws.onmessage?.({ data: JSON.stringify({ type: "ok", ref, members: [] }) });
      expect(await written).toEqual({ members: [] });
      await Bun.sleep(0); // the next waiting request would be written from a later turn
      expect(ws.sent.length).toBe(1);
      ws.readyState = 3;
      ws.onclose?.({ code: 1001, reason: "going away" });
      const e = await waiting;
      if (!SwitchboardError.is(e, "disconnected")) throw new Error(`expected disconnected, got ${String(e)}`);
      expect(e.message).toContain("never written");
      expect(ws.sent.length).toBe(1);
    } finally {
      client.close();
    }
  });

  test("maxInFlight must be an integer, 1 or more", () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) {
      expect(() => createClient({ url: "ws://127.0.0.1:1/ws", autoConnect: false, maxInFlight: bad })).toThrow(RangeError);
    }
  });
});
