import { expect, test } from "bun:test";
import fc from "fast-check";
import { isoTime } from "../src/iso-time.ts";

test("isoTime equals toISOString for any millisecond from 1970 to 9999", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 253_402_300_799_999 - 2501 }), fc.integer({ min: 0, max: 2500 }), (ms, step) => {
      // Also neighbours, so that the cached prefix is reused and replaced.
      for (const t of [ms, ms + step, ms + step + 1, ms]) expect(isoTime(t)).toBe(new Date(t).toISOString());
    }),
    { numRuns: 5000 },
  );
  for (const t of [0, 999, 1000, 1001, 1_795_885_382_779]) expect(isoTime(t)).toBe(new Date(t).toISOString());
});
