import type { Server } from "bun";
import { CloseCode } from "../protocol/index.ts";
import type { Socket } from "./connection.ts";

/** The most bytes a published text frame can take: 3 UTF-8 bytes per UTF-16 unit, and a header. */
export const frameBytesBound = (frame: string) => frame.length * 3 + 14;

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
 * limit. Published frames are written when Bun drains its topics, at the end of the
 * phase of the event loop that published them: a commit's messages (published from
 * `setImmediate`) before the sockets are read again, a presence event (published from a
 * frame's handler) before the next `setImmediate` callback runs (checked: a subscriber's
 * buffered amount grows by a frame published in a handler by then, not before). So
 * `mark` is taken at the start of each commit's turn, when everything published before
 * is written, and a measurement counts what was published after it as not yet written.
 *
 * Visiting every member after every commit to compare its bound still cost a pass over
 * the room per commit (300 members: about 25 µs, more than the commit's own SQL when
 * the commit holds one message). So this class also keeps `floor`, a number no open
 * socket's bound is below: while the bytes published stay under it, `afterPublish` has
 * nothing to look at. When they pass it, it visits every open socket, measures the ones
 * whose bound is spent, and sets the floor again from all the bounds.
 */
export class Outbound {
  /** Every open socket, from `opened` to `closed`. */
  private readonly open = new Set<Socket>();
  /** Bytes published to rooms so far, counted by `frameBytesBound`. */
  private published = 0;
  /** `published` at the start of the latest commit's turn: all of it is written. */
  private mark = 0;
  /** No open socket's `slackUntil` is below this. */
  private floor = Number.POSITIVE_INFINITY;

  constructor(readonly limit: number) {}

  /** A new connection: its buffer is empty, and nothing published so far can reach it. */
  opened(ws: Socket): void {
    this.open.add(ws);
    this.setSlack(ws, this.published + this.limit);
  }

  closed(ws: Socket): void {
    this.open.delete(ws);
  }

  /** How many sockets are open. */
  get count(): number {
    return this.open.size;
  }

  /** The open sockets (for shutdown). */
  sockets(): IterableIterator<Socket> {
    return this.open.values();
  }

  send(ws: Socket, frame: string): void {
    if (ws.data.closed) return;
    const sent = ws.send(frame);
    if (sent === 0) this.closeSlow(ws);
    else this.measure(ws);
  }

  /** Called at the start of a commit's turn (`setImmediate`), before it publishes. */
  beginPublishing(): void {
    this.mark = this.published;
  }

  /** Whether this commit's turn has published anything (it is written when the turn ends). */
  get publishing(): boolean {
    return this.published !== this.mark;
  }

  /**
   * Whether `frame` may still be published in this commit's turn. What a turn publishes
   * is not in any socket's buffered amount until the turn ends, so the measurement
   * cannot see it: a turn that published more than the limit (a room's events held for
   * a second, 12 MB of them) passed Bun's backpressure limit before any check, and Bun
   * dropped frames from the middle of the stream of readers that were keeping up. So a
   * turn publishes at most half the limit (counted by `frameBytesBound`), always at least
   * one frame: a socket measured at the limit then ends the turn under 1.5 times it,
   * below Bun's `backpressureLimit` (twice it), and is closed with 1013 at the next
   * measurement. The rest waits for the next turn.
   */
  fits(frame: string): boolean {
    return this.published === this.mark || this.published - this.mark + frameBytesBound(frame) <= this.limit / 2;
  }

  publish(server: Server<unknown>, topic: string, frame: string): void {
    this.published += frameBytesBound(frame);
    server.publish(topic, frame);
  }

  /**
   * After a commit published: measures every socket whose bound the bytes published
   * since have spent, and closes those past the limit. Nothing to do while under `floor`.
   */
  afterPublish(): void {
    if (this.published <= this.floor) return;
    let floor = Number.POSITIVE_INFINITY;
    for (const ws of this.open) {
      const conn = ws.data;
      if (conn.closed) continue;
      if (this.published > conn.slackUntil) this.measure(ws);
      if (!conn.closed && conn.slackUntil < floor) floor = conn.slackUntil;
    }
    this.floor = floor;
  }

  close(ws: Socket, code: number, reason: string): void {
    if (ws.data.closed) return;
    ws.data.closed = true;
    ws.data.closedWith = code;
    ws.close(code, reason);
  }

  private measure(ws: Socket): void {
    const buffered = ws.getBufferedAmount();
    if (buffered > this.limit) this.closeSlow(ws);
    else this.setSlack(ws, this.mark + (this.limit - buffered));
  }

  private setSlack(ws: Socket, slackUntil: number): void {
    ws.data.slackUntil = slackUntil;
    if (slackUntil < this.floor) this.floor = slackUntil;
  }

  private closeSlow(ws: Socket): void {
    this.close(ws, CloseCode.tryAgainLater, "slow consumer: send buffer full");
  }
}
