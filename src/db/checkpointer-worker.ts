/**
 * The checkpointer thread (see checkpointer.ts): its own connection to the database
 * file, folding the WAL into the database every `intervalMs` with a PASSIVE checkpoint,
 * which never waits for, or blocks, the server's connection; and making a WAL that has
 * grown past `restartFrames` start over (see `restart`).
 */
import { Database } from "bun:sqlite";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import type { FromCheckpointer, ToCheckpointer } from "./checkpointer.ts";

declare const self: Worker;

let db: Database | null = null;
/** SQLite's page size here (its default): a WAL frame holds one page. */
const PAGE_BYTES = 4096;
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
 * (after the TRUNCATE at shutdown) or missing.
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

/** The last checkpoint's answer: the WAL's generation, its frames, and how many of them are copied. */
let last = { gen: -1, log: 0, done: 0 };

/**
 * Frames a checkpoint copied. SQLite answers with running totals for the current WAL,
 * so a WAL that went on counts from the last answer, and a new one from zero. A full
 * copy does not mean a new WAL: a commit that began before the copy finished appends to
 * the old one (counting that case as new counted each frame about 20 times under writes
 * that never pause). The generation is read before and after the checkpoint, since a
 * commit can start a new WAL on either side of it:
 * - before it: the answer is about the new WAL, which has fewer frames than the last
 *   answer (the comparison below catches it) and is counted from zero; it is filed
 *   under the generation read after, so that the next answer about it counts from this
 *   one (filed under the old generation, it would be counted from zero a second time).
 *   A RESTART may wait up to RESTART_WAIT_MS for the write lock while commits go on;
 *   the old WAL had at least `restartFrames` (64 MiB), which a new one cannot reach in
 *   50 ms. With a threshold of 64 frames in a test, it did, and 14 frames were counted
 *   twice;
 * - after it (the checkpoint copied every frame): the answer is about the old WAL, and
 *   the new one, not seen yet, is counted from zero next time.
 */
function freshFrames(before: number, after: number, log: number, done: number): number {
  // A checkpoint that could not run at all (busy: a lock it needs was held) answers -1
  // and -1. Taken as an answer, the next one was counted from -1 instead of from the
  // answer before (in one traced run, 253 frames for 162).
  if (log < 0 || done < 0) return 0;
  const sameWal = before === last.gen && log >= last.log && done >= last.done;
  const fresh = sameWal ? done - last.done : done;
  last = before !== after && sameWal ? { gen: after, log: 0, done: 0 } : { gen: after, log, done };
  return fresh;
}

type CheckpointResult = { busy: number; log: number; checkpointed: number };

/**
 * Runs a checkpoint and reports the frames it copied (see `freshFrames`). With `waitMs`,
 * it waits that long at most for the locks it needs instead of BUSY_TIMEOUT_MS.
 */
function counted(mode: "PASSIVE" | "RESTART" | "TRUNCATE", waitMs?: number): CheckpointResult {
  if (waitMs !== undefined) db!.run(`PRAGMA busy_timeout = ${waitMs}`);
  try {
    const before = walGeneration();
    const r = db!.query<CheckpointResult, []>(`PRAGMA wal_checkpoint(${mode})`).get()!;
    const fresh = freshFrames(before, walGeneration(), r.log, r.checkpointed);
    if (fresh > 0) post({ type: "checkpointed", frames: fresh });
    return r;
  } finally {
    if (waitMs !== undefined) db!.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
  }
}

/** Frames in the WAL past which a PASSIVE checkpoint is followed by a RESTART one. */
let restartFrames = Number.POSITIVE_INFINITY;
/** How long a RESTART waits for the write lock, then for readers, before giving up. */
const RESTART_WAIT_MS = 50;
/** After a RESTART that gave up, the next one waits this long (a `backup` reads for seconds). */
const RESTART_RETRY_MS = 10_000;
let nextRestartAt = 0;
/** The last PASSIVE answer: the same one twice, all copied, means no commit for an interval. */
let previous: CheckpointResult = { busy: 0, log: -1, checkpointed: -1 };

/** The PASSIVE checkpoint's frame figure while a RESTART waits for the server to hold its commits. */
let restartAsked: number | null = null;

function checkpoint(): void {
  // No round while the server holds its commits for a RESTART: that comes next.
  if (restartAsked !== null) return;
  try {
    const r = counted("PASSIVE");
    const idle = r.log > 0 && r.checkpointed === r.log && r.log === previous.log && r.checkpointed === previous.checkpointed;
    previous = r;
    if (idle) truncateIfLarge();
    else if (r.log >= restartFrames && performance.now() >= nextRestartAt) {
      restartAsked = r.log;
      post({ type: "restart_wanted", frames: r.log });
    }
  } catch (err) {
    reportError(err);
  }
}

/** Not fatal: SQLITE_BUSY from another checkpoint (a `backup` in another process, say); next time. */
function reportError(err: unknown): void {
  post({ type: "error", message: err instanceof Error ? err.message : String(err), fatal: false });
}

/**
 * A WAL starts over only when a writer finds every frame copied, so under writes that
 * never pause (each PASSIVE checkpoint ends with newer commits behind it) it would grow
 * for as long as they last. Past `restartFrames`, a RESTART checkpoint copies the rest
 * and waits until no reader is left in the WAL, so that the server's next commit starts
 * it over from its beginning: the file stops growing (it keeps its size until writes
 * pause; see `truncateIfLarge`). It takes the write lock while it copies the frames
 * written since the PASSIVE one and syncs, so it runs only once the server holds its
 * commits (`restart_wanted`, then `writes_held`; see WriteGate). A commit that waited
 * for the lock instead blocked the event loop for 20-47 ms at 64 MiB (bench/wal-stall.ts),
 * rounded up to the steps of SQLite's busy wait; and with commits back to back the
 * RESTART seldom got the lock at all. (A TRUNCATE, which also empties the file, held it
 * back 55-120 ms: freeing the file's pages alone took 30 ms.) The wait for readers is
 * cut to RESTART_WAIT_MS: a reader that stays (a `backup`) would hold every commit back.
 * Given up, it is tried again RESTART_RETRY_MS later.
 */
function restart(passiveLog: number): void {
  // Its copies count like any other checkpoint's, given up or not.
  const t = counted("RESTART", RESTART_WAIT_MS);
  if (t.busy !== 0) {
    nextRestartAt = performance.now() + RESTART_RETRY_MS;
    // A RESTART that could not run at all answers -1 frames: the PASSIVE one's figure then.
    post({ type: "restart_deferred", frames: t.log >= 0 ? t.log : passiveLog, retryInMs: RESTART_RETRY_MS });
    return;
  }
  post({ type: "restarted", frames: t.log });
}

/**
 * A RESTART leaves the WAL file at its largest size (64 MiB and more). Once no commit
 * has come for a whole interval and every frame is copied, a file that large is emptied
 * with a TRUNCATE checkpoint that does not wait: if a commit or a reader comes after
 * all, it gives up at once, and tries again at the next quiet round. Freeing 64 MiB
 * took the kernel about 30 ms; with nobody writing, nobody waits for it.
 */
function truncateIfLarge(): void {
  let bytes: number;
  try {
    bytes = statSync(walPath).size;
  } catch {
    return;
  }
  if (bytes < restartFrames * PAGE_BYTES) return;
  if (counted("TRUNCATE", 0).busy === 0) post({ type: "truncated", bytes });
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
    restartFrames = msg.restartFrames;
    walPath = `${msg.path}-wal`;
    timer = setInterval(checkpoint, msg.intervalMs);
    post({ type: "started" });
  } else if (msg.type === "writes_held") {
    const frames = restartAsked;
    restartAsked = null;
    if (frames === null || db === null) return;
    try {
      restart(frames);
    } catch (err) {
      reportError(err);
    }
  } else {
    if (timer) clearInterval(timer);
    db?.close();
    db = null;
    post({ type: "stopped" });
  }
});
