import { Database } from "bun:sqlite";
import { readlinkSync, realpathSync, rmSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { createPrivately, makePrivateFolders } from "./open.ts";

export interface InstanceLock {
  release(): void;
  /** Releases it and removes the lock file if this process made it (the database then could not be opened). */
  discard(): void;
}

/**
 * The database's real path: through a symlink to the file or to its folder, so that two
 * names of one database take one lock. (A hard link is another name the path cannot
 * tell; see docs/operations.md.)
 */
export function realDatabasePath(path: string): string {
  let p = resolve(path);
  for (let hops = 0; hops < 40; hops++) {
    try {
      return realpathSync(p);
    } catch {
      // Not there yet: a symlink names where it will be; anything else is a first start,
      // and the folder's real path with its name is the answer.
    }
    let target: string;
    try {
      target = readlinkSync(p);
    } catch {
      return join(realpathSync(dirname(p)), basename(p));
    }
    p = resolve(dirname(p), target);
  }
  return p; // a loop of symlinks: opening it fails anyway
}

/**
 * One Switchboard per database file. A second one would keep its own latest seq per
 * room in memory and assign the seqs the first assigns, and a newer `migrate` would
 * change the schema under a running server. The lock is SQLite's own (an fcntl lock)
 * on a small file beside the database, `<db>.lock`, taken by a write in exclusive
 * locking mode and held for the life of the connection: the kernel drops it when the
 * process ends, even on `kill -9`. Returns null when another process holds it.
 */
export function lockDatabase(dbPath: string): InstanceLock | null {
  // Before the database: its folders are made here first, private (see createPrivately).
  makePrivateFolders(dbPath);
  const path = `${realDatabasePath(dbPath)}.lock`;
  const made = createPrivately(path); // private, as the database (not by the umask)
  const lock = new Database(path, { create: true, strict: true });
  try {
    lock.run("PRAGMA busy_timeout = 0");
    lock.run("PRAGMA locking_mode = EXCLUSIVE");
    // No `.lock-journal` beside it: what the file holds does not need to survive a crash.
    lock.run("PRAGMA journal_mode = MEMORY");
    lock.run("CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL, since TEXT NOT NULL)");
    // The write is what takes the exclusive lock (CREATE ... IF NOT EXISTS may write nothing).
    lock.transaction(() => {
      lock.run("DELETE FROM holder");
      lock.run("INSERT INTO holder (pid, since) VALUES (?, ?)", [process.pid, new Date().toISOString()]);
    })();
  } catch (e) {
    lock.close();
    if ((e as { code?: string }).code === "SQLITE_BUSY") return null;
    throw e;
  }
  return {
    release: () => lock.close(),
    discard: () => {
      lock.close();
      if (made) rmSync(path, { force: true });
    },
  };
}
