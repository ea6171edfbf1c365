import { afterEach, describe, expect, test } from "bun:test";
import { createArgon2Hasher } from "../../src/features/accounts/password.ts";
import { freshStore, manualArgon2, signedIn, startApp, uname, type TestApp } from "../helpers.ts";

let t: TestApp;
afterEach(() => t?.stop());

/** A ping frame padded with an ignored field to exactly `bytes` bytes. */
function pingOfSize(bytes: number): string {
  const head = '{"type":"ping","ref":"big","pad":"';
  const tail = '"}';
  return head + "x".repeat(bytes - head.length - tail.length) + tail;
}

describe("HTTP", () => {
  test("plain GET /ws is 426 Upgrade Required", async () => {
    t = await startApp();
    const r = await fetch(`${t.url}/ws`);
    expect(r.status).toBe(426);
    expect(r.headers.get("upgrade")).toBe("websocket");
  });

  test("/healthz is 200 while the database answers and 503 when it does not", async () => {
    const store = freshStore();
    t = await startApp({ store });
    const ok = await fetch(`${t.url}/healthz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: "ok" });
    store.close();
    const down = await fetch(`${t.url}/healthz`);
    expect(down.status).toBe(503);
  });

  test("/healthz is 503 while the database refuses writes (a read-only file, a full disk) and the sends fail; 200 again once it takes one", async () => {
    t = await startApp();
    const a = await signedIn(t);
    await a.s.request({ type: "join", room: "w" });
    // Writes refused, as by a read-only file: SQLITE_READONLY.
    t.store.client.run("PRAGMA query_only = ON");
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200); // nothing has failed yet
    expect(await a.s.request({ type: "send", room: "w", body: "lost" })).toMatchObject({ type: "error", code: "internal" });
    const down = await fetch(`${t.url}/healthz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({ status: "unavailable", reason: "the database refuses writes" });
    expect((await fetch(`${t.url}/healthz`)).status).toBe(503); // still refused: asked again each time
    t.store.client.run("PRAGMA query_only = OFF");
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    // Nothing was burned: the next message is seq 1.
    expect(await a.s.request({ type: "send", room: "w", body: "kept" })).toMatchObject({ type: "ok", seq: 1 });
    // A signup refused the same way counts too (its session INSERT fails).
    t.store.client.run("PRAGMA query_only = ON");
    const s = await t.connect();
    expect(await s.request({ type: "signup", username: uname(), password: "correct horse battery" })).toMatchObject({ code: "internal" });
    expect((await fetch(`${t.url}/healthz`)).status).toBe(503);
    t.store.client.run("PRAGMA query_only = OFF");
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });

  test("a write refused by a rule (a constraint, a trigger) is not the database refusing writes: /healthz stays 200", async () => {
    t = await startApp();
    const a = await signedIn(t);
    await a.s.request({ type: "join", room: "w" });
    t.store.client.run("CREATE TRIGGER refuse_all BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END");
    expect(await a.s.request({ type: "send", room: "w", body: "x" })).toMatchObject({ type: "error", code: "internal" });
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
  });

  test("unknown paths are 404", async () => {
    t = await startApp();
    expect((await fetch(`${t.url}/nope`)).status).toBe(404);
  });
});

describe("origin check", () => {
  test("a foreign browser origin is refused with 403 before the upgrade; no Origin, same origin and listed ones pass", async () => {
    t = await startApp({ config: { allowedOrigins: ["https://chat.example.com"] } });
    const upgrade = (origin?: string) =>
      fetch(`${t.url}/ws`, {
        headers: {
          Upgrade: "websocket",
          Connection: "Upgrade",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
          "Sec-WebSocket-Version": "13",
          ...(origin ? { Origin: origin } : {}),
        },
      }).then((r) => r.status);
    expect(await upgrade("https://evil.example.com")).toBe(403);
    expect(await upgrade("null")).toBe(403);
    expect(await upgrade("https://chat.example.com")).toBe(101);
    expect(await upgrade(t.url)).toBe(101);
    expect(await upgrade()).toBe(101);
    await expect(t.connect({ headers: { Origin: "https://evil.example.com" } })).rejects.toThrow();
    const s = await t.connect({ headers: { Origin: "https://chat.example.com" } });
    expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  });
});

describe("host check (ALLOWED_HOSTS)", () => {
  /** The status of a raw HTTP/1.1 request with this Host header (fetch would set its own). */
  async function statusFor(port: number, host: string, path: string, headers: Record<string, string> = {}): Promise<number> {
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${host}`, "Connection: close", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), "", ""];
    let text = "";
    const { promise, resolve } = Promise.withResolvers<void>();
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, chunk) {
          text += chunk.toString();
          if (text.includes("\r\n")) resolve();
        },
        close: () => resolve(),
      },
    });
    socket.write(lines.join("\r\n"));
    await promise;
    socket.end();
    return Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]);
  }
  const upgradeHeaders = (origin: string) => ({
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    Origin: origin,
  });

  test("a name not listed gets 421, before the upgrade (DNS rebinding: Origin and Host of one foreign name); listed names, subdomains of a .name and IP addresses pass", async () => {
    t = await startApp({ config: { ALLOWED_HOSTS: "chat.example.com, .example.org" } });
    // A rebinding page: its own name for both headers, which the Origin check alone passes.
    expect(await statusFor(t.port, "evil.example:8081", "/ws", upgradeHeaders("http://evil.example:8081"))).toBe(421);
    expect(await statusFor(t.port, "evil.example", "/healthz")).toBe(421);
    expect(await statusFor(t.port, "chat.example.com.evil.example", "/healthz")).toBe(421);
    expect(await statusFor(t.port, "chat.example.com:8081", "/ws", upgradeHeaders("http://chat.example.com:8081"))).toBe(101);
    expect(await statusFor(t.port, "CHAT.example.com.", "/healthz")).toBe(200);
    expect(await statusFor(t.port, "example.org", "/healthz")).toBe(200);
    expect(await statusFor(t.port, "a.b.example.org", "/healthz")).toBe(200);
    expect(await statusFor(t.port, `127.0.0.1:${t.port}`, "/healthz")).toBe(200);
    expect(await statusFor(t.port, "[::1]:8081", "/healthz")).toBe(200);
  });

  test("without ALLOWED_HOSTS (the default) any name is answered", async () => {
    t = await startApp();
    expect(await statusFor(t.port, "evil.example:8081", "/ws", upgradeHeaders("http://evil.example:8081"))).toBe(101);
    expect(await statusFor(t.port, "evil.example", "/healthz")).toBe(200);
  });
});

describe("frames", () => {
  test("a frame of exactly the size limit passes; one byte more closes with 1009", async () => {
    t = await startApp();
    const s = await t.connect();
    const exact = pingOfSize(65_536);
    expect(Buffer.byteLength(exact)).toBe(65_536);
    expect(await s.request(JSON.parse(exact))).toMatchObject({ type: "ok", ref: "big" });
    s.sendRaw(pingOfSize(65_537));
    expect((await s.closed).code).toBe(1009);
    // The server lives on.
    expect(await (await t.connect()).request({ type: "ping" })).toMatchObject({ type: "ok" });
  });

  test("the frame size limit is configurable", async () => {
    t = await startApp({ config: { MAX_FRAME_BYTES: 1024 } });
    const s = await t.connect();
    expect(await s.request(JSON.parse(pingOfSize(1024)))).toMatchObject({ type: "ok" });
    s.sendRaw(pingOfSize(1025));
    expect((await s.closed).code).toBe(1009);
  });

  test("a binary frame closes with 1003", async () => {
    t = await startApp();
    const s = await t.connect();
    s.sendRaw(new TextEncoder().encode('{"type":"ping"}'));
    expect((await s.closed).code).toBe(1003);
  });

  test("9 invalid frames in a row are answered; the 10th closes with 1008", async () => {
    t = await startApp();
    const s = await t.connect();
    for (let i = 0; i < 9; i++) s.sendRaw(i % 2 ? "not json" : '{"type":"nope"}');
    expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
    // The valid ping reset the count: 9 more are still fine.
    for (let i = 0; i < 9; i++) s.sendRaw("[1,2]");
    expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
    for (let i = 0; i < 10; i++) s.sendRaw("{");
    expect((await s.closed).code).toBe(1008);
    expect(s.frames.filter((f) => f.type === "error")).toHaveLength(28);
  });

  test("a request that is valid but refused (not_joined) does not count as invalid", async () => {
    t = await startApp({ config: { INVALID_FRAME_LIMIT: 2 } });
    const { s } = await signedIn(t);
    s.sendRaw("nope");
    for (let i = 0; i < 5; i++) expect(await s.request({ type: "send", room: "x", body: "b" })).toMatchObject({ code: "not_joined" });
    s.sendRaw("nope");
    expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
  });
});

describe("request validation", () => {
  const cases: Array<[string, string, Record<string, unknown>]> = [
    ["not JSON", "{", { code: "bad_request" }],
    ["an array", "[]", { code: "bad_request" }],
    ["a string", '"ping"', { code: "bad_request" }],
    ["null", "null", { code: "bad_request" }],
    ["no type", '{"ref":1}', { ref: 1, code: "bad_request", issues: [{ path: "type" }] }],
    ["type not a string", '{"type":5,"ref":1}', { ref: 1, code: "bad_request" }],
    ["unknown type", '{"type":"Ping","ref":1}', { ref: 1, code: "unknown_type" }],
    ["ref of 65 chars", `{"type":"ping","ref":"${"r".repeat(65)}"}`, { code: "bad_request", issues: [{ path: "ref" }] }],
    ["fractional ref", '{"type":"ping","ref":1.5}', { code: "bad_request" }],
    ["unsafe integer ref", '{"type":"ping","ref":9007199254740992}', { code: "bad_request" }],
    ["object ref", '{"type":"ping","ref":{}}', { code: "bad_request" }],
    ["a number as a string", '{"type":"history","ref":2,"room":"a","limit":"10"}', { ref: 2, code: "bad_request", issues: [{ path: "limit" }] }],
    ["a fractional limit", '{"type":"history","ref":2,"room":"a","limit":2.5}', { ref: 2, code: "bad_request" }],
    ["a hostile length", '{"type":"auth","ref":3,"token":{"length":{"toString":"x"}}}', { ref: 3, code: "bad_request" }],
  ];
  for (const [name, frame, expected] of cases) {
    test(`${name} is refused`, async () => {
      t = await startApp();
      const s = await t.connect();
      s.sendRaw(frame);
      const r = await s.next();
      expect(r).toMatchObject({ type: "error", ...expected });
      expect(r.message).toBeString();
      if (!("ref" in expected)) expect("ref" in r).toBe(false);
    });
  }

  test("ref at the limits: 64 chars and the largest safe integer are echoed", async () => {
    t = await startApp();
    const s = await t.connect();
    const ref64 = "r".repeat(64);
    expect(await s.request({ type: "ping", ref: ref64 })).toEqual({ type: "ok", ref: ref64 });
    expect(await s.request({ type: "ping", ref: Number.MAX_SAFE_INTEGER })).toEqual({ type: "ok", ref: Number.MAX_SAFE_INTEGER });
    expect(await s.request({ type: "ping", ref: -3 })).toEqual({ type: "ok", ref: -3 });
  });

  test("unknown extra fields are ignored", async () => {
    t = await startApp();
    const s = await t.connect();
    expect(await s.request({ type: "ping", extra: { deep: [1] }, __proto__x: 1 })).toMatchObject({ type: "ok" });
  });
});

describe("graceful shutdown", () => {
  test("requests waiting behind a sign-in are answered before the 1001", async () => {
    const m = manualArgon2();
    t = await startApp({ config: { SEND_RATE: 1000, SEND_BURST: 1000 }, hasher: createArgon2Hasher({ concurrency: 1, queue: 10, argon2: m.argon2 }) });
    await m.untilStarted(1);
    m.finishNext(); // the dummy hash the account service makes at start
    const s = await t.connect();
    const signup = s.request({ type: "signup", username: "ada_down", password: "correct horse battery" });
    const held = [s.request({ type: "join", room: "lobby" }), ...[1, 2, 3, 4, 5].map((i) => s.request({ type: "send", room: "lobby", body: `m${i}` }))];
    await s.request({ type: "ping" }); // not held: its answer means every frame before it was read
    await m.untilStarted(2);
    const down = t.app.shutdown();
    m.finishNext(); // the hash ends while the server is stopping
    await down;
    expect(await signup).toMatchObject({ type: "ok", user: { username: "ada_down" } });
    const replies = await Promise.all(held);
    expect(replies.map((r) => r.type)).toEqual(["ok", "ok", "ok", "ok", "ok", "ok"]);
    expect(replies.slice(1).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect((await s.closed).code).toBe(1001);
  });
});
