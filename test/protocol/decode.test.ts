import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { MAX_NESTING, nestsTooDeep } from "../../src/protocol/decode.ts";
import { decodeRequest, Ref, requestTypes } from "../../src/protocol/index.ts";
import { BODY_MAX_CHARS, codePoints } from "../../src/protocol/limits.ts";

const accepted: Array<[string, Record<string, unknown>]> = [
  ['{"type":"ping"}', { type: "ping" }],
  ['{"type":"ping","ref":0}', { type: "ping", ref: 0 }],
  ['{"type":"ping","ref":"","extra":1}', { type: "ping", ref: "" }],
  ['{"type":"signup","ref":"a","username":"ada","password":"12345678"}', { type: "signup", ref: "a", username: "ada", password: "12345678" }],
  ['{"username":"ada","password":"12345678"}', { type: "signup", username: "ada", password: "12345678" }],
  ['{"type":"login","username":"x","password":"y"}', { type: "login", username: "x", password: "y" }],
  ['{"type":"auth","token":"t"}', { type: "auth", token: "t" }],
  ['{"type":"logout","all":true}', { type: "logout", all: true }],
  ['{"type":"join","room":"lobby","since":0}', { type: "join", room: "lobby", since: 0 }],
  ['{"type":"leave","room":"a"}', { type: "leave", room: "a" }],
  ['{"type":"send","room":"a","body":"b","nonce":"n"}', { type: "send", room: "a", body: "b", nonce: "n" }],
  ['{"type":"history","room":"a","before":5,"limit":100}', { type: "history", room: "a", before: 5, limit: 100 }],
  ['{"type":"who","room":"a","ref":-7}', { type: "who", room: "a", ref: -7 }],
];

const refused: Array<[string, string, string[]]> = [
  ["", "bad_request", []],
  ["[]", "bad_request", []],
  ['{"type":null}', "bad_request", ["type"]],
  ['{"type":"PING"}', "unknown_type", []],
  ['{"type":"toString"}', "unknown_type", []],
  ['{"type":"__proto__"}', "unknown_type", []],
  ['{"type":"ping","ref":true}', "bad_request", ["ref"]],
  ['{"type":"ping","ref":[1]}', "bad_request", ["ref"]],
  ['{"type":"ping","ref":1e300}', "bad_request", ["ref"]],
  ['{"type":"logout","all":"yes"}', "bad_request", ["all"]],
  ['{"type":"join","room":"lobby","since":-1}', "bad_request", ["since"]],
  ['{"type":"join","room":"lobby","since":"3"}', "bad_request", ["since"]],
  ['{"type":"send","room":"a"}', "bad_request", ["body"]],
  ['{"type":"send","room":"a","body":5,"nonce":5}', "bad_request", ["body", "nonce"]],
  ['{"type":"history","room":"a","limit":null}', "bad_request", ["limit"]],
  // Fails two checks (safe integer, at most 100): one entry for the field.
  ['{"type":"history","room":"a","limit":1e300}', "bad_request", ["limit"]],
  ['{"username":"ada"}', "bad_request", ["type"]],
];

describe("decodeRequest", () => {
  for (const [text, request] of accepted) {
    test(`accepts ${text}`, () => {
      expect(decodeRequest(text)).toEqual({ ok: true, request: request as never });
    });
  }
  for (const [text, code, paths] of refused) {
    test(`refuses ${text || "(empty)"} with ${code}`, () => {
      const d = decodeRequest(text);
      expect(d.ok).toBe(false);
      if (d.ok) return;
      expect(d.error.code).toBe(code as never);
      expect(d.error.message).toBeString();
      expect((d.error.extra.issues ?? []).map((i) => i.path)).toEqual(paths);
    });
  }

  test("a field failing two checks is listed once, with both messages", () => {
    const d = decodeRequest('{"type":"history","room":"a","limit":1e300}');
    expect(d.ok).toBe(false);
    if (d.ok) return;
    expect(d.error.extra.issues).toEqual([
      { path: "limit", message: "Too big: expected int to be <=9007199254740991; Too big: expected number to be <=100" },
    ]);
  });

  test("lengths are counted in code points: 4000 emoji pass as a body, 4001 do not", () => {
    const send = (body: string) => decodeRequest(JSON.stringify({ type: "send", room: "a", body })).ok;
    expect(send("😀".repeat(4000))).toBe(true);
    expect(send("😀".repeat(4001))).toBe(false);
    expect(send("a".repeat(4000))).toBe(true);
    expect(send("a".repeat(3999) + "😀")).toBe(true);
    expect(send("a".repeat(4000) + "😀")).toBe(false);
  });

  test("the demo page's count (codePoints, BODY_MAX_CHARS) agrees with the schema's on both sides", () => {
    const send = (body: string) => decodeRequest(JSON.stringify({ type: "send", room: "a", body })).ok;
    for (const body of ["😀".repeat(BODY_MAX_CHARS), "😀".repeat(BODY_MAX_CHARS + 1), "é".repeat(BODY_MAX_CHARS), `${"a".repeat(BODY_MAX_CHARS - 1)}👩‍💻`]) {
      expect(send(body)).toBe(codePoints(body) <= BODY_MAX_CHARS);
    }
    expect(codePoints("😀a")).toBe(2);
    expect(codePoints("")).toBe(0);
  });

  test("a body or nonce with an unpaired surrogate is refused; paired ones pass", () => {
    // Stored as UTF-8, an unpaired surrogate would become U+FFFD: history would differ from the live event.
    for (const text of ['{"type":"send","room":"a","body":"x\\ud800"}', '{"type":"send","room":"a","body":"\\udc00y"}']) {
      const d = decodeRequest(text);
      expect(d.ok).toBe(false);
      if (!d.ok) expect(d.error.extra.issues?.map((i) => i.path)).toEqual(["body"]);
    }
    const nonce = decodeRequest('{"type":"send","room":"a","body":"b","nonce":"n\\udbff"}');
    expect(nonce.ok).toBe(false);
    if (!nonce.ok) expect(nonce.error.extra.issues?.map((i) => i.path)).toEqual(["nonce"]);
    expect(decodeRequest('{"type":"send","room":"a","body":"\\ud83d\\ude00","nonce":"\\ud83d\\ude00"}')).toEqual({
      ok: true,
      request: { type: "send", room: "a", body: "😀", nonce: "😀" },
    });
  });

  test("a signup or login password with an unpaired surrogate is refused (hashed as UTF-8, \\ud800 and \\udc00 were one password); paired ones pass", () => {
    for (const text of [
      '{"type":"signup","username":"ada","password":"\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800"}',
      '{"type":"login","username":"ada","password":"\\udc00\\udc00\\udc00\\udc00\\udc00\\udc00\\udc00\\udc00"}',
      '{"username":"ada","password":"abcdefgh\\ud800"}',
    ]) {
      const d = decodeRequest(text);
      expect(d.ok).toBe(false);
      if (!d.ok) expect(d.error.extra.issues?.map((i) => i.path)).toEqual(["password"]);
    }
    const paired = "\\ud83d\\ude00".repeat(8);
    for (const type of ["signup", "login"]) {
      const d = decodeRequest(`{"type":"${type}","username":"ada","password":"${paired}"}`);
      expect(d).toEqual({ ok: true, request: { type, username: "ada", password: "😀".repeat(8) } } as never);
    }
  });

  test("the error echoes a valid ref even when other fields fail", () => {
    const d = decodeRequest('{"type":"send","ref":"r1","room":"A","body":""}');
    expect(d).toMatchObject({ ok: false, ref: "r1" });
  });

  test("every request type decodes", () => {
    const minimal: Record<string, object> = {
      signup: { username: "ada", password: "12345678" },
      login: { username: "ada", password: "x" },
      auth: { token: "t" },
      join: { room: "a" },
      leave: { room: "a" },
      send: { room: "a", body: "b" },
      history: { room: "a" },
      who: { room: "a" },
    };
    for (const type of requestTypes) {
      expect(decodeRequest(JSON.stringify({ type, ...minimal[type] })).ok).toBe(true);
    }
  });

  test("nesting: 64 levels are parsed, 65 are refused before parsing (a long frame's brackets inside strings do not count)", () => {
    const nested = (levels: number) => `{"type":"ping","ref":1,"x":${"[".repeat(levels - 1)}${"]".repeat(levels - 1)},"pad":"${"p".repeat(1100)}"}`;
    expect(decodeRequest(nested(MAX_NESTING))).toMatchObject({ ok: true, request: { type: "ping", ref: 1 } });
    const deep = decodeRequest(nested(MAX_NESTING + 1));
    expect(deep).toMatchObject({ ok: false, ref: undefined, error: { code: "bad_request" } });
    expect(!deep.ok && deep.error.message).toBe(`frame nests arrays or objects more than ${MAX_NESTING} deep`);
    // 3,500 brackets and a quote inside a body: text, not nesting.
    const body = `${"[{".repeat(1500)}\"]]${"}".repeat(500)}`; // 3,503 chars
    expect(decodeRequest(JSON.stringify({ type: "send", room: "a", body }))).toMatchObject({ ok: true, request: { body } });
  });

  test("the nesting scan agrees with the parsed value's depth on any JSON", () => {
    const depth = (v: unknown): number =>
      typeof v === "object" && v !== null ? 1 + Math.max(0, ...Object.values(v as object).map(depth)) : 0;
    fc.assert(
      fc.property(fc.jsonValue({ depthSize: "large", maxDepth: 80 }), fc.string({ minLength: 1100, maxLength: 1100 }), (value, pad) => {
        const text = JSON.stringify({ pad, value });
        expect(nestsTooDeep(text)).toBe(depth({ pad, value }) > MAX_NESTING);
      }),
      { numRuns: 300 },
    );
  });

  test("a ref's 64 chars are code points, as for every other field: 64 emoji pass, 65 do not", () => {
    const ref = "😀".repeat(64);
    expect(decodeRequest(JSON.stringify({ type: "ping", ref }))).toEqual({ ok: true, request: { type: "ping", ref } });
    expect(decodeRequest(JSON.stringify({ type: "who", room: "a", ref }))).toMatchObject({ ok: true, request: { ref } });
    expect(decodeRequest(JSON.stringify({ type: "ping", ref: `${ref}😀` }))).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(decodeRequest(JSON.stringify({ type: "ping", ref: `${ref}a` }))).toMatchObject({ ok: false, error: { code: "bad_request" } });
  });

  test("the hand-written ref check agrees with the Ref schema on any string or number", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 70 }),
          // Astral characters: 64 of them are 128 UTF-16 units, and still a ref.
          fc.string({ unit: "binary", minLength: 30, maxLength: 70 }),
          fc.double(),
          fc.integer(),
          fc.maxSafeInteger(),
          fc.constant(2 ** 53),
        ),
        (ref) => {
        const d = decodeRequest(JSON.stringify({ type: "ping", ref }));
        // JSON has no NaN or Infinity: they become null, which is not a ref either.
        const sent = JSON.parse(JSON.stringify({ ref })).ref;
        expect(d.ok).toBe(Ref.safeParse(sent).success);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
