/**
 * Protocol violations written by hand over TCP. Bun (uWebSockets) enforces RFC 6455
 * itself before the app sees a frame; these tests pin what it does, and that the app
 * answers the cases the spec gives it (binary 1003, size 1009) with the spec's codes.
 *
 * Observed with bun 1.4.5, all as the RFC asks: the close frame carries the code below
 * and a reason such as "Received invalid UTF-8". For the protocol errors Bun closes
 * itself (1002, 1007, 1009), the app's `close` handler is told 1006 and the reason it
 * sent; the server maps the reason back to the code (`closeCodeSent`), so `/metrics`
 * counts those closes under the code the client saw (see the last test).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { encodeFrame, Opcode, RawWs, type FrameSpec } from "../../bench/lib/raw-ws.ts";
import { startApp, type TestApp, type TestSocket } from "../helpers.ts";

let t: TestApp;
let bystander: TestSocket;
const PING = JSON.stringify({ type: "ping", ref: 1 });
const closeFrame = (code: number, reason = "") =>
  ({ opcode: Opcode.close, payload: Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]) }) satisfies FrameSpec;

beforeAll(async () => {
  t = await startApp(); // default MAX_FRAME_BYTES: 65,536
  bystander = await t.connect();
});
afterAll(() => t.stop());

/** Opens a raw connection, writes `frames`, and returns how the server ended it. */
async function violate(...frames: FrameSpec[]): Promise<{ code: number | null; reason: string; replies: Array<Record<string, unknown>> }> {
  const w = await RawWs.open(t.port);
  for (const f of frames) w.frame(f);
  const end = await w.end(5000);
  expect(end.closeFrame).toBe(true);
  return { code: end.code, reason: end.reason, replies: w.json() };
}

/** The bystander connection still gets answers. */
async function othersUnaffected(): Promise<void> {
  expect(await bystander.request({ type: "ping" })).toMatchObject({ type: "ok" });
}

const text = (payload: string | Uint8Array, more: Partial<FrameSpec> = {}): FrameSpec => ({ opcode: Opcode.text, payload, ...more });

describe("RFC 6455 violations", () => {
  test("a well-formed exchange first: ping answered, client close 1000 echoed", async () => {
    const w = await RawWs.open(t.port);
    w.text(PING);
    expect(await w.reply(1)).toEqual({ type: "ok", ref: 1 });
    w.frame(closeFrame(1000));
    expect(await w.end()).toMatchObject({ code: 1000, closeFrame: true });
  });

  test("invalid UTF-8 in a text frame: 1007", async () => {
    expect((await violate(text(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])))).code).toBe(1007);
    // An encoded lone surrogate (ED A0 80) inside a JSON string is invalid UTF-8 too.
    const surrogate = Buffer.concat([Buffer.from('{"type":"ping","ref":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]);
    const r = await violate(text(surrogate));
    expect(r.code).toBe(1007);
    expect(r.replies).toEqual([]);
    await othersUnaffected();
  });

  test("valid UTF-8 split across fragments is accepted (the other side of 1007)", async () => {
    const bytes = Buffer.from('{"type":"ping","ref":"é€😀"}');
    const cut = bytes.indexOf(0xc3) + 1; // inside the two bytes of é
    const w = await RawWs.open(t.port);
    w.frame(text(bytes.subarray(0, cut), { fin: false }));
    w.frame({ opcode: Opcode.continuation, payload: bytes.subarray(cut) });
    expect(await w.reply("é€😀")).toEqual({ type: "ok", ref: "é€😀" });
    w.destroy();
  });

  test("invalid UTF-8 in a close reason: 1007", async () => {
    expect((await violate({ opcode: Opcode.close, payload: Buffer.from([0x03, 0xe8, 0xff]) })).code).toBe(1007);
  });

  test.each([3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf])("reserved opcode %i: 1002", async (opcode) => {
    expect((await violate({ opcode, payload: "x" })).code).toBe(1002);
  });

  test.each([
    ["RSV1", 4],
    ["RSV2", 2],
    ["RSV3", 1],
    ["all RSV bits", 7],
  ])("%s set on a text frame: 1002 (no extension was negotiated)", async (_name, rsv) => {
    const r = await violate(text(PING, { rsv }));
    expect(r.code).toBe(1002);
    expect(r.replies).toEqual([]);
    await othersUnaffected();
  });

  test("RSV1 set on a control frame: 1002", async () => {
    expect((await violate({ opcode: Opcode.ping, rsv: 4, payload: "x" })).code).toBe(1002);
  });

  test.each([
    ["ping", Opcode.ping],
    ["pong", Opcode.pong],
    ["close", Opcode.close],
  ])("fragmented control frame (%s with FIN clear): 1002", async (_name, opcode) => {
    const payload = opcode === Opcode.close ? Buffer.from([0x03, 0xe8]) : Buffer.from("x");
    expect((await violate({ opcode, fin: false, payload })).code).toBe(1002);
  });

  test("control frame payloads: 125 bytes pass (ping answered with its pong), 126 bytes close 1002", async () => {
    const w = await RawWs.open(t.port);
    const payload = "p".repeat(125);
    w.frame({ opcode: Opcode.ping, payload });
    const pong = await w.next((f) => f.opcode === Opcode.pong);
    expect(pong.payload.toString()).toBe(payload);
    w.frame({ opcode: Opcode.ping, payload: "p".repeat(126) });
    expect((await w.end()).code).toBe(1002);
    expect((await violate({ opcode: Opcode.close, payload: Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.alloc(124, 0x61)]) })).code).toBe(1002);
    expect((await violate({ opcode: Opcode.pong, payload: "q".repeat(126) })).code).toBe(1002);
    await othersUnaffected();
  });

  test("unmasked client frames: 1002 (text and control alike)", async () => {
    const r = await violate(text(PING, { mask: false }));
    expect(r.code).toBe(1002);
    expect(r.replies).toEqual([]);
    expect((await violate({ opcode: Opcode.ping, mask: false, payload: "x" })).code).toBe(1002);
    await othersUnaffected();
  });

  test("continuation without a start, and a new message inside a fragmented one: 1002", async () => {
    expect((await violate({ opcode: Opcode.continuation, payload: "x" })).code).toBe(1002);
    expect((await violate(text("{", { fin: false }), text("}"))).code).toBe(1002);
  });

  test("invalid close payloads: one byte, or a code that must not be sent (1005, 999): 1002", async () => {
    expect((await violate({ opcode: Opcode.close, payload: Buffer.from([0x03]) })).code).toBe(1002);
    expect((await violate(closeFrame(1005))).code).toBe(1002);
    expect((await violate(closeFrame(999))).code).toBe(1002);
  });

  test("binary frame: 1003 from the app, and no reply", async () => {
    const r = await violate({ opcode: Opcode.binary, payload: PING });
    expect(r).toMatchObject({ code: 1003, replies: [] });
    await othersUnaffected();
  });
});

describe("frame size limit (MAX_FRAME_BYTES, default 65,536)", () => {
  /** A ping request padded to exactly `bytes` bytes of UTF-8. */
  function pingOfSize(bytes: number, ref: number): string {
    const base = JSON.stringify({ type: "ping", ref, pad: "" });
    const s = JSON.stringify({ type: "ping", ref, pad: "x".repeat(bytes - base.length) });
    expect(Buffer.byteLength(s)).toBe(bytes);
    return s;
  }

  test("exactly 65,536 payload bytes are accepted and answered", async () => {
    const w = await RawWs.open(t.port);
    w.text(pingOfSize(65_536, 7));
    expect(await w.reply(7)).toEqual({ type: "ok", ref: 7 });
    w.destroy();
  });

  test("65,537 payload bytes close with 1009, without a reply", async () => {
    const r = await violate(text(pingOfSize(65_537, 8)));
    expect(r).toMatchObject({ code: 1009, replies: [] });
    await othersUnaffected();
  });

  test("the limit counts the whole message: fragments adding up to 65,537 close with 1009, to 65,536 pass", async () => {
    const over = Buffer.from(pingOfSize(65_537, 9));
    expect((await violate(text(over.subarray(0, 40_000), { fin: false }), { opcode: Opcode.continuation, payload: over.subarray(40_000) })).code).toBe(1009);
    const exact = Buffer.from(pingOfSize(65_536, 10));
    const w = await RawWs.open(t.port);
    w.frame(text(exact.subarray(0, 40_000), { fin: false }));
    w.frame({ opcode: Opcode.continuation, payload: exact.subarray(40_000) });
    expect(await w.reply(10)).toEqual({ type: "ok", ref: 10 });
    w.destroy();
  });

  test("a header declaring 2^40 bytes closes with 1009 at once, before any payload", async () => {
    const w = await RawWs.open(t.port);
    w.write(Buffer.from([0x81, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4]));
    expect((await w.end()).code).toBe(1009);
    await othersUnaffected();
  });

  test("a configured limit moves both sides: MAX_FRAME_BYTES=1024 accepts 1024, closes 1025 with 1009", async () => {
    const small = await startApp({ config: { MAX_FRAME_BYTES: 1024 } });
    try {
      const w = await RawWs.open(small.port);
      w.text(pingOfSize(1024, 1));
      expect(await w.reply(1)).toEqual({ type: "ok", ref: 1 });
      w.text(pingOfSize(1025, 2));
      expect((await w.end()).code).toBe(1009);
      expect(w.json()).toEqual([{ type: "ok", ref: 1 }]);
    } finally {
      await small.stop();
    }
  });
});

describe("what the app sees of Bun's own closes", () => {
  test("closes Bun makes itself (1002, 1007, 1009) reach the app as 1006 and a reason; /metrics counts the code the client saw", async () => {
    const app = await startApp();
    try {
      for (const spec of [text(PING, { mask: false }), text(Buffer.from([0xff])), { opcode: Opcode.binary, payload: "x" }]) {
        const w = await RawWs.open(app.port);
        w.frame(spec);
        await w.end();
      }
      const w = await RawWs.open(app.port);
      w.write(encodeFrame(text("x".repeat(70_000))));
      expect((await w.end()).code).toBe(1009);
      await Bun.sleep(50);
      // The client saw 1002, 1007, 1003 and 1009 (the handler was told 1006 for all but the app's own 1003).
      expect(Object.fromEntries(app.app.metrics.closes)).toEqual({ 1002: 1, 1007: 1, 1003: 1, 1009: 1 });
      // A connection that just drops is still 1006.
      const dropped = await RawWs.open(app.port);
      dropped.destroy();
      for (let i = 0; i < 100 && !app.app.metrics.closes.has(1006); i++) await Bun.sleep(5);
      expect(app.app.metrics.closes.get(1006)).toBe(1);
    } finally {
      await app.stop();
    }
  });

  test("a client's own close code is counted as sent only for 1000, 1001 and 1005; any other is 'other', so clients cannot add series or swell the server's codes", async () => {
    const app = await startApp({ config: { REQUEST_RATE: 1, REQUEST_BURST: 5, SEND_RATE: 0.5, SEND_BURST: 1 } });
    try {
      const settled = (n: number) => [...app.app.metrics.closes.values()].reduce((a, b) => a + b, 0) >= n;
      // The codes a client closes with: counted as sent, then as "other".
      for (const code of [1000, 1001, 3000, 4001, 4999, 1008, 1013]) {
        const w = await RawWs.open(app.port);
        w.frame(closeFrame(code, "bye"));
        await w.end();
      }
      const empty = await RawWs.open(app.port);
      empty.frame({ opcode: Opcode.close, payload: "" }); // no code: 1005
      await empty.end();
      for (let i = 0; i < 100 && !settled(8); i++) await Bun.sleep(5);
      expect(Object.fromEntries(app.app.metrics.closes)).toEqual({ 1000: 1, 1001: 1, 1005: 1, other: 5 });
      // The server's own 1008 is counted as 1008, as the client's was not.
      const flooder = await RawWs.open(app.port);
      for (let ref = 0; ref < 140; ref++) flooder.text({ type: "ping", ref });
      expect((await flooder.end()).code).toBe(1008);
      for (let i = 0; i < 100 && !settled(9); i++) await Bun.sleep(5);
      expect(Object.fromEntries(app.app.metrics.closes)).toEqual({ 1000: 1, 1001: 1, 1005: 1, other: 5, 1008: 1 });
      const scraped = await (await fetch(`${app.url}/metrics`)).text();
      expect(scraped).toContain('switchboard_connections_closed_total{code="other"} 5');
    } finally {
      await app.stop();
    }
  });
});
