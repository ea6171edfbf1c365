import { expect, test } from "bun:test";
import type { Server } from "bun";
import type { Socket } from "../../src/ws/connection.ts";
import { Outbound } from "../../src/ws/outbound.ts";

/** A socket whose buffered amount the test sets, counting how often it is asked and looked at. */
function fakeSocket() {
  const data = { closed: false, slackUntil: 0 };
  const s = {
    buffered: 0,
    asked: 0,
    /** Reads of `ws.data`: a visit by `afterPublish`. */
    visits: 0,
    sendResult: 1,
    closedWith: null as null | { code: number; reason: string },
    get data() {
      s.visits++;
      return data;
    },
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

/** An open socket, measured once by a direct send with `buffered` bytes unsent. */
function openSocket(out: Outbound, buffered: number) {
  const ws = fakeSocket();
  out.opened(asSocket(ws));
  ws.buffered = buffered;
  out.send(asSocket(ws), "hello");
  return ws;
}

test("a subscriber is measured again only once the bytes published since could have filled its buffer", () => {
  const out = new Outbound(10_000);
  const ws = openSocket(out, 4_000); // measured: 6,000 bytes of room
  expect(ws.asked).toBe(1);

  out.beginPublishing();
  out.publish(server, "room:a", frameOf(3_014)); // 3,014 published
  out.afterPublish();
  out.publish(server, "room:a", frameOf(2_984)); // 5,998: still within the room
  out.afterPublish();
  expect(ws.asked).toBe(1);

  out.publish(server, "room:a", frameOf(17)); // 6,015: could be past the limit now
  ws.buffered = 9_000; // it was not: measured again, a new bound from the mark
  out.afterPublish();
  expect(ws.asked).toBe(2);
  expect(ws.closedWith).toBeNull();
  out.afterPublish(); // the new bound holds until 1,000 more bytes from the mark
  expect(ws.asked).toBe(3); // this commit's own frames count as unwritten: 6,015 > 1,000
});

test("while the bytes published stay under every socket's bound, no socket is visited; past the lowest, all are, and only the spent one is measured", () => {
  const out = new Outbound(10_000);
  const roomy = openSocket(out, 0); // 10,000 bytes of room
  const tight = openSocket(out, 8_000); // 2,000 bytes of room
  const visits = () => roomy.visits + tight.visits;

  out.beginPublishing();
  out.publish(server, "room:a", frameOf(2_000)); // exactly the tight one's room
  const before = visits();
  out.afterPublish();
  expect(visits()).toBe(before); // nothing looked at

  out.publish(server, "room:a", frameOf(17)); // 2,017: the tight one's bound is spent
  tight.buffered = 5_000;
  out.afterPublish();
  expect(visits()).toBeGreaterThan(before);
  expect([roomy.asked, tight.asked]).toEqual([1, 2]);

  // The floor is now the lower of the two bounds (tight: 0 + 5,000), so 2,983 more are free.
  out.beginPublishing();
  out.publish(server, "room:a", frameOf(2_983)); // 5,000
  const again = visits();
  out.afterPublish();
  expect(visits()).toBe(again);
  expect([roomy.asked, tight.asked]).toEqual([1, 2]);
});

test("a direct send that leaves a socket little room lowers the floor at once", () => {
  const out = new Outbound(10_000);
  const ws = openSocket(out, 0);
  ws.buffered = 9_990; // a large reply: 10 bytes of room left
  out.send(asSocket(ws), "big reply");
  out.beginPublishing();
  out.publish(server, "room:a", frameOf(20));
  ws.buffered = 10_005;
  out.afterPublish();
  expect(ws.closedWith?.code).toBe(1013);
});

test("a new connection has the whole limit from the bytes published so far; a closed one is dropped", () => {
  const out = new Outbound(1_000);
  const first = openSocket(out, 0);
  out.beginPublishing();
  out.publish(server, "room:a", frameOf(50_000)); // long before the next one connects
  first.buffered = 0;
  out.afterPublish();

  const late = fakeSocket();
  out.opened(asSocket(late));
  out.beginPublishing();
  out.publish(server, "room:a", frameOf(1_000)); // exactly its room
  out.afterPublish();
  expect(late.asked).toBe(0);
  out.publish(server, "room:a", frameOf(17));
  out.afterPublish();
  expect(late.asked).toBe(1);

  out.closed(asSocket(late));
  const asked = late.asked;
  out.publish(server, "room:a", frameOf(50_000));
  out.afterPublish();
  expect(late.asked).toBe(asked);
  expect([...out.sockets()]).toEqual([asSocket(first)]);
});

test("past the limit by one byte it is closed with 1013; at the limit it is not", () => {
  const out = new Outbound(10_000);
  const atLimit = openSocket(out, 10_000);
  expect(atLimit.closedWith).toBeNull();

  const over = openSocket(out, 10_001);
  expect(over.closedWith).toEqual({ code: 1013, reason: "slow consumer: send buffer full" });
  expect(over.data.closed).toBe(true);

  // The same through a publish: the check asks (the bound is spent) and closes.
  const sub = fakeSocket();
  out.opened(asSocket(sub));
  out.beginPublishing();
  out.publish(server, "room:a", frameOf(10_001));
  sub.buffered = 10_001;
  out.afterPublish();
  expect(sub.closedWith?.code).toBe(1013);
  // The one at the limit had no room left: measured again (still exactly at the limit here).
  expect(atLimit.asked).toBe(2);
  expect(atLimit.closedWith).toBeNull();
});

test("a frame Bun drops (send returns 0) closes with 1013; a closed socket is never written or asked", () => {
  const out = new Outbound(10_000);
  const ws = fakeSocket();
  out.opened(asSocket(ws));
  ws.sendResult = 0;
  out.send(asSocket(ws), "x");
  expect(ws.closedWith?.code).toBe(1013);
  const asked = ws.asked;
  out.publish(server, "room:a", frameOf(100_000));
  out.afterPublish();
  out.send(asSocket(ws), "y");
  expect(ws.asked).toBe(asked);
});

test("non-ASCII frames are counted at 3 bytes per UTF-16 unit", () => {
  const out = new Outbound(1_000);
  const ws = openSocket(out, 0); // 1,000 bytes of room
  out.beginPublishing();
  out.publish(server, "room:a", "é".repeat(328)); // 328 * 3 + 14 = 998
  out.afterPublish();
  expect(ws.asked).toBe(1);
  out.publish(server, "room:a", "€"); // 1,015
  out.afterPublish();
  expect(ws.asked).toBe(2);
});
