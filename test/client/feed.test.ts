import { expect, test } from "bun:test";
import fc from "fast-check";
import { backoffDelay, RoomFeed, type MessageEvent } from "../../src/client/index.ts";

const msg = (seq: number): MessageEvent => ({
  type: "message",
  room: "r",
  seq,
  user: "u",
  body: `m${seq}`,
  at: "2026-11-28T12:00:00.000Z",
});

/**
 * Any arrival order of live events (duplicates, reordering, losses), with history
 * reads completing at arbitrary moments, delivers exactly 1..n in order.
 */
test("RoomFeed delivers each seq exactly once, in order, whatever the arrival order", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.array(fc.oneof(fc.record({ kind: fc.constant("event" as const), seq: fc.integer({ min: 1, max: 40 }) }), fc.constant({ kind: "fill" as const })), {
        maxLength: 120,
      }),
      fc.integer({ min: 1, max: 7 }),
      (n, steps, pageSize) => {
        const delivered: number[] = [];
        const feed = new RoomFeed("r", null, (m) => delivered.push(m.seq));
        feed.phase = "joining";
        let fillTo: number | null = feed.joined({ room: "r", seq: 0, members: [] }, undefined).fillTo;
        /** One history page towards the pending gap, as the client reads it. */
        const fillStep = () => {
          if (fillTo === null) return;
          const from = feed.lastDelivered! + 1;
          const page = [];
          for (let s = from; s <= Math.min(fillTo, from + pageSize - 1); s++) page.push(msg(s));
          expect(feed.fillPage(page)).toBe(page.length > 0);
          if (feed.lastDelivered! >= fillTo) fillTo = feed.finishFill();
        };
        for (const step of steps) {
          if (step.kind === "fill") fillStep();
          else if (step.seq <= n) {
            const gap = feed.accept(msg(step.seq));
            if (gap !== null) {
              expect(fillTo).toBeNull(); // a second fill never starts while one runs
              fillTo = gap;
            }
          }
        }
        // Finally the rest arrives (as a catch-up would) and pending fills complete.
        for (let s = 1; s <= n; s++) {
          const gap = feed.accept(msg(s));
          if (gap !== null) fillTo = gap;
        }
        while (fillTo !== null) fillStep();
        expect(delivered).toEqual(Array.from({ length: n }, (_, i) => i + 1));
        expect(feed.heldCount).toBe(0);
        expect(feed.phase as string).toBe("live");
      },
    ),
    { numRuns: 300 },
  );
});

test("a recovered join keeps the place; recovered: false asks for history up to the room's seq", () => {
  const delivered: number[] = [];
  const feed = new RoomFeed("r", 5, (m) => delivered.push(m.seq));
  feed.phase = "joining";
  expect(feed.accept(msg(4))).toBeNull(); // already delivered
  expect(feed.joined({ room: "r", seq: 9, members: [], recovered: true }, 5)).toEqual({ fillTo: null, mismatch: false });
  expect(feed.accept(msg(6))).toBeNull();
  expect(delivered).toEqual([6]);

  feed.reset();
  feed.phase = "joining";
  feed.accept(msg(12)); // live, after the join reply's seq
  expect(feed.joined({ room: "r", seq: 11, members: [], recovered: false }, 6)).toEqual({ fillTo: 11, mismatch: false });
  expect(feed.phase as string).toBe("filling");
  feed.fillPage([7, 8, 9, 10, 11].map(msg));
  expect(feed.finishFill()).toBeNull();
  expect(delivered).toEqual([6, 7, 8, 9, 10, 11, 12]);

  // The server's history is shorter than what was delivered: reported, and resumed from it.
  feed.reset();
  feed.phase = "joining";
  expect(feed.joined({ room: "r", seq: 3, members: [], recovered: false }, 12)).toEqual({ fillTo: null, mismatch: true });
  expect(feed.lastDelivered).toBe(3);
});

test("backoff: full jitter under a ceiling that doubles from minMs up to maxMs", () => {
  const b = { minMs: 100, maxMs: 1000 };
  expect([0, 1, 2, 3, 4, 20].map((a) => backoffDelay(a, b, () => 0.9999))).toEqual([99, 199, 399, 799, 999, 999]);
  expect(backoffDelay(3, b, () => 0)).toBe(0);
  expect(backoffDelay(1, b, () => 0.5)).toBe(100);
});
