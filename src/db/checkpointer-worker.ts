/**
 * The checkpointer thread (see checkpointer.ts): its own connection to the database
 * file, folding the WAL into the database every `intervalMs` with a PASSIVE checkpoint,
 * which never waits for, or blocks, the server's connection.
 */
import { Database } from "bun:sqlite";
import type { FromCheckpointer, ToCheckpointer } from "./checkpointer.ts";

declare const self: Worker;

let db: Database | null = null;
let timer: ReturnType<typeof setInterval> | null = null;

function post(msg: FromCheckpointer): void {
  self.postMessage(msg);
}

function checkpoint(): void {
  try {
    const r = db!.query<{ checkpointed: number }, []>("PRAGMA wal_checkpoint(PASSIVE)").get()!;
    if (r.checkpointed > 0) post({ type: "checkpointed", frames: r.checkpointed });
  } catch (err) {
    // SQLITE_BUSY from another checkpoint (a `backup` in another process, say): next time.
    post({ type: "error", message: err instanceof Error ? err.message : String(err), fatal: false });
  }
}

self.addEventListener("message", (e: MessageEvent<ToCheckpointer>) => {
  const msg = e.data;
  if (msg.type === "start") {
    try {
      db = new Database(msg.path, { create: false, strict: true });
      db.run("PRAGMA busy_timeout = 1000");
      db.run(`PRAGMA synchronous = ${msg.sync}`);
    } catch (err) {
      post({ type: "error", message: err instanceof Error ? err.message : String(err), fatal: true });
      return;
    }
    timer = setInterval(checkpoint, msg.intervalMs);
    post({ type: "started" });
  } else {
    if (timer) clearInterval(timer);
    db?.close();
    db = null;
    post({ type: "stopped" });
  }
});
