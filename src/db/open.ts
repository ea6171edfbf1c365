import { Database } from "bun:sqlite";
import { closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import * as schema from "./schema.ts";
import { migrate } from "./migrate.ts";

export type Db = BunSQLiteDatabase<typeof schema>;
export type DbSync = "NORMAL" | "FULL";

/** The database as the app sees it: drizzle for queries, the bun:sqlite client for prepared hot paths. */
export interface Store {
  db: Db;
  client: Database;
  /** The file, or `:memory:` (which no other connection can open). */
  path: string;
  sync: DbSync;
  /** The migrations applied when this store was opened (tags, oldest first). */
  migrated: string[];
  close(): void;
}

function wrap(client: Database, path: string, sync: DbSync): Store {
  return { db: drizzle({ client, schema }), client, path, sync, migrated: [], close: () => client.close() };
}

function applyPragmas(client: Database, sync: DbSync, file: boolean): void {
  if (file) {
    client.run("PRAGMA journal_mode = WAL");
    client.run(`PRAGMA synchronous = ${sync}`);
  }
  client.run("PRAGMA busy_timeout = 5000");
  client.run("PRAGMA foreign_keys = ON");
  // Scratch space in memory: a group commit's multi-row INSERT of large bodies made
  // SQLite open a temporary file in /var/tmp for it (787 in 40 s of 4 KB messages), and
  // its writes blocked the event loop for up to 156 ms on a busy disk.
  client.run("PRAGMA temp_store = MEMORY");
}

/**
 * Writes the database header's `user_version` back unchanged: a real write, one page to
 * the WAL. Throws SQLite's error when the database refuses writes: a file the process
 * may read but not write opens without complaint (SQLite falls back to read-only) and
 * answered every write SQLITE_READONLY; a full disk answers SQLITE_FULL.
 */
export function probeWrite(client: Database): void {
  const version = client.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version ?? 0;
  client.run(`PRAGMA user_version = ${Math.trunc(version)}`);
}

/**
 * Opens (creating folder and file as needed) and migrates the database at `path`;
 * `:memory:` gives a private in-memory database.
 */
export function openStore(path: string, sync: DbSync = "NORMAL"): Store {
  const file = path !== ":memory:";
  if (file) createPrivately(path);
  const client = new Database(path, { create: true, strict: true });
  try {
    applyPragmas(client, sync, file);
    const store = wrap(client, path, sync);
    store.migrated = migrate(store.db, client);
    // Migrations already applied write nothing: a read-only file would start, and then
    // fail every signup and send while /healthz said ok.
    if (file) probeWrite(client);
    return store;
  } catch (e) {
    client.close();
    throw e;
  }
}

/**
 * Creates the folders of `path` (0700) and the empty file (0600) when missing, so that a
 * new database is readable by its owner only, whatever the umask (with the usual 022
 * it was 0644, and it holds every message); SQLite gives its `-wal` and `-shm` files the
 * database file's mode. What exists already is left as it is. Returns whether it made the file.
 */
export function createPrivately(path: string): boolean {
  makePrivateFolders(path);
  if (existsSync(path)) return false;
  closeSync(openSync(path, "a", 0o600));
  return true;
}

/** Creates the missing folders of `path`, readable by their owner only (0700, whatever the umask). */
export function makePrivateFolders(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
}

/** A serialized image of a freshly migrated database, for `openStoreFromImage`. */
export function migratedImage(): Uint8Array {
  const store = openStore(":memory:");
  const image = store.client.serialize();
  store.close();
  return image;
}

/** A fresh in-memory database from a migrated image: about 0.06 ms, for tests. */
export function openStoreFromImage(image: Uint8Array): Store {
  const client = Database.deserialize(image, { strict: true });
  // foreign_keys is per connection and resets after deserialize.
  applyPragmas(client, "NORMAL", false);
  return wrap(client, ":memory:", "NORMAL");
}
