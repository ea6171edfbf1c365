import type { Server } from "bun";
import { CloseCode } from "../protocol/index.ts";
import type { Socket } from "./connection.ts";

/** The most bytes a published text frame can take: 3 UTF-8 bytes per UTF-16 unit, and a header. */
const frameBytesBound = (frame: string) => frame.length * 3 + 14;

/**
 * Every frame to a client goes through here, so that one rule holds everywhere: a
 * client whose unsent bytes pass the send-buffer limit is closed with 1013 (it can
 * reconnect and recover with `since`), and its buffer never grows past the limit.
 *
 * Asking Bun for a socket's buffered amount after every group commit, for every member
 * of every room it touched, cost as much as a tenth of a fan-out. So each socket keeps a
 * bound instead: when its buffer was last measured, it had `limit - buffered` bytes of
 * room, and only published frames can have filled it since (a direct send measures
 * again). It is measured again once the bytes published since could have passed the
 * limit. Published frames are written when Bun drains its topics at the end of the
 * event-loop turn, after the commit that published them, so a measurement counts the
 * frames of the current commit as not yet written (`mark`).
 */
export class Outbound {
  /** Bytes published to rooms so far, counted by `frameBytesBound`. */
  private published = 0;
  /** `published` when the latest commit began publishing. */
  private mark = 0;

  constructor(readonly limit: number) {}

  send(ws: Socket, frame: string): void {
    if (ws.data.closed) return;
    const sent = ws.send(frame);
    if (sent === 0) this.closeSlow(ws);
    else this.measure(ws);
  }

  /** Called before a commit publishes its messages. */
  beginPublishing(): void {
    this.mark = this.published;
  }

  publish(server: Server<unknown>, topic: string, frame: string): void {
    this.published += frameBytesBound(frame);
    server.publish(topic, frame);
  }

  /** After a commit published: closes the subscriber if it may have passed the limit and has. */
  check(ws: Socket): void {
    if (!ws.data.closed && this.published > ws.data.slackUntil) this.measure(ws);
  }

  close(ws: Socket, code: number, reason: string): void {
    if (ws.data.closed) return;
    ws.data.closed = true;
    ws.close(code, reason);
  }

  private measure(ws: Socket): void {
    const buffered = ws.getBufferedAmount();
    if (buffered > this.limit) this.closeSlow(ws);
    else ws.data.slackUntil = this.mark + (this.limit - buffered);
  }

  private closeSlow(ws: Socket): void {
    this.close(ws, CloseCode.tryAgainLater, "slow consumer: send buffer full");
  }
}
