import { expect, test } from "bun:test";
import { WriteHealth } from "../../src/db/write-health.ts";
import { createLogger } from "../../src/log.ts";
import { Metrics } from "../../src/metrics.ts";
import { createConn, type Socket } from "../../src/ws/connection.ts";
import { createDispatcher, type Handlers } from "../../src/ws/dispatcher.ts";
import { Outbound } from "../../src/ws/outbound.ts";
import { RequestBudget } from "../../src/ws/request-budget.ts";

/** A socket that records what is sent to it. */
function fakeSocket(): { ws: Socket; sent: string[] } {
  const sent: string[] = [];
  const ws = {
    data: createConn("192.0.2.1", 40, Date.now(), 100),
    send(frame: string) {
      sent.push(frame);
      return frame.length;
    },
    getBufferedAmount: () => 0,
    close() {},
  } as unknown as Socket;
  return { ws, sent };
}

test("the last-resort boundary: a throw outside the handler's own try is answered internal with the frame's ref, logged, and the process goes on", () => {
  const logged: string[] = [];
  const unexpected = () => {
    throw new Error("not in this test");
  };
  const handlers = new Proxy({} as Handlers, {
    // A result JSON cannot write: the reply throws after the handler returned, outside its try.
    get: (_t, type) => (type === "ping" ? () => ({ big: 1n }) : unexpected),
  });
  const outbound = new Outbound(1 << 20);
  const dispatcher = createDispatcher({
    handlers,
    outbound,
    metrics: new Metrics(),
    log: createLogger("error", (line) => logged.push(line)),
    invalidFrameLimit: 10,
    budget: new RequestBudget(100, 100),
    writeHealth: new WriteHealth(),
  });
  const { ws, sent } = fakeSocket();
  outbound.opened(ws);
  dispatcher.message(ws, '{"type":"ping","ref":"r-7"}');
  expect(sent.map((f) => JSON.parse(f))).toEqual([{ type: "error", ref: "r-7", code: "internal", message: "internal error" }]);
  expect(logged).toHaveLength(1);
  expect(JSON.parse(logged[0]!)).toMatchObject({ level: "error", event: "request_failed", type: "unknown", conn: ws.data.id });
  // A frame without a ref gets an answer without one.
  dispatcher.message(ws, '{"type":"ping"}');
  expect(JSON.parse(sent[1]!)).toEqual({ type: "error", code: "internal", message: "internal error" });
});
