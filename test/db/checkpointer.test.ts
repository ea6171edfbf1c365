import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
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
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger("debug", (line) => lines.push(JSON.parse(line)));
  const cp = startCheckpointer({ client: s.client, path: join(dir, "missing", "nope.db"), sync: "NORMAL", log });
  await cp.ready;
  expect(autocheckpoint(s)).toBe(1000);
  expect(lines).toMatchObject([{ level: "error", event: "checkpointer_failed", fallback: "the server's connection checkpoints" }]);
  await cp.stop();
  expect(lines).toHaveLength(1);
});
