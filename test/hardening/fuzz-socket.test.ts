import { afterAll, beforeAll, expect, test } from "bun:test";
import fc from "fast-check";
import { Opcode, RawWs } from "../../bench/lib/raw-ws.ts";
import { decodeRequest } from "../../src/protocol/index.ts";
import { signedIn, startApp, type TestApp } from "../helpers.ts";
import { anyFrame, DEEP_ARRAY, ERROR_CODES, expectedFor, MEGABYTE } from "./frames.ts";

const MAX_FRAME_BYTES = 4096;
const INVALID_FRAME_LIMIT = 5;
let t: TestApp;
let token: string;

beforeAll(async () => {
  t = await startApp({ config: { MAX_FRAME_BYTES, INVALID_FRAME_LIMIT } });
  const a = await signedIn(t, "fuzzer");
  token = a.token;
  expect(await a.s.request({ type: "join", room: "lobby" })).toMatchObject({ type: "ok" });
  await a.s.close();
});
afterAll(() => t.stop());

function rowCounts(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const table of ["users", "sessions", "messages", "rooms"]) {
    out[table] = (t.store.client.query(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  }
  return out;
}

/** A connection signed in as `fuzzer` (with the token, no hashing) and a member of `lobby`. */
async function member(): Promise<RawWs> {
  const w = await RawWs.open(t.port);
  w.text({ type: "auth", ref: "setup-auth", token });
  if ((await w.reply("setup-auth")).type !== "ok") {
    // A fuzzed `logout` revoked the session: sign in again for a new token.
    w.text({ type: "login", ref: "setup-login", username: "fuzzer", password: "correct horse battery" });
    const login = await w.reply("setup-login");
    expect(login).toMatchObject({ type: "ok" });
    token = login.token as string;
  }
  w.text({ type: "join", ref: "setup-join", room: "lobby" });
  expect(await w.reply("setup-join")).toMatchObject({ type: "ok" });
  w.frames.length = 0;
  return w;
}

const isReply = (f: Record<string, unknown>) => f.type === "ok" || f.type === "error";
/** Request types whose `ok` may write a row (signup, login: users/sessions; join: rooms; send: messages). */
const WRITERS = new Set(["signup", "login", "join", "send"]);

/**
 * Sends `texts` one after another on a fresh member connection, then a barrier
 * (`who`, which waits behind a pending sign-in like every request but ping), and
 * checks: one reply per frame with a spec code (the code decode predicts for a refused
 * frame), or the spec's close code; and no row written unless some frame was accepted
 * with `ok` by a request type that writes.
 */
async function exercise(texts: string[]): Promise<void> {
  const w = await member();
  const before = rowCounts();
  const sent: Array<{ text: string; tooBig: boolean }> = [];
  let invalidRun = 0;
  let expectClose: number | null = null;
  for (const text of texts) {
    const tooBig = Buffer.byteLength(text) > MAX_FRAME_BYTES;
    w.text(text);
    sent.push({ text, tooBig });
    if (tooBig) {
      expectClose = 1009;
      break;
    }
    invalidRun = decodeRequest(text).ok ? 0 : invalidRun + 1;
    if (invalidRun >= INVALID_FRAME_LIMIT) {
      expectClose = 1008;
      break;
    }
  }
  if (expectClose === null) {
    w.text({ type: "who", ref: "barrier", room: "lobby" });
    await w.reply("barrier");
    w.frame({ opcode: Opcode.close, payload: Buffer.from([0x03, 0xe8]) });
  }
  const ending = await w.end();
  if (expectClose !== null) expect(ending.code).toBe(expectClose);
  else expect(ending.code).toBe(1000);

  const replies = w.json().filter((f) => isReply(f) && f.ref !== "barrier");
  const answered = sent.filter((s) => !s.tooBig);
  expect(replies.length).toBe(answered.length);
  let wrote = false;
  for (const r of replies) {
    if (r.type === "error") {
      expect(ERROR_CODES.has(r.code as string)).toBe(true);
      expect(r.code).not.toBe("internal");
    }
  }
  // Refused frames: the reply with their ref (or the ref-less ones, in order) has the code decode predicts.
  for (const s of answered) {
    const d = decodeRequest(s.text);
    if (d.ok) {
      if (WRITERS.has(d.request.type)) {
        const r = d.request.ref === undefined ? undefined : replies.find((x) => x.ref === d.request.ref);
        if (r === undefined || r.type === "ok") wrote = true;
      }
      continue;
    }
    expect(ERROR_CODES.has(d.error.code)).toBe(true);
    const want = expectedFor(s.text);
    if (want.kind !== "bad_request_or_ok") expect(d.error.code).toBe(want.kind === "bad_type" ? "bad_request" : want.kind === "unknown_type" ? "unknown_type" : "bad_request");
    if (d.ref !== undefined) {
      const r = replies.find((x) => x.ref === d.ref && x.type === "error" && x.code === d.error.code);
      expect(r).toBeDefined();
    }
  }
  if (!wrote) expect(rowCounts()).toEqual(before);
}

test("fuzzed frames over a real socket: spec replies and close codes, no stray rows, server alive", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(anyFrame, { minLength: 1, maxLength: 8 }), async (texts) => {
      await exercise(texts);
    }),
    { numRuns: 120 },
  );
  const fresh = await t.connect();
  expect(await fresh.request({ type: "ping" })).toMatchObject({ type: "ok" });
});

test("hostile frames named in the brief, over a socket", async () => {
  await exercise([
    '{"token":{"length":{"toString":"x"}}}',
    '{"type":"auth","token":{"length":{"toString":"x"}}}',
    '{"__proto__":{"type":"ping"}}',
    '{"type":"ping","ref":"\\ud800"}',
    '{"type":"send","room":"lobby","body":"a\\u0000b","ref":"nul"}',
    '{"type":"join","room":"lobby","since":9007199254740993}',
  ]);
  // 10,000 deep: over a 4 KiB limit it is a 1009 close; under the default limit, a reply.
  await exercise([DEEP_ARRAY]);
  await exercise([`{"type":"send","room":"lobby","body":"${MEGABYTE}"}`]);
  const big = await startApp();
  try {
    const w = await RawWs.open(big.port);
    w.text(DEEP_ARRAY); // 20,000 bytes
    w.text({ type: "ping", ref: 1 });
    expect(await w.reply(1)).toEqual({ type: "ok", ref: 1 });
    expect(w.json()[0]).toMatchObject({ type: "error", code: "bad_request" });
    w.destroy();
  } finally {
    await big.stop();
  }
});

test("INVALID_FRAME_LIMIT on both sides: limit-1 invalid frames then a valid one keep the socket open; limit in a row close 1008", async () => {
  const w = await member();
  for (let i = 0; i < INVALID_FRAME_LIMIT - 1; i++) w.text("not json");
  w.text({ type: "ping", ref: "valid" }); // resets the count
  for (let i = 0; i < INVALID_FRAME_LIMIT - 1; i++) w.text("not json");
  w.text({ type: "ping", ref: "still-open" });
  expect(await w.reply("still-open")).toEqual({ type: "ok", ref: "still-open" });
  for (let i = 0; i < INVALID_FRAME_LIMIT; i++) w.text("{");
  expect((await w.end()).code).toBe(1008);
  const errors = w.json().filter((f) => f.type === "error");
  expect(errors.length).toBe(3 * INVALID_FRAME_LIMIT - 2);
  expect(errors.every((f) => f.code === "bad_request")).toBe(true);
});
