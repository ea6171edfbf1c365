/**
 * The naive raw-Bun baselines: Bun.serve + bun:sqlite with nothing in between.
 * `bun bench/lib/raw-server.ts '{"mode":"chat","db":"/tmp/x.db","sync":"FULL"}'`, prints {"port":N}.
 *
 * Modes:
 *   echo     every frame is sent back as is (the ping baseline)
 *   chat     send: JSON.parse, one autocommit INSERT, ok, server.publish (the chat baseline)
 *   publish  send: JSON.parse, ok, server.publish, no database (the fan-out baseline)
 *   history  history: one prepared SELECT of 50 rows on Switchboard's own database file
 *   idle     auth/join answered ok, nothing stored (the memory baseline)
 *   presence signup remembers the name; join publishes a presence event to the room's
 *            other members, answers with the members, subscribes (the presence baseline)
 * In every mode auth is answered ok (no accounts) and join subscribes.
 */
import { Database } from "bun:sqlite";

interface Args {
  mode: "echo" | "chat" | "publish" | "history" | "idle" | "presence";
  db?: string;
  sync?: "NORMAL" | "FULL";
}
const args = JSON.parse(process.argv[2] ?? "{}") as Args;

let db: Database | null = null;
if (args.db) {
  db = new Database(args.db, { create: true, strict: true });
  db.run("PRAGMA journal_mode = WAL");
  db.run(`PRAGMA synchronous = ${args.sync ?? "NORMAL"}`);
  db.run("PRAGMA busy_timeout = 5000");
}
if (db && args.mode === "chat") {
  db.run(`CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, room_id INTEGER NOT NULL, seq INTEGER NOT NULL, user_id INTEGER NOT NULL,
    body TEXT NOT NULL, nonce TEXT, created_at INTEGER NOT NULL)`);
  db.run("CREATE UNIQUE INDEX IF NOT EXISTS messages_room_seq ON messages (room_id, seq)");
}
const insert =
  db && args.mode === "chat"
    ? db.prepare<never, [number, number, number, string, string | null, number]>(
        "INSERT INTO messages (room_id, seq, user_id, body, nonce, created_at) VALUES (?, ?, ?, ?, ?, ?)",
      )
    : null;
const history =
  db && args.mode === "history"
    ? db.prepare<{ seq: number; user: string; body: string; at: number; nonce: string | null }, [number, number, number]>(
        `SELECT m.seq, u.username AS user, m.body, m.created_at AS at, m.nonce
         FROM messages m JOIN users u ON u.id = m.user_id
         WHERE m.room_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?`,
      )
    : null;
const roomId = db && args.mode === "history" ? db.prepare<{ id: number }, [string]>("SELECT id FROM rooms WHERE name = ?") : null;
const roomIds = new Map<string, number>();

const seqs = new Map<string, number>();
interface Frame {
  type?: string;
  ref?: unknown;
  room?: string;
  body?: string;
  nonce?: string;
  before?: number;
  limit?: number;
}

/** Presence mode: the members of each room, by name. */
const members = new Map<string, Set<string>>();

const server = Bun.serve<{ id: number; user?: string }>({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    if (srv.upgrade(req, { data: { id: 0 } })) return undefined;
    return new Response("websocket only", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    message(ws, message) {
      if (args.mode === "echo") {
        ws.send(message);
        return;
      }
      const req = JSON.parse(String(message)) as Frame;
      const ref = req.ref;
      switch (req.type) {
        case "signup":
          ws.data.user = (req as { username?: string }).username;
          ws.send(JSON.stringify({ type: "ok", ref }));
          return;
        case "join":
          if (args.mode === "presence") {
            const room = req.room ?? "";
            const set = members.get(room) ?? new Set<string>();
            members.set(room, set);
            server.publish(`room:${room}`, JSON.stringify({ type: "presence", room, user: ws.data.user, state: "join" }));
            set.add(ws.data.user ?? "");
            ws.send(JSON.stringify({ type: "ok", ref, room, seq: 0, members: [...set] }));
            ws.subscribe(`room:${room}`);
            return;
          }
          ws.subscribe(`room:${req.room}`);
          ws.send(JSON.stringify({ type: "ok", ref, room: req.room, seq: seqs.get(req.room ?? "") ?? 0, members: [] }));
          return;
        case "send": {
          const room = req.room ?? "";
          const seq = (seqs.get(room) ?? 0) + 1;
          seqs.set(room, seq);
          const now = Date.now();
          insert?.run(1, seq, 1, req.body ?? "", req.nonce ?? null, now);
          const at = new Date(now).toISOString();
          ws.send(JSON.stringify({ type: "ok", ref, seq, at }));
          server.publish(`room:${room}`, JSON.stringify({ type: "message", room, seq, user: "bench", body: req.body, at }));
          return;
        }
        case "history": {
          const name = req.room ?? "";
          let id = roomIds.get(name);
          if (id === undefined) roomIds.set(name, (id = roomId!.get(name)?.id ?? -1));
          const rows = history!.all(id, req.before ?? Number.MAX_SAFE_INTEGER, req.limit ?? 50).reverse();
          const messages = rows.map((r) => {
            const m: Record<string, unknown> = { room: req.room, seq: r.seq, user: r.user, body: r.body, at: new Date(r.at).toISOString() };
            if (r.nonce !== null) m.nonce = r.nonce;
            return m;
          });
          ws.send(JSON.stringify({ type: "ok", ref, messages, hasMore: messages.length > 0 && (rows[0]?.seq ?? 0) > 1 }));
          return;
        }
        default:
          ws.send(JSON.stringify({ type: "ok", ref }));
      }
    },
  },
});

process.stdout.write(JSON.stringify({ port: server.port }) + "\n");
process.on("SIGTERM", () => {
  server.stop(true);
  db?.close();
  process.exit(0);
});
