import { describe, expect, test } from "bun:test";
import { DEFAULT_RETRY_AFTER_MS, SwitchboardError } from "../../src/client/index.ts";

// The type-level half of these tests is checked by `tsc` (`npm test` runs it first):
// each `@ts-expect-error` fails the type-check if the line it marks stops being an error.
describe("SwitchboardError", () => {
  test("retryAfterMs is a number with rate_limited (the server's, or the default) and absent with any other code", () => {
    expect(new SwitchboardError("rate_limited", "slow down", { retryAfterMs: 250 }).retryAfterMs).toBe(250);
    expect(new SwitchboardError("rate_limited", "slow down").retryAfterMs).toBe(DEFAULT_RETRY_AFTER_MS);
    expect(new SwitchboardError("rate_limited", "slow down", { retryAfterMs: 0 }).retryAfterMs).toBe(0);
    expect(new SwitchboardError("timeout", "no reply", { retryAfterMs: 250 }).retryAfterMs).toBeUndefined();
    const copied = new SwitchboardError("rate_limited", "slow down", { retryAfterMs: 40 }).forRequest("join");
    expect(copied).toMatchObject({ code: "rate_limited", retryAfterMs: 40, request: "join" });
  });

  test("is() matches the class and, when given, one of the codes", () => {
    const limited: unknown = new SwitchboardError("rate_limited", "slow down", { retryAfterMs: 5 });
    expect(SwitchboardError.is(limited)).toBe(true);
    expect(SwitchboardError.is(limited, "rate_limited")).toBe(true);
    expect(SwitchboardError.is(limited, "timeout", "rate_limited")).toBe(true);
    expect(SwitchboardError.is(limited, "timeout", "disconnected")).toBe(false);
    expect(SwitchboardError.is(new Error("rate_limited"), "rate_limited")).toBe(false);
    expect(SwitchboardError.is({ code: "rate_limited", retryAfterMs: 5 }, "rate_limited")).toBe(false);
    expect(SwitchboardError.is(undefined)).toBe(false);
  });

  test("is() narrows by code, for an if and for a switch; instanceof alone does not", () => {
    const e: unknown = new SwitchboardError("rate_limited", "slow down", { retryAfterMs: 7 });
    if (!SwitchboardError.is(e, "rate_limited")) throw new Error("expected rate_limited");
    const wait: number = e.retryAfterMs;
    expect(wait).toBe(7);

    const seen: string[] = [];
    for (const err of [e, new SwitchboardError("timeout", "no reply")] as unknown[]) {
      if (!SwitchboardError.is(err)) throw new Error("expected a SwitchboardError");
      switch (err.code) {
        case "rate_limited": {
          const ms: number = err.retryAfterMs;
          seen.push(`rate_limited ${ms}`);
          break;
        }
        case "timeout": {
          const none: undefined = err.retryAfterMs;
          seen.push(`timeout ${none}`);
          break;
        }
        default:
          seen.push(err.code);
      }
    }
    expect(seen).toEqual(["rate_limited 7", "timeout undefined"]);

    const plain: unknown = e;
    if (plain instanceof SwitchboardError && plain.code === "rate_limited") {
      // @ts-expect-error: instanceof gives SwitchboardError<every code>, where retryAfterMs may be undefined
      const unnarrowed: number = plain.retryAfterMs;
      expect(unnarrowed).toBe(7);
    }
  });
});
