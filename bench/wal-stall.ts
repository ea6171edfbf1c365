/**
 * How long the checkpointer's RESTART (a WAL past its threshold) holds the writer back.
 * Commits 15-row batches through the server's own queries, one per event-loop turn, each
 * followed by `--gap-us` of other work (the server's reading and publishing), with the
 * checkpointer thread running, and times every commit. Like the server, it holds its
 * commits while the thread asks (the write gate) and times each hold, during which the
 * turns go on without a commit; `--no-gate` commits regardless, as before the gate, and
 * then a commit waits for the RESTART's lock inside SQLite. A tool, not part of `npm run bench`.
 *
 *   [DB_SYNC=FULL] bun bench/wal-stall.ts [--seconds 2.5] [--gap-us 100] [--restart-frames 16384] [--body 40] [--no-gate]
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RESTART_FRAMES, startCheckpointer } from "../src/db/checkpointer.ts";
import { openStore } from "../src/db/open.ts";
import { createRoomQueries, type MessageInsert } from "../src/features/rooms/queries.ts";
import { createLogger } from "../src/log.ts";
import { cliOptions } from "./lib/cli.ts";
import { quantile } from "./lib/stats.ts";

const o = cliOptions(process.argv.slice(2));
const gapMs = o.int("gap-us", 100) / 1000;
const restartFrames = o.int("restart-frames", RESTART_FRAMES);
const body = "y".repeat(o.int("body", 40));
const sync = process.env.DB_SYNC === "FULL" ? "FULL" : "NORMAL";
const ROWS = 15;
const SLOW_MS = 5;

const dir = mkdtempSync(join(tmpdir(), "switchboard-wal-stall-"));
try {
  const store = openStore(join(dir, "s.db"), sync);
  const queries = createRoomQueries(store.client);
  store.client.run("INSERT INTO users (username, password_hash, created_at) VALUES ('bench', 'x', 0)");
  const room = { id: queries.insertRoom("stall", 0) };
  const log = createLogger("info");
  const gated = !process.argv.includes("--no-gate");
  let heldSince: number | null = null;
  /** The next commit is the first after a RESTART (it starts the WAL over). */
  let firstAfterHold = false;
  const holds: number[] = [];
  const gate = {
    hold: () => void (heldSince = performance.now()),
    release: () => {
      if (heldSince !== null) holds.push(performance.now() - heldSince);
      heldSince = null;
      firstAfterHold = true;
    },
  };
  const checkpointer = startCheckpointer({ client: store.client, path: store.path, sync, log, restartFrames, ...(gated ? { gate } : {}) });
  await checkpointer.ready;

  let seq = 0;
  const commit = store.client.transaction(() => {
    const rows: MessageInsert[] = [];
    for (let i = 0; i < ROWS; i++) rows.push({ roomId: room.id, seq: ++seq, userId: 1, body, nonce: null, at: Date.now() });
    queries.insertMessages(rows);
    queries.setLatest(room.id, seq);
  });
  const walBytes = () => {
    try {
      return statSync(`${store.path}-wal`).size;
    } catch {
      return 0;
    }
  };

  const times: number[] = [];
  const slow: Array<{ at: number; ms: number; afterHold: boolean }> = [];
  let maxWal = 0;
  const end = performance.now() + o.seconds * 1000;
  let longestTurn = 0;
  let turnStart = performance.now();
  while (performance.now() < end) {
    if (heldSince === null) {
      const t0 = performance.now();
      commit();
      const ms = performance.now() - t0;
      times.push(ms);
      if (ms > SLOW_MS) slow.push({ at: times.length, ms, afterHold: firstAfterHold });
      firstAfterHold = false;
      if (times.length % 50 === 0) maxWal = Math.max(maxWal, walBytes());
    }
    const busyUntil = performance.now() + gapMs;
    while (performance.now() < busyUntil) {
      // the server's other work between two commits
    }
    await new Promise((resolve) => setImmediate(resolve));
    const now = performance.now();
    longestTurn = Math.max(longestTurn, now - turnStart);
    turnStart = now;
  }
  await checkpointer.stop();
  store.close();

  const sorted = [...times].sort((a, b) => a - b);
  process.stdout.write(
    JSON.stringify({
      sync,
      restartFrames,
      gapUs: gapMs * 1000,
      gated,
      commits: times.length,
      restarts: checkpointer.stats.restarts,
      maxWalMiB: Number((maxWal / 2 ** 20).toFixed(1)),
      p50ms: Number(quantile(sorted, 0.5).toFixed(3)),
      p99ms: Number(quantile(sorted, 0.99).toFixed(3)),
      maxMs: Number(sorted.at(-1)!.toFixed(1)),
      // The event loop's longest turn: a commit, the other work, and the thread's messages.
      longestTurnMs: Number(longestTurn.toFixed(1)),
      // How long each RESTART held the commits (they queue meanwhile; nothing else waits).
      holds: holds.length,
      longestHoldMs: holds.length ? Number(Math.max(...holds).toFixed(1)) : 0,
      medianHoldMs: holds.length ? Number(quantile([...holds].sort((a, b) => a - b), 0.5).toFixed(1)) : 0,
      [`over${SLOW_MS}ms`]: slow.length,
      // The ten longest, with the commit's number (restarts come every few thousand).
      // (with --no-gate a RESTART is not seen from here: its commit is one of these.)
      slowest: slow.sort((a, b) => b.ms - a.ms).slice(0, 10).map((c) => `#${c.at}: ${c.ms.toFixed(1)} ms${c.afterHold ? " (first after a hold)" : ""}`),
    }, null, 2) + "\n",
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
