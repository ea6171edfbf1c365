import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { decodeRequest, requestSchemas, requestTypes, type Decoded } from "../../src/protocol/index.ts";
import {
  anyFrame,
  DEEP_ARRAY,
  DEEP_OBJECT,
  ERROR_CODES,
  expectedFor,
  MEGABYTE,
  randomText,
  specShapedFrame,
} from "./frames.ts";

const RUNS = 400;

/** Decodes, failing the property on a throw (the whole server process dies on one). */
function decodeSafely(text: string): Decoded {
  try {
    return decodeRequest(text);
  } catch (e) {
    throw new Error(`decodeRequest threw on ${JSON.stringify(text.slice(0, 200))}: ${String(e)}`);
  }
}

/** Checks a decode result against the protocol's rules for `text`. */
function checkAgainstSpec(text: string): void {
  const d = decodeSafely(text);
  const want = expectedFor(text);
  if (!d.ok) {
    expect(ERROR_CODES.has(d.error.code)).toBe(true);
    expect(typeof d.error.message).toBe("string");
    expect(d.error.message.length).toBeLessThan(1000);
    // The reply must be sendable: it serializes, and back to the same code.
    const reply = JSON.parse(JSON.stringify({ type: "error", ref: d.ref, code: d.error.code, message: d.error.message, ...d.error.extra }));
    expect(reply.code).toBe(d.error.code);
    for (const issue of d.error.extra.issues ?? []) {
      expect(typeof issue.path).toBe("string");
      expect(typeof issue.message).toBe("string");
    }
  }
  switch (want.kind) {
    case "bad_request":
      expect(d.ok).toBe(false);
      if (!d.ok) expect([d.error.code, d.ref]).toEqual(["bad_request", undefined]);
      break;
    case "bad_type":
      expect(d.ok).toBe(false);
      if (!d.ok) expect([d.error.code, d.ref]).toEqual(["bad_request", want.ref as never]);
      break;
    case "unknown_type":
      expect(d.ok).toBe(false);
      if (!d.ok) expect([d.error.code, d.ref]).toEqual(["unknown_type", want.ref as never]);
      break;
    case "bad_request_or_ok":
      if (d.ok) {
        expect(d.request.type).toBe(want.type as never);
        expect(d.request.ref).toEqual(want.ref as never);
        // Never coerced: what was accepted is exactly what its schema accepts.
        const again = requestSchemas[d.request.type].safeParse(JSON.parse(JSON.stringify(d.request)));
        expect(again.success).toBe(true);
        for (const [k, v] of Object.entries(d.request)) {
          if (k !== "type") expect((JSON.parse(text) as Record<string, unknown>)[k]).toEqual(v);
        }
      } else {
        expect([d.error.code, d.ref]).toEqual(["bad_request", want.ref as never]);
      }
  }
}

describe("decodeRequest under fuzzing", () => {
  test("random text and random JSON: never throws, answers with a spec code", () => {
    fc.assert(
      fc.property(randomText, (text) => {
        checkAgainstSpec(text);
      }),
      { numRuns: RUNS },
    );
  });

  test("spec-shaped frames with hostile values: never throws, answers with a spec code", () => {
    fc.assert(
      fc.property(specShapedFrame, (text) => {
        checkAgainstSpec(text);
      }),
      { numRuns: RUNS * 2 },
    );
    // Megabyte frames (past any frame limit) scanned for nesting, by the decoder and the oracle: seconds.
  }, 20_000);

  test("the generators reach every outcome (the fuzz is not vacuous)", () => {
    const seen = new Set<string>();
    for (const text of fc.sample(anyFrame, { numRuns: 2000, seed: 42 })) {
      const d = decodeRequest(text);
      seen.add(d.ok ? `ok:${d.request.type}` : d.error.code);
    }
    expect(seen.has("bad_request")).toBe(true);
    expect(seen.has("unknown_type")).toBe(true);
    expect([...seen].filter((s) => s.startsWith("ok:")).length).toBeGreaterThanOrEqual(3);
  });

  // Each hostile value in every field of every request type, and the frames named in the brief.
  const hostile: Array<[string, string]> = [
    ["token object with object length (no type)", '{"token":{"length":{"toString":"x"}}}'],
    ["token object with object length", '{"type":"auth","token":{"length":{"toString":"x"}}}'],
    ["body object with object length", '{"type":"send","room":"lobby","body":{"length":{"valueOf":1}}}'],
    ["legacy signup with object username", '{"username":{"length":{"toString":"x"}},"password":"x"}'],
    ["__proto__ key holding the type", '{"__proto__":{"type":"ping"}}'],
    ["__proto__ key beside a valid type", '{"type":"ping","__proto__":{"ref":1}}'],
    ["constructor.prototype", '{"type":"ping","constructor":{"prototype":{"polluted":1}}}'],
    ["type __proto__", '{"type":"__proto__"}'],
    ["type constructor", '{"type":"constructor"}'],
    ["type toString", '{"type":"toString"}'],
    ["type hasOwnProperty", '{"type":"hasOwnProperty"}'],
    ["arrays 10,000 deep", DEEP_ARRAY],
    ["objects 10,000 deep", DEEP_OBJECT],
    ["type nested 10,000 deep", `{"type":"ping","x":${DEEP_ARRAY}}`],
    ["lone surrogate in ref", '{"type":"ping","ref":"\\ud800"}'],
    ["lone surrogate raw", '{"type":"ping","ref":"\ud800"}'],
    ["NUL in body", '{"type":"send","room":"lobby","body":"a\\u0000b"}'],
    ["NUL in type", '{"type":"ping\\u0000"}'],
    ["raw NUL outside JSON", '{"type":"ping"}\u0000'],
    ["megabyte body", `{"type":"send","room":"lobby","body":"${MEGABYTE}"}`],
    ["megabyte type", `{"type":"${MEGABYTE}"}`],
    ["megabyte ref", `{"type":"ping","ref":"${MEGABYTE}"}`],
    ["megabyte key", `{"type":"ping","${MEGABYTE}":1}`],
    ["ref beyond the safe range", '{"type":"ping","ref":9007199254740993}'],
    ["ref 1e400", '{"type":"ping","ref":1e400}'],
    ["since beyond the safe range", '{"type":"join","room":"lobby","since":9007199254740993}'],
    ["before 1e400", '{"type":"history","room":"lobby","before":1e400}'],
    ["limit 2.5", '{"type":"history","room":"lobby","limit":2.5}'],
    ["limit as string", '{"type":"history","room":"lobby","limit":"10"}'],
    ["since negative zero", '{"type":"join","room":"lobby","since":-0}'],
    ["all as string", '{"type":"logout","all":"true"}'],
    ["type as number", '{"type":1}'],
    ["type as array", '{"type":["ping"]}'],
    ["type as object with toString", '{"type":{"toString":"ping"}}'],
    ["not an object", "[]"],
    ["not JSON", "{"],
    ["empty", ""],
  ];
  for (const field of ["username", "password", "token", "room", "body", "nonce", "since", "before", "limit", "all"]) {
    for (const type of requestTypes) {
      hostile.push([`${type}.${field} = object with object length`, `{"type":"${type}","${field}":{"length":{"toString":"x"}}}`]);
      hostile.push([`${type}.${field} = 1e400`, `{"type":"${type}","${field}":1e400}`]);
    }
  }

  test.each(hostile)("hostile frame: %s", (_name, text) => {
    checkAgainstSpec(text);
  });

  test("the prototype is not polluted by any of it", () => {
    for (const [, text] of hostile) decodeRequest(text);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).type).toBeUndefined();
    expect(({} as Record<string, unknown>).ref).toBeUndefined();
  });

  // zod throws `TypeError: No default value` for an object whose `length` is an object;
  // over a socket such a throw would escape the Bun handler and end the process.
  test("a ref that is an object whose length is an object is a bad_request, not a throw", () => {
    for (const ref of ['{"length":{"toString":"x"}}', '{"length":{}}', '{"length":[]}', '{"length":{"valueOf":1}}']) {
      const d = decodeRequest(`{"type":"ping","ref":${ref}}`);
      expect(d.ok).toBe(false);
      if (!d.ok) expect([d.error.code, d.ref]).toEqual(["bad_request", undefined]);
    }
  });

});
