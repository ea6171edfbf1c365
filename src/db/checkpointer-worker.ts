/**
 * The checkpointer thread (see checkpointer.ts): its own connection to the database
 * file, folding the WAL into the database every `intervalMs` with a PASSIVE checkpoint,
 * which never waits for, or blocks, the server's connection; and emptying a WAL that
 * has grown past `truncateFrames` (see `truncate`).
 */
import { Database } from "bun:sqlite";
import type { FromCheckpointer, ToCheckpointer } from "./checkpointer.ts";

declare const self: Worker;

let db: Database | null = null;
/** How long a checkpoint waits for another checkpoint (a `backup` in another process). */
const BUSY_TIMEOUT_MS = 1000;
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

type CheckpointResult = { busy: number; log: number; checkpointed: number };

/** Frames in the WAL past which a PASSIVE checkpoint is followed by a TRUNCATE one. */
let truncateFrames = Number.POSITIVE_INFINITY;
/** How long a TRUNCATE waits for the write lock, then for readers, before giving up. */
const TRUNCATE_WAIT_MS = 50;
/** After a TRUNCATE that gave up, the next one waits this long (a `backup` reads for seconds). */
const TRUNCATE_RETRY_MS = 10_000;
let nextTruncateAt = 0;

function checkpoint(): void {
  try {
    const r = db!.query<CheckpointResult, []>("PRAGMA wal_checkpoint(PASSIVE)").get()!;
    const frames = freshFrames(r.log, r.checkpointed);
    if (frames > 0) post({ type: "checkpointed", frames });
    if (r.log >= truncateFrames && performance.now() >= nextTruncateAt) truncate(r);
  } catch (err) {
    // SQLITE_BUSY from another checkpoint (a `backup` in another process, say): next time.
    post({ type: "error", message: err instanceof Error ? err.message : String(err), fatal: false });
  }
}

/**
 * A WAL starts over only when a writer finds every frame copied, so under writes that
 * never pause (each PASSIVE checkpoint ends with newer commits behind it) it would grow
 * for as long as they last. Past `truncateFrames`, a TRUNCATE checkpoint copies the rest
 * and empties the file. It takes the write lock, so the server's next commit waits while
 * it copies the frames written since the PASSIVE one, syncs, and waits for readers to
 * leave the WAL. That wait is cut to TRUNCATE_WAIT_MS: a reader that stays (a `backup`)
 * would hold every commit back. Given up, it is tried again TRUNCATE_RETRY_MS later.
 */
function truncate(passive: CheckpointResult): void {
  db!.run(`PRAGMA busy_timeout = ${TRUNCATE_WAIT_MS}`);
  let t: CheckpointResult;
  try {
    t = db!.query<CheckpointResult, []>("PRAGMA wal_checkpoint(TRUNCATE)").get()!;
  } finally {
    db!.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  }
  if (t.busy !== 0) {
    nextTruncateAt = performance.now() + TRUNCATE_RETRY_MS;
    post({ type: "truncate_deferred", frames: passive.log, retryInMs: TRUNCATE_RETRY_MS });
    return;
  }
  // The frames after the PASSIVE checkpoint's copy, as far as it saw them: a commit in
  // between adds a few more that are not counted.
  const frames = passive.log - passive.checkpointed;
  last = { log: 0, done: 0 };
  post({ type: "truncated", frames: passive.log });
  if (frames > 0) post({ type: "checkpointed", frames });
}

self.addEventListener("message", (e: MessageEvent<ToCheckpointer>) => {
  const msg = e.data;
  if (msg.type === "start") {
    try {
      db = new Database(msg.path, { create: false, strict: true });
      db.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      db.run(`PRAGMA synchronous = ${msg.sync}`);
    } catch (err) {
      post({ type: "error", message: err instanceof Error ? err.message : String(err), fatal: true });
      return;
    }
    truncateFrames = msg.truncateFrames;
    timer = setInterval(checkpoint, msg.intervalMs);
    post({ type: "started" });
  } else {
    if (timer) clearInterval(timer);
    db?.close();
    db = null;
    post({ type: "stopped" });
  }
});
