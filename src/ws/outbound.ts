import { CloseCode } from "../protocol/index.ts";
import type { Socket } from "./connection.ts";

/**
 * Every frame to a client goes through here, so that one rule holds everywhere: a
 * client whose unsent bytes pass the send-buffer limit is closed with 1013 (it can
 * reconnect and recover with `since`), and its buffer never grows past the limit.
 */
export class Outbound {
  constructor(readonly limit: number) {}

  send(ws: Socket, frame: string): void {
    if (ws.data.closed) return;
    const sent = ws.send(frame);
    if (sent === 0 || ws.getBufferedAmount() > this.limit) this.closeSlow(ws);
  }

  /** After a publish: closes the subscriber if the publish left it over the limit. */
  check(ws: Socket): void {
    if (!ws.data.closed && ws.getBufferedAmount() > this.limit) this.closeSlow(ws);
  }

  close(ws: Socket, code: number, reason: string): void {
    if (ws.data.closed) return;
    ws.data.closed = true;
    ws.close(code, reason);
  }

  private closeSlow(ws: Socket): void {
    this.close(ws, CloseCode.tryAgainLater, "slow consumer: send buffer full");
  }
}
