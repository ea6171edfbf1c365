import type { Database } from "bun:sqlite";
import { throttled, type Logger } from "../log.ts";
import type { DbSync } from "./open.ts";

/** SQLite's default `wal_autocheckpoint`, put back when the thread stops or fails. */
const AUTOCHECKPOINT_PAGES = 1000;
/** How long `stop` waits for the thread to close its connection before ending it. */
const STOP_WAIT_MS = 500;
/**
 * How long the server's commits stay held for one RESTART at most. The thread's own wait
 * for readers is 50 ms; past this the commits go on, and wait for the lock in SQLite.
 */
export const HOLD_MAX_MS = 250;

/**
 * WAL frames (pages of 4 KiB) past which the thread makes the next commit start the WAL
 * over with a RESTART checkpoint: 64 MiB. Writes that never pause would grow it without
 * end (see the worker).
 */
export const RESTART_FRAMES = 16_384;

export type ToCheckpointer =
  | { type: "start"; path: string; sync: DbSync; intervalMs: number; restartFrames: number }
  /** The server's commits are held (see WriteGate): the RESTART may run. */
  | { type: "writes_held" }
  | { type: "stop" };
export type FromCheckpointer =
  | { type: "started" }
  /** The WAL has `frames` frames, past the threshold: hold the commits for a RESTART. */
  | { type: "restart_wanted"; frames: number }
  | { type: "checkpointed"; frames: number }
  /** A RESTART checkpoint copied all of a WAL of `frames` frames: the next commit starts it over. */
  | { type: "restarted"; frames: number }
  /** Writes paused, and a WAL file a RESTART had left at `bytes` was emptied. */
  | { type: "truncated"; bytes: number }
  /** A RESTART checkpoint gave up (the WAL stayed in use); the next is `retryInMs` away. */
  | { type: "restart_deferred"; frames: number; retryInMs: number }
  | { type: "error"; message: string; fatal: boolean }
  | { type: "stopped" };

export interface CheckpointStats {
  checkpoints: number;
  frames: number;
  restarts: number;
}

/**
 * The server's writer, held while the thread runs a RESTART. A RESTART takes the write
 * lock while it copies and syncs; a commit that comes meanwhile waits for the lock in
 * SQLite's busy handler, which blocks the event loop and sleeps in steps of 1, 2, 5, 10,
 * 15, 20 ms... So the thread asks first, and the server queues its sends (without
 * blocking anything else) until the RESTART is over, then commits them in one go.
 * The server's other writes (a sign-up, a sign-in's session) are
 * rare next to sends and are not held: one that comes during a RESTART waits as before.
 */
export interface WriteGate {
  /** From now until `release`, commit nothing. */
  hold(): void;
  /** Commit what was queued. Called once per `hold`. */
  release(): void;
}

export interface Checkpointer {
  /** Checkpoints that copied frames, the frames they copied, and the WALs started over past RESTART_FRAMES (for /metrics). */
  readonly stats: CheckpointStats;
  /** Resolves once the thread has started (or failed and handed checkpoints back). */
  readonly ready: Promise<void>;
  /** Ends the thread and hands checkpoints back to the server's connection. */
  stop(): Promise<void>;
}

const round2 = (ms: number) => Math.round(ms * 100) / 100;

/**
 * The thread's entry point. In a binary from `npm run build` (which lists it as an
 * entry point) every module's `import.meta.url` is the binary's, and the worker sits
 * at its path below `src/`, the common root of the entry points.
 */
function workerUrl(): string {
  const compiled = import.meta.url.startsWith("file:///$bunfs/");
  return new URL(compiled ? "./db/checkpointer-worker.ts" : "./checkpointer-worker.ts", import.meta.url).href;
}

/**
 * Moves WAL checkpoints off the event loop. By default SQLite checkpoints inside the
 * commit that takes the WAL past 1000 pages: it copies the pages back and, in WAL mode
 * with synchronous NORMAL or FULL, fsyncs twice, and bun:sqlite waits for all of it on
 * the thread that serves the sockets. With fan-out traffic that was one commit in a
 * hundred, taking up to 20-27 ms, and more than half of all the time spent committing.
 *
 * Here the server's connection stops checkpointing (`wal_autocheckpoint = 0`) and a
 * worker thread with its own connection runs a PASSIVE checkpoint every `intervalMs`.
 * PASSIVE never blocks the writer; once it has copied every frame, the next commit
 * starts the WAL over from its beginning, so the file stays as large as a few
 * intervals of writes. If the thread cannot start or dies, the server's connection
 * goes back to checkpointing itself.
 */
export function startCheckpointer(opts: {
  client: Database;
  path: string;
  sync: DbSync;
  log: Logger;
  intervalMs?: number;
  /** WAL frames past which it is started over (RESTART_FRAMES unless a test asks for fewer). */
  restartFrames?: number;
  /** Called after each checkpoint that copied frames. */
  onCheckpoint?: (frames: number) => void;
  /** The server's writer, held during each RESTART. Without one, commits wait for the lock in SQLite. */
  gate?: WriteGate;
  /** HOLD_MAX_MS unless a test asks for less. */
  holdMaxMs?: number;
}): Checkpointer {
  const { client, path, sync, log } = opts;
  const stats: CheckpointStats = { checkpoints: 0, frames: 0, restarts: 0 };
  // Tried every 200 ms: a read-only file or a full disk failed each one.
  const logCheckpointFailed = throttled(log.warn, 10_000);
  let stopped = false;
  let onStopped: (() => void) | null = null;
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));

  client.run("PRAGMA wal_autocheckpoint = 0");
  const worker = new Worker(workerUrl(), { ref: false });

  function handBack(): void {
    try {
      client.run(`PRAGMA wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
    } catch {
      // The connection is closed already: nothing left to checkpoint for.
    }
  }

  /** When the gate was held (performance.now()), while it is. */
  let heldSince: number | null = null;
  let holdTimer: ReturnType<typeof setTimeout> | undefined;
  /** Lets the server commit again; returns how long it was held, in ms. */
  function releaseGate(): number {
    if (heldSince === null) return 0;
    const ms = performance.now() - heldSince;
    heldSince = null;
    clearTimeout(holdTimer);
    opts.gate?.release();
    return ms;
  }
  function holdGate(frames: number): void {
    if (gone) return; // the thread is ending: no RESTART now
    if (opts.gate && heldSince === null) {
      heldSince = performance.now();
      opts.gate.hold();
      log.debug("wal_restart_holding", { frames });
      const holdMaxMs = opts.holdMaxMs ?? HOLD_MAX_MS;
      holdTimer = setTimeout(() => {
        log.warn("wal_restart_slow", { frames, heldMs: Math.round(releaseGate()), why: "commits go on and wait for the lock" });
      }, holdMaxMs);
    }
    worker.postMessage({ type: "writes_held" } satisfies ToCheckpointer);
  }

  let gone = false;
  function finish(): void {
    if (gone) return;
    gone = true;
    releaseGate();
    handBack();
    worker.terminate();
    onReady();
    onStopped?.();
  }

  worker.addEventListener("message", (e: MessageEvent<FromCheckpointer>) => {
    const msg = e.data;
    switch (msg.type) {
      case "started":
        onReady();
        return;
      case "checkpointed":
        stats.checkpoints++;
        stats.frames += msg.frames;
        opts.onCheckpoint?.(msg.frames);
        return;
      case "restart_wanted":
        return holdGate(msg.frames);
      case "restarted":
        stats.restarts++;
        log.debug("wal_restarted", { frames: msg.frames, heldMs: round2(releaseGate()) });
        return;
      case "truncated":
        log.debug("wal_truncated", { bytes: msg.bytes, why: "writes paused" });
        return;
      case "restart_deferred":
        releaseGate();
        log.info("wal_restart_deferred", { frames: msg.frames, why: "the WAL stayed in use (a reader, or commits back to back)", retryInMs: msg.retryInMs });
        return;
      case "error":
        releaseGate();
        if (!msg.fatal) return logCheckpointFailed("checkpoint_failed", { err: msg.message });
        log.error("checkpointer_failed", { err: msg.message, fallback: "the server's connection checkpoints" });
        return finish();
      case "stopped":
        return finish();
    }
  });
  worker.addEventListener("error", (e: ErrorEvent) => {
    log.error("checkpointer_failed", { err: e.message, fallback: "the server's connection checkpoints" });
    finish();
  });
  worker.addEventListener("close", () => {
    if (!stopped) log.error("checkpointer_failed", { err: "thread exited", fallback: "the server's connection checkpoints" });
    finish();
  });
  worker.postMessage({
    type: "start",
    path,
    sync,
    intervalMs: opts.intervalMs ?? 200,
    restartFrames: opts.restartFrames ?? RESTART_FRAMES,
  } satisfies ToCheckpointer);

  return {
    stats,
    ready,
    stop() {
      if (gone) return Promise.resolve();
      stopped = true;
      return new Promise<void>((resolve) => {
        onStopped = resolve;
        worker.postMessage({ type: "stop" } satisfies ToCheckpointer);
        // A checkpoint waiting on another process's lock: do not hold a shutdown for it.
        setTimeout(finish, STOP_WAIT_MS).unref();
      });
    },
  };
}
