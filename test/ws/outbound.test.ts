import { expect, test } from "bun:test";
import type { Server } from "bun";
import type { Socket } from "../../src/ws/connection.ts";
import { Outbound } from "../../src/ws/outbound.ts";

/** A socket whose buffered amount the test sets, counting how often it is asked. */
function fakeSocket() {
  const s = {
    buffered: 0,
    asked: 0,
    sendResult: 1,
    closedWith: null as null | { code: number; reason: string },
    data: { closed: false, slackUntil: 0 },
    send: () => s.sendResult,
    getBufferedAmount: () => {
      s.asked++;
      return s.buffered;
    },
    close: (code: number, reason: string) => {
      s.closedWith = { code, reason };
    },
  };
  return s;
}
const asSocket = (s: ReturnType<typeof fakeSocket>) => s as unknown as Socket;
const server = { publish: () => 0 } as unknown as Server<unknown>;
/** An ASCII frame of `bytes` bytes as the bound counts it (3 per char, plus a 14-byte header). */
const frameOf = (bytes: number) => "x".repeat((bytes - 14) / 3);

test("a subscriber is measured again only once the bytes published since could have filled its buffer", () => {
  const out = new Outbound(10_000);
  const ws = fakeSocket();
  ws.buffered = 4_000;
  out.send(asSocket(ws), "hello"); // measured: 6,000 bytes of room
  expect(ws.asked).toBe(1);

  out.beginPublishing();
  out.publish(server, "room:a", frameOf(3_014)); // 3,014 published
  out.check(asSocket(ws));
  out.publish(server, "room:a", frameOf(2_984)); // 5,998: still within the room
  out.check(asSocket(ws));
  expect(ws.asked).toBe(1);

  out.publish(server, "room:a", frameOf(17)); // 6,015: could be past the limit now
  ws.buffered = 9_000; // it was not: measured again, a new bound from the mark
  out.check(asSocket(ws));
  expect(ws.asked).toBe(2);
  expect(ws.closedWith).toBeNull();
  out.check(asSocket(ws)); // the new bound holds until 1,000 more bytes from the mark
  expect(ws.asked).toBe(3); // this commit's own frames count as unwritten: 6,015 > 1,000
});

test("past the limit by one byte it is closed with 1013; at the limit it is not", () => {
  const out = new Outbound(10_000);
  const atLimit = fakeSocket();
  atLimit.buffered = 10_000;
  out.send(asSocket(atLimit), "x");
  expect(atLimit.closedWith).toBeNull();

  const over = fakeSocket();
  over.buffered = 10_001;
  out.send(asSocket(over), "x");
  expect(over.closedWith).toEqual({ code: 1013, reason: "slow consumer: send buffer full" });
  expect(over.data.closed).toBe(true);

  // The same through a publish: the check asks (the bound is spent) and closes.
  const sub = fakeSocket();
  out.beginPublishing();
  out.publish(server, "room:a", frameOf(20));
  sub.buffered = 10_001;
  out.check(asSocket(sub));
  expect(sub.closedWith?.code).toBe(1013);
});

test("a frame Bun drops (send returns 0) closes with 1013; a closed socket is never written or asked", () => {
  const out = new Outbound(10_000);
  const ws = fakeSocket();
  ws.sendResult = 0;
  out.send(asSocket(ws), "x");
  expect(ws.closedWith?.code).toBe(1013);
  const asked = ws.asked;
  out.publish(server, "room:a", frameOf(100_000));
  out.check(asSocket(ws));
  out.send(asSocket(ws), "y");
  expect(ws.asked).toBe(asked);
});

test("non-ASCII frames are counted at 3 bytes per UTF-16 unit", () => {
  const out = new Outbound(1_000);
  const ws = fakeSocket();
  out.send(asSocket(ws), "x"); // 1,000 bytes of room
  out.beginPublishing();
  out.publish(server, "room:a", "é".repeat(328)); // 328 * 3 + 14 = 998
  out.check(asSocket(ws));
  expect(ws.asked).toBe(1);
  out.publish(server, "room:a", "€"); // 1,015
  out.check(asSocket(ws));
  expect(ws.asked).toBe(2);
});
