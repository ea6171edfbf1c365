import type { Database } from "bun:sqlite";
import type { Logger } from "../log.ts";
import type { DbSync } from "./open.ts";

/** SQLite's default `wal_autocheckpoint`, put back when the thread stops or fails. */
const AUTOCHECKPOINT_PAGES = 1000;
/** How long `stop` waits for the thread to close its connection before ending it. */
const STOP_WAIT_MS = 500;

/**
 * WAL frames (pages of 4 KiB) past which the thread makes the next commit start the WAL
 * over with a RESTART checkpoint: 64 MiB. Writes that never pause would grow it without
 * end (see the worker).
 */
export const RESTART_FRAMES = 16_384;

export type ToCheckpointer = { type: "start"; path: string; sync: DbSync; intervalMs: number; restartFrames: number } | { type: "stop" };
export type FromCheckpointer =
  | { type: "started" }
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

export interface Checkpointer {
  /** Checkpoints that copied frames, the frames they copied, and the WALs started over past RESTART_FRAMES (for /metrics). */
  readonly stats: CheckpointStats;
  /** Resolves once the thread has started (or failed and handed checkpoints back). */
  readonly ready: Promise<void>;
  /** Ends the thread and hands checkpoints back to the server's connection. */
  stop(): Promise<void>;
}

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
}): Checkpointer {
  const { client, path, sync, log } = opts;
  const stats: CheckpointStats = { checkpoints: 0, frames: 0, restarts: 0 };
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

  let gone = false;
  function finish(): void {
    if (gone) return;
    gone = true;
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
      case "restarted":
        stats.restarts++;
        log.debug("wal_restarted", { frames: msg.frames });
        return;
      case "truncated":
        log.debug("wal_truncated", { bytes: msg.bytes, why: "writes paused" });
        return;
      case "restart_deferred":
        log.info("wal_restart_deferred", { frames: msg.frames, why: "the WAL stayed in use (a reader, or commits back to back)", retryInMs: msg.retryInMs });
        return;
      case "error":
        if (!msg.fatal) return log.warn("checkpoint_failed", { err: msg.message });
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
