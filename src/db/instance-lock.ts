import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

export interface InstanceLock {
  release(): void;
}

/**
 * One Switchboard per database file. A second one would keep its own latest seq per
 * room in memory and assign the seqs the first assigns, and a newer `migrate` would
 * change the schema under a running server. The lock is SQLite's own (an fcntl lock)
 * on a small file beside the database, `<db>.lock`, taken by a write in exclusive
 * locking mode and held for the life of the connection: the kernel drops it when the
 * process ends, even on `kill -9`. Returns null when another process holds it.
 */
export function lockDatabase(path: string): InstanceLock | null {
  mkdirSync(dirname(path), { recursive: true });
  const lock = new Database(`${path}.lock`, { create: true, strict: true });
  try {
    lock.run("PRAGMA busy_timeout = 0");
    lock.run("PRAGMA locking_mode = EXCLUSIVE");
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
  return { release: () => lock.close() };
}
