import type { Socket } from "./connection.ts";

/** Which sockets are signed in with which session, so that revoking one closes them. */
export class SessionIndex {
  private readonly bySession = new Map<number, Set<Socket>>();

  add(sessionId: number, ws: Socket): void {
    let set = this.bySession.get(sessionId);
    if (!set) this.bySession.set(sessionId, (set = new Set()));
    set.add(ws);
  }

  remove(sessionId: number, ws: Socket): void {
    const set = this.bySession.get(sessionId);
    if (!set) return;
    set.delete(ws);
    if (set.size === 0) this.bySession.delete(sessionId);
  }

  sockets(sessionId: number): Iterable<Socket> {
    return this.bySession.get(sessionId) ?? [];
  }

  /** The sessions signed in on at least one open socket. */
  ids(): Iterable<number> {
    return this.bySession.keys();
  }
}
