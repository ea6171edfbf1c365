import type { Database } from "bun:sqlite";
import { isoTime } from "../../iso-time.ts";
import type { StoredMessage } from "../../protocol/index.ts";

interface MessageRowOut {
  seq: number;
  user: string;
  body: string;
  at: number;
  nonce: string | null;
}

/**
 * Prepared bun:sqlite statements for the per-message paths (send, history, recovery).
 * The drizzle query builder costs about 3x a prepared statement on a 50-row read
 * (STACK-NOTES/issue figures), so the hot paths use SQL against the drizzle-defined
 * tables; the schema and migrations stay drizzle's.
 */
export function createRoomQueries(client: Database) {
  const roomByName = client.prepare<{ id: number; latestSeq: number }, [string]>(
    "SELECT id, latest_seq AS latestSeq FROM rooms WHERE name = ?",
  );
  const insertRoom = client.prepare<{ id: number; latestSeq: number }, [string, number]>(
    "INSERT INTO rooms (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET name = name RETURNING id, latest_seq AS latestSeq",
  );
  const setLatest = client.prepare<never, [number, number]>("UPDATE rooms SET latest_seq = ? WHERE id = ?");
  const insertMessage = client.prepare<never, [number, number, number, string, string | null, number]>(
    "INSERT INTO messages (room_id, seq, user_id, body, nonce, created_at) VALUES (?, ?, ?, ?, ?, ?)",
  );
  const byNonce = client.prepare<{ seq: number; at: number }, [number, number, string]>(
    "SELECT seq, created_at AS at FROM messages WHERE room_id = ? AND user_id = ? AND nonce = ?",
  );
  const range = client.prepare<MessageRowOut, [number, number, number, number]>(
    `SELECT m.seq, u.username AS user, m.body, m.created_at AS at, m.nonce
     FROM messages m JOIN users u ON u.id = m.user_id
     WHERE m.room_id = ? AND m.seq > ? AND m.seq <= ? ORDER BY m.seq LIMIT ?`,
  );
  const before = client.prepare<MessageRowOut, [number, number, number]>(
    `SELECT m.seq, u.username AS user, m.body, m.created_at AS at, m.nonce
     FROM messages m JOIN users u ON u.id = m.user_id
     WHERE m.room_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?`,
  );
  const countRooms = client.prepare<{ n: number }, []>("SELECT count(*) AS n FROM rooms");

  const toMessage = (room: string, r: MessageRowOut): StoredMessage => {
    const m: StoredMessage = { room, seq: r.seq, user: r.user, body: r.body, at: isoTime(r.at) };
    if (r.nonce !== null) m.nonce = r.nonce;
    return m;
  };

  return {
    findRoom: (name: string) => roomByName.get(name),
    /** The room, created if it does not exist (a read first: loading an existing room writes nothing). */
    ensureRoom: (name: string, now: number) => roomByName.get(name) ?? insertRoom.get(name, now)!,
    setLatest: (roomId: number, seq: number) => setLatest.run(seq, roomId),
    insertMessage: (roomId: number, seq: number, userId: number, body: string, nonce: string | null, at: number) =>
      insertMessage.run(roomId, seq, userId, body, nonce, at),
    findByNonce: (roomId: number, userId: number, nonce: string) => byNonce.get(roomId, userId, nonce),
    /** Messages with afterSeq < seq <= uptoSeq, ascending, at most `limit`. */
    range: (room: string, roomId: number, afterSeq: number, uptoSeq: number, limit: number) =>
      range.all(roomId, afterSeq, uptoSeq, limit).map((r) => toMessage(room, r)),
    /** The newest `limit` messages with seq < beforeSeq, ascending. */
    before: (room: string, roomId: number, beforeSeq: number, limit: number) =>
      before.all(roomId, beforeSeq, limit).reverse().map((r) => toMessage(room, r)),
    countRooms: () => countRooms.get()!.n,
  };
}

export type RoomQueries = ReturnType<typeof createRoomQueries>;
