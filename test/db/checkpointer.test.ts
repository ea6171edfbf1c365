import { afterEach, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCheckpointer } from "../../src/db/checkpointer.ts";
import { openStore, type Store } from "../../src/db/open.ts";
import { createLogger, silentLogger } from "../../src/log.ts";

let dir: string;
let store: Store | undefined;
afterEach(() => {
  store?.close();
  store = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function fileStore(): Store {
  dir = mkdtempSync(join(tmpdir(), "switchboard-ckpt-"));
  store = openStore(join(dir, "s.db"), "NORMAL");
  return store;
}
/** A logger at debug level whose lines are kept, parsed. */
function capture() {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: createLogger("debug", (line) => lines.push(JSON.parse(line))) };
}
const fillerRows = (s: Store) => s.client.query<{ n: number }, []>("SELECT count(*) AS n FROM filler").get()!.n;
const autocheckpoint = (s: Store) => s.client.query<{ wal_autocheckpoint: number }, []>("PRAGMA wal_autocheckpoint").get()!.wal_autocheckpoint;
/** Writes about `mib` MiB in one transaction: 4 KiB pages that land in the WAL. */
function write(s: Store, mib: number): void {
  s.client.run("CREATE TABLE IF NOT EXISTS filler (b BLOB)");
  const insert = s.client.prepare("INSERT INTO filler (b) VALUES (randomblob(3000))");
  s.client.transaction(() => {
    for (let i = 0; i < mib * 350; i++) insert.run();
  })();
}

test("the thread folds the WAL into the database while the server's connection stops checkpointing", async () => {
  const s = fileStore();
  let copied = 0;
  let enough!: () => void;
  const allCopied = new Promise<void>((r) => (enough = r));
  let onMore = () => {};
  const onCheckpoint = (frames: number) => {
    if ((copied += frames) > 700) enough();
    onMore();
  };
  const cp = startCheckpointer({ client: s.client, path: s.path, sync: s.sync, log: silentLogger, intervalMs: 10, onCheckpoint });
  await cp.ready;
  expect(autocheckpoint(s)).toBe(0);
  const before = statSync(s.path).size;
  write(s, 3); // ~770 pages: under the default 1000, so only the thread checkpoints them
  await allCopied;
  expect(cp.stats.checkpoints).toBeGreaterThan(0);
  expect(cp.stats.frames).toBeGreaterThan(700);
  // The pages are in the database file now, not only in the WAL.
  expect(statSync(s.path).size - before).toBeGreaterThan(2.5 * 2 ** 20);

  // Idle: the checkpoints that find nothing new to copy are not counted. (About ten
  // intervals: there is no event for a checkpoint that copied nothing.)
  const idle = { ...cp.stats };
  await Bun.sleep(100);
  expect(cp.stats).toEqual(idle);
  // The next write is counted once, its own frames only.
  let more!: () => void;
  const copiedMore = new Promise<void>((r) => (more = r));
  const counted = copied;
  onMore = () => {
    if (copied - counted >= 350) more();
  };
  write(s, 1);
  await copiedMore;
  expect(cp.stats.frames - idle.frames).toBeLessThan(500);

  await cp.stop();
  expect(autocheckpoint(s)).toBe(1000);
  await cp.stop(); // twice is fine
});

/**
 * A server under writes that never pause: a small commit, then 100 µs of other work
 * (publishing, replies), `turns` times, so that every PASSIVE checkpoint ends with newer
 * commits behind it. Returns the rows written and the WAL's largest size seen.
 */
async function writeWithoutPause(s: Store, turns: number): Promise<{ rows: number; maxWal: number }> {
  s.client.run("CREATE TABLE IF NOT EXISTS filler (b BLOB)");
  const insert = s.client.prepare("INSERT INTO filler (b) VALUES (randomblob(200))");
  const commit = s.client.transaction(() => {
    for (let i = 0; i < 8; i++) insert.run();
  });
  const wal = `${s.path}-wal`;
  let maxWal = 0;
  for (let turn = 0; turn < turns; turn++) {
    commit();
    if (turn % 16 === 0 && existsSync(wal)) maxWal = Math.max(maxWal, statSync(wal).size);
    const busyUntil = performance.now() + 0.1;
    while (performance.now() < busyUntil) {
      // the rest of the turn's work, without the write lock
    }
    await new Promise<void>((r) => setImmediate(r));
  }
  return { rows: turns * 8, maxWal };
}
type CheckpointResult = { busy: number; log: number; checkpointed: number };

/**
 * Polls `done` every 5 ms for up to `ms`: the checkpointer is a thread, so there is no
 * event to await here. Generous, since a loaded machine delays the thread (two busy
 * processes beside it once took the WAL truncation past 2 s).
 */
async function waitUntil(done: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await Bun.sleep(5);
}
const walBytes = (s: Store) => (existsSync(`${s.path}-wal`) ? statSync(`${s.path}-wal`).size : 0);

/** Commits: each adds at least one 4 KiB page, so 12 MiB or more in all. */
const TURNS = 3000;

test("under writes that never pause, a WAL past restartFrames starts over instead of growing", async () => {
  const s = fileStore();
  const restartFrames = 256; // 1 MiB
  const cp = startCheckpointer({ client: s.client, path: s.path, sync: s.sync, log: silentLogger, intervalMs: 5, restartFrames });
  await cp.ready;
  const { rows, maxWal } = await writeWithoutPause(s, TURNS);
  await Bun.sleep(20); // the thread's messages
  // Without the RESTART (restartFrames: Infinity) the same writes left a WAL of 19 MiB
  // on an idle machine; with two busy processes beside it, 7-19 MiB, as checkpoints then
  // sometimes finish between two commits. So this count is what tells.
  expect(cp.stats.restarts).toBeGreaterThan(0);
  // Started over past 1 MiB, it holds what the writes add while the thread waits its turn
  // (5 ms, and longer on a loaded machine): generously bounded.
  expect(maxWal).toBeLessThan(6 * 2 ** 20);
  expect(walBytes(s)).toBeLessThan(6 * 2 ** 20);
  // Nothing was lost on the way.
  expect(fillerRows(s)).toBe(rows);
  await cp.stop();
});

test("once writes pause, a WAL file that RESTARTs left large is emptied, and nothing is lost", async () => {
  const s = fileStore();
  const { lines, log } = capture();
  const restartFrames = 256; // 1 MiB
  const cp = startCheckpointer({ client: s.client, path: s.path, sync: s.sync, log, intervalMs: 5, restartFrames });
  await cp.ready;
  let { rows, maxWal } = await writeWithoutPause(s, TURNS);
  expect(maxWal).toBeGreaterThanOrEqual(restartFrames * 4096);
  // On a loaded machine the thread can find a quiet round between two turns and empty
  // the file then (once, under 17% of the CPU stolen, it was 786,952 bytes at the end,
  // too small to empty: as designed). Write on until the file is large again.
  while (walBytes(s) < restartFrames * 4096) rows += (await writeWithoutPause(s, 200)).rows;
  const truncations = () => lines.filter((l) => l.event === "wal_truncated").length;
  const before = truncations();
  // Quiet now: two rounds with nothing new, then the file is emptied (and the thread's
  // message saying so arrives a moment after the file is).
  await waitUntil(() => walBytes(s) === 0 && truncations() > before);
  expect(walBytes(s)).toBe(0);
  expect(lines.find((l) => l.event === "wal_truncated")).toMatchObject({ level: "debug", why: "writes paused" });
  expect(cp.stats.restarts).toBeGreaterThan(0);
  // Nothing was lost, and the next commit starts a new WAL that is checkpointed as before.
  expect(fillerRows(s)).toBe(rows);
  const framesBefore = cp.stats.frames;
  s.client.run("INSERT INTO filler (b) VALUES (randomblob(200))");
  await waitUntil(() => cp.stats.frames > framesBefore);
  expect(cp.stats.frames).toBeGreaterThan(framesBefore);
  await cp.stop();
}, 30_000);

test.each([
  ["", Number.POSITIVE_INFINITY],
  // 512: past it a RESTART runs every few hundred commits here, and its wait for the
  // write lock (50 ms at most) cannot let a new WAL grow that large (see freshFrames).
  [", RESTARTs past 512 frames included", 512],
] as const)("the frames counted are the frames written, under writes that race the checkpoints%s", async (_, restartFrames) => {
  // The truth: the same writes with nobody checkpointing leave every frame in one WAL.
  const a = fileStore();
  a.client.run("PRAGMA wal_autocheckpoint = 0");
  await writeWithoutPause(a, 1500);
  const written = a.client.query<CheckpointResult, []>("PRAGMA wal_checkpoint(PASSIVE)").get()!.log;
  a.close();
  store = undefined;
  rmSync(dir, { recursive: true, force: true });

  // Now with the thread: a commit often begins before a checkpoint that copies every
  // frame has finished, and then the WAL goes on instead of starting over.
  const s = fileStore();
  let settled!: () => void;
  const done = new Promise<void>((r) => (settled = r));
  let writing = true;
  const cp = startCheckpointer({
    client: s.client,
    path: s.path,
    sync: s.sync,
    log: silentLogger,
    intervalMs: 5,
    restartFrames,
    onCheckpoint: () => {
      if (!writing && cp.stats.frames >= written) settled();
    },
  });
  await cp.ready;
  await writeWithoutPause(s, 1500);
  writing = false;
  await Promise.race([done, Bun.sleep(1000)]);
  await Bun.sleep(30); // a few more rounds: nothing more may be counted
  // Counted once each: not the WAL's running total again after every full copy (20x too
  // many), nor from a busy checkpoint's -1 (this failed 3 runs in 12 before that fix:
  // 3427, 3620 and 5626 for 3336).
  expect(cp.stats.frames).toBe(written);
  // A RESTART's copies count too, and the WAL it makes start over is counted from zero.
  expect(cp.stats.restarts > 0).toBe(restartFrames !== Number.POSITIVE_INFINITY);
  await cp.stop();
});

test("a reader that stays in the WAL defers the RESTART, which holds commits back briefly, not for its whole wait", async () => {
  const s = fileStore();
  const { lines, log } = capture();
  const cp = startCheckpointer({ client: s.client, path: s.path, sync: s.sync, log, intervalMs: 5, restartFrames: 64 });
  await cp.ready;
  s.client.run("CREATE TABLE filler (b BLOB)");
  const insert = s.client.prepare("INSERT INTO filler (b) VALUES (randomblob(200))");
  insert.run();
  // Another connection holds a snapshot open, as `backup` (VACUUM INTO) does for seconds.
  const reader = new Database(s.path, { readonly: true });
  reader.run("BEGIN");
  reader.query("SELECT count(*) FROM filler").get();
  const deferred = () => lines.some((l) => l.event === "wal_restart_deferred");
  let longest = 0;
  for (let turn = 0; turn < 20_000 && !deferred(); turn++) {
    const t0 = performance.now();
    insert.run();
    longest = Math.max(longest, performance.now() - t0);
    await new Promise<void>((r) => setImmediate(r));
  }
  expect(lines.find((l) => l.event === "wal_restart_deferred")).toMatchObject({ level: "info", retryInMs: 10_000 });
  expect(cp.stats.restarts).toBe(0);
  // It gave up after 50 ms of waiting for the reader. With the connection's own 1 s
  // busy timeout, the commit behind it waited a second, again every round.
  expect(longest).toBeLessThan(500);
  reader.run("COMMIT");
  reader.close();
  await cp.stop();
});

/**
 * A write gate like the server's, for a writer that commits nothing while it is held.
 * Records, for each hold, the restarts counted when it was released.
 */
function gatedWriter() {
  const gate = {
    held: false,
    holds: 0,
    /** `cp.stats.restarts` at each release. */
    releasedAt: [] as number[],
    stats: { restarts: 0 },
    hold() {
      gate.held = true;
      gate.holds++;
    },
    release() {
      gate.held = false;
      gate.releasedAt.push(gate.stats.restarts);
    },
  };
  return gate;
}

test("the thread holds the server's commits for each RESTART and lets them go once it is done", async () => {
  const s = fileStore();
  const { lines, log } = capture();
  const gate = gatedWriter();
  const cp = startCheckpointer({ client: s.client, path: s.path, sync: s.sync, log, intervalMs: 5, restartFrames: 256, gate });
  gate.stats = cp.stats;
  await cp.ready;
  s.client.run("CREATE TABLE filler (b BLOB)");
  const insert = s.client.prepare("INSERT INTO filler (b) VALUES (randomblob(200))");
  const commit = s.client.transaction(() => {
    for (let i = 0; i < 8; i++) insert.run();
  });
  let rows = 0;
  // Back to back, but for the gate: without it a RESTART seldom gets the lock (see docs/operations.md).
  for (let turn = 0; turn < 20_000 && gate.releasedAt.length < 3; turn++) {
    if (!gate.held) {
      commit();
      rows += 8;
    }
    await new Promise<void>((r) => setImmediate(r));
  }
  // Every hold was let go, each by a RESTART that had finished: none by the time limit.
  expect(gate.holds).toBeGreaterThanOrEqual(3);
  expect(gate.releasedAt).toEqual(gate.releasedAt.map((_, i) => i + 1));
  expect(lines.filter((l) => l.event === "wal_restarted")).toHaveLength(gate.releasedAt.length);
  expect(lines.find((l) => l.event === "wal_restarted")).toMatchObject({ level: "debug", heldMs: expect.any(Number) });
  expect(lines.some((l) => l.event === "wal_restart_slow" || l.event === "wal_restart_deferred")).toBe(false);
  expect(walBytes(s)).toBeLessThan(6 * 2 ** 20);
  expect(fillerRows(s)).toBe(rows);
  await cp.stop();
});

test("a RESTART given up, or one slower than holdMaxMs, lets the commits go all the same, once", async () => {
  const s = fileStore();
  const { lines, log } = capture();
  const gate = gatedWriter();
  // The RESTART waits 50 ms for the reader below; the hold ends after 5.
  const cp = startCheckpointer({ client: s.client, path: s.path, sync: s.sync, log, intervalMs: 5, restartFrames: 64, gate, holdMaxMs: 5 });
  gate.stats = cp.stats;
  await cp.ready;
  s.client.run("CREATE TABLE filler (b BLOB)");
  const insert = s.client.prepare("INSERT INTO filler (b) VALUES (randomblob(200))");
  insert.run();
  const reader = new Database(s.path, { readonly: true });
  reader.run("BEGIN");
  reader.query("SELECT count(*) FROM filler").get();
  const event = (name: string) => lines.some((l) => l.event === name);
  let commitsHeld = 0;
  for (let turn = 0; turn < 20_000 && !event("wal_restart_deferred"); turn++) {
    if (gate.held) commitsHeld++;
    else insert.run();
    await new Promise<void>((r) => setImmediate(r));
  }
  expect(lines.find((l) => l.event === "wal_restart_slow")).toMatchObject({ level: "warn", heldMs: expect.any(Number) });
  expect(event("wal_restart_deferred")).toBe(true);
  // Let go by the time limit, and not a second time by the thread's answer after it.
  expect(gate.holds).toBe(1);
  expect(gate.releasedAt).toEqual([0]);
  expect(gate.held).toBe(false);
  expect(commitsHeld).toBeGreaterThan(0); // the writer did wait, for a few turns
  reader.run("COMMIT");
  reader.close();
  await cp.stop();
});

test("without the thread the same writes stay in the WAL (the test above is not checkpointed by the server)", () => {
  const s = fileStore();
  s.client.run("PRAGMA wal_autocheckpoint = 0");
  const before = statSync(s.path).size;
  write(s, 3);
  expect(statSync(s.path).size).toBe(before);
  expect(statSync(`${s.path}-wal`).size).toBeGreaterThan(3 * 2 ** 20);
});

test("a thread that cannot open the database hands checkpoints back to the server's connection and says so", async () => {
  const s = fileStore();
  const { lines, log } = capture();
  const cp = startCheckpointer({ client: s.client, path: join(dir, "missing", "nope.db"), sync: "NORMAL", log });
  await cp.ready;
  expect(autocheckpoint(s)).toBe(1000);
  expect(lines).toMatchObject([{ level: "error", event: "checkpointer_failed", fallback: "the server's connection checkpoints" }]);
  await cp.stop();
  expect(lines).toHaveLength(1);
});
