import type { Database, Statement } from "bun:sqlite";
import { isoTime } from "../../iso-time.ts";
import type { StoredMessage } from "../../protocol/index.ts";

/** A message row to insert. */
export interface MessageInsert {
  roomId: number;
  seq: number;
  userId: number;
  body: string;
  nonce: string | null;
  at: number;
}
type MessageInsertParam = string | number | null;
/** Rows per INSERT statement: 6 parameters each, far below SQLite's limit of 32,766; 64 statements cached at most. */
const INSERT_CHUNK = 64;

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
  const insertRoom = client.prepare<{ id: number }, [string, number]>("INSERT INTO rooms (name, created_at) VALUES (?, ?) RETURNING id");
  const setLatest = client.prepare<never, [number, number]>("UPDATE rooms SET latest_seq = ? WHERE id = ?");
  // A group commit inserts its rows with one statement per INSERT_CHUNK rows: in
  // process, one statement of 16 rows took about a sixth less SQLite time than 16 of one.
  const inserts = new Map<number, Statement<never, MessageInsertParam[]>>();
  const insertFor = (rows: number) => {
    let statement = inserts.get(rows);
    if (!statement) {
      const values = Array.from({ length: rows }, () => "(?, ?, ?, ?, ?, ?)").join(", ");
      statement = client.prepare(`INSERT INTO messages (room_id, seq, user_id, body, nonce, created_at) VALUES ${values}`);
      inserts.set(rows, statement);
    }
    return statement;
  };
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
    /** Stores the room (with its first message) and returns its id. */
    insertRoom: (name: string, now: number) => insertRoom.get(name, now)!.id,
    setLatest: (roomId: number, seq: number) => setLatest.run(seq, roomId),
    /** Inserts `rows`, in as few statements as INSERT_CHUNK allows. */
    insertMessages(rows: readonly MessageInsert[]): void {
      for (let start = 0; start < rows.length; start += INSERT_CHUNK) {
        const end = Math.min(rows.length, start + INSERT_CHUNK);
        const params: MessageInsertParam[] = [];
        for (let i = start; i < end; i++) {
          const r = rows[i]!;
          params.push(r.roomId, r.seq, r.userId, r.body, r.nonce, r.at);
        }
        insertFor(end - start).run(...params);
      }
    },
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
