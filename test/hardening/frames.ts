/**
 * fast-check arbitraries of hostile client frames, shared by the fuzz tests and
 * bench/fuzz.ts, and the oracle that says what the protocol requires for each.
 */
import fc from "fast-check";
import { ErrorCode, requestTypes } from "../../src/protocol/index.ts";
import { MAX_NESTING } from "../../src/protocol/decode.ts";

/** Built once: generating a megabyte per run would make the suite slow. */
export const MEGABYTE = "m".repeat(1 << 20);
const DEEP = 10_000;
/** JSON text nested 10,000 deep, as an array and as objects. */
export const DEEP_ARRAY = "[".repeat(DEEP) + "]".repeat(DEEP);
export const DEEP_OBJECT = '{"a":'.repeat(DEEP) + "1" + "}".repeat(DEEP);

/** JSON texts of values that have broken parsers and validators elsewhere. */
export const HOSTILE_VALUES: readonly string[] = [
  '{"length":{"toString":"x"}}',
  '{"length":{"valueOf":1}}',
  '{"length":1e400}',
  '{"length":-1}',
  '{"length":100000}',
  '{"__proto__":{"length":5}}',
  '{"constructor":{"prototype":{"polluted":true}}}',
  '{"toString":"x","valueOf":"y"}',
  "[]",
  "[1,2,3]",
  "{}",
  "null",
  "true",
  "false",
  "0",
  "-0",
  "1e400",
  "-1e400",
  "9007199254740992",
  "9007199254740993",
  "-9007199254740993",
  "1e21",
  "2.5",
  "1e-7",
  '"10"',
  '""',
  '"\\ud800"',
  '"\\udc00x\\ud800"',
  '"a\\u0000b"',
  '"\\u0000"',
  '"__proto__"',
  '"constructor"',
  '"toString"',
  '"hasOwnProperty"',
  '"LOBBY"',
  '"lobby"',
  '"-room"',
  JSON.stringify("x".repeat(65)),
  JSON.stringify("x".repeat(4001)),
  JSON.stringify(MEGABYTE),
  DEEP_ARRAY,
  DEEP_OBJECT,
];

/** Field names of every request, plus the ones attackers try. */
export const FIELD_NAMES = [
  "type", "ref", "username", "password", "token", "all", "room", "since", "body", "nonce", "before", "limit",
  "__proto__", "constructor", "prototype", "length", "toString",
] as const;

/** Request types, the same in the wrong case, and prototype names. */
export const TYPE_NAMES = [...requestTypes, "PING", "Login", "", "__proto__", "constructor", "toString", "valueOf", "message", "ok", "error"];

const jsonText = (v: unknown) => JSON.stringify(v) ?? "null";

/** A value's JSON text: ordinary, random or hostile. */
export const valueText: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_VALUES) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map(jsonText) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 80 }).map(jsonText) },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n })).map(String) },
  { weight: 2, arbitrary: fc.constantFrom("lobby", "ada_1", "correct horse battery", "hello", "r1", "n-1").map(jsonText) },
  { weight: 1, arbitrary: fc.constantFrom(...TYPE_NAMES).map(jsonText) },
);

/**
 * Frames shaped like requests (`{"type":..., fields}`), with keys repeated, missing,
 * misnamed, and hostile values everywhere. Written as text so that `__proto__` stays
 * an ordinary own key, as it is in JSON.
 */
export const specShapedFrame: fc.Arbitrary<string> = fc
  .tuple(
    fc.option(fc.oneof(fc.constantFrom(...TYPE_NAMES).map(jsonText), valueText), { nil: undefined, freq: 6 }),
    fc.array(fc.tuple(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...FIELD_NAMES) }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) }), valueText), { maxLength: 5 }),
  )
  .map(([type, fields]) => {
    const parts = fields.map(([k, v]) => `${jsonText(k)}:${v}`);
    if (type !== undefined) parts.unshift(`"type":${type}`);
    return `{${parts.join(",")}}`;
  });

/** Any text at all: random JSON, random strings, broken JSON. */
export const randomText: fc.Arbitrary<string> = fc.oneof(
  fc.json({ maxDepth: 4 }),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.json({ maxDepth: 2 }).map((s) => s.slice(0, Math.max(0, s.length - 1))),
  fc.constantFrom("", " ", "{", "}", "null", "[]", "{}", '{"type":}', "\u0000", '{"type":"ping"}\u0000', "\ufeff{}"),
);

/** Every kind of frame text the fuzzers send. */
export const anyFrame: fc.Arbitrary<string> = fc.oneof({ weight: 3, arbitrary: specShapedFrame }, { weight: 1, arbitrary: randomText });

export const ERROR_CODES: ReadonlySet<string> = new Set(ErrorCode.options);


/** What the protocol says about a frame before any schema of a request type is applied. */
export type Expected =
  | { kind: "bad_request"; ref: undefined } // not JSON, not an object, or a bad ref
  | { kind: "bad_request_or_ok"; type: string; ref: unknown } // a known type: fields decide
  | { kind: "bad_type"; ref: unknown } // type missing or not a string
  | { kind: "unknown_type"; ref: unknown };

/** An oracle written from PROTOCOL.md, independent of decode.ts. */
/**
 * How deep the text of valid JSON nests, strings taken out first by a regex (the
 * decoder scans character by character). The text, not the parsed value: a key given
 * twice keeps only its last value, but the parser still walks the first.
 */
function textDepth(text: string): number {
  let depth = 0;
  let max = 0;
  const bare = text.replace(/"(?:[^"\\]|\\.)*"/g, "");
  for (let i = 0; i < bare.length; i++) {
    const c = bare[i];
    if (c === "[" || c === "{") max = Math.max(max, ++depth);
    else if (c === "]" || c === "}") depth--;
  }
  return max;
}

export function expectedFor(text: string): Expected {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { kind: "bad_request", ref: undefined };
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { kind: "bad_request", ref: undefined };
  // Refused before parsing, so without its ref: a long frame nested past the limit.
  if (text.length >= 1024 && textDepth(text) > MAX_NESTING) return { kind: "bad_request", ref: undefined };
  const o = v as Record<string, unknown>;
  let ref: unknown;
  if (Object.hasOwn(o, "ref")) {
    const r = o.ref;
    const okRef = (typeof r === "string" && [...r].length <= 64) || (typeof r === "number" && Number.isSafeInteger(r));
    if (!okRef) return { kind: "bad_request", ref: undefined };
    ref = r;
  }
  let type = Object.hasOwn(o, "type") ? o.type : undefined;
  if (type === undefined && Object.hasOwn(o, "username") && Object.hasOwn(o, "password")) type = "signup";
  if (typeof type !== "string") return { kind: "bad_type", ref };
  if (!(requestTypes as string[]).includes(type)) return { kind: "unknown_type", ref };
  return { kind: "bad_request_or_ok", type, ref };
}
