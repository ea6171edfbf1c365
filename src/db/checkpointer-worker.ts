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

/** The last PASSIVE checkpoint's answer: frames in the WAL, and how many of them are copied. */
let last = { log: 0, done: 0 };

/**
 * Frames this checkpoint copied. SQLite answers with running totals for the current
 * WAL, so an idle WAL answers the same numbers every time: nothing new. Once a
 * checkpoint has copied every frame, the next commit starts the WAL over (unless a
 * reader holds an old snapshot), so any change after a full copy counts as a new WAL.
 */
function freshFrames(log: number, done: number): number {
  const same = log === last.log && done === last.done;
  const restarted = log < last.log || done < last.done || (last.done === last.log && last.log > 0);
  const fresh = same ? 0 : restarted ? done : done - last.done;
  last = { log, done };
  return fresh;
}

function checkpoint(): void {
  try {
    const r = db!.query<{ log: number; checkpointed: number }, []>("PRAGMA wal_checkpoint(PASSIVE)").get()!;
    const frames = freshFrames(r.log, r.checkpointed);
    if (frames > 0) post({ type: "checkpointed", frames });
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
