/**
 * The checkpointer thread (see checkpointer.ts): its own connection to the database
 * file, folding the WAL into the database every `intervalMs` with a PASSIVE checkpoint,
 * which never waits for, or blocks, the server's connection; and emptying a WAL that
 * has grown past `truncateFrames` (see `truncate`).
 */
import { Database } from "bun:sqlite";
import { closeSync, openSync, readSync } from "node:fs";
import type { FromCheckpointer, ToCheckpointer } from "./checkpointer.ts";

declare const self: Worker;

let db: Database | null = null;
/** How long a checkpoint waits for another checkpoint (a `backup` in another process). */
const BUSY_TIMEOUT_MS = 1000;
let timer: ReturnType<typeof setInterval> | null = null;

function post(msg: FromCheckpointer): void {
  self.postMessage(msg);
}

/** The WAL file, whose header tells one WAL from the next. */
let walPath = "";
const walHeader = Buffer.alloc(16);

/**
 * The WAL's generation: the checkpoint sequence number in its header (bytes 12-15),
 * which SQLite increments each time the WAL starts over; -1 while the file is empty
 * (after a TRUNCATE) or missing.
 */
function walGeneration(): number {
  let fd: number | undefined;
  try {
    fd = openSync(walPath, "r");
    return readSync(fd, walHeader, 0, 16, 0) === 16 ? walHeader.readUInt32BE(12) : -1;
  } catch {
    return -1;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The last PASSIVE checkpoint's answer: the WAL's generation, its frames, and how many of them are copied. */
let last = { gen: -1, log: 0, done: 0 };

/**
 * Frames this checkpoint copied. SQLite answers with running totals for the current
 * WAL, so a WAL that went on counts from the last answer, and a new one from zero.
 * A full copy does not mean a new WAL: a commit that began before the copy finished
 * appends to the old one (counting that case as new counted each frame about 20 times
 * under writes that never pause). The generation is read before the checkpoint; a
 * WAL that starts over in between has fewer frames than the last answer, which the
 * comparison catches.
 */
function freshFrames(gen: number, log: number, done: number): number {
  const sameWal = gen === last.gen && log >= last.log && done >= last.done;
  const fresh = sameWal ? done - last.done : done;
  last = { gen, log, done };
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
    const gen = walGeneration();
    const r = db!.query<CheckpointResult, []>("PRAGMA wal_checkpoint(PASSIVE)").get()!;
    const frames = freshFrames(gen, r.log, r.checkpointed);
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
  last = { gen: -1, log: 0, done: 0 };
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
    walPath = `${msg.path}-wal`;
    timer = setInterval(checkpoint, msg.intervalMs);
    post({ type: "started" });
  } else {
    if (timer) clearInterval(timer);
    db?.close();
    db = null;
    post({ type: "stopped" });
  }
});
