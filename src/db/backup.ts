import { Database } from "bun:sqlite";
import { closeSync, existsSync, openSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Writes a consistent copy of the database at `source` to `target` with `VACUUM INTO`,
 * which reads one snapshot and is safe while a server writes (WAL). Refuses to
 * overwrite. Returns the copy's size in bytes.
 */
export function backup(source: string, target: string): number {
  if (source === ":memory:") throw new Error("an in-memory database has nothing to back up");
  if (!existsSync(source)) throw new Error(`no database at ${source}`);
  if (existsSync(target)) throw new Error(`${target} exists; choose a new file`);
  if (!existsSync(dirname(target))) throw new Error(`no folder ${dirname(target)} for ${target}; create it first`);
  // Empty and readable by its owner only: VACUUM INTO writes into an empty file, and
  // would otherwise create it by the umask (0644 with the usual 022).
  closeSync(openSync(target, "wx", 0o600));
  try {
    const db = new Database(source, { readonly: true });
    try {
      db.run("PRAGMA busy_timeout = 5000");
      // A wrong path to an empty file (or another program's database) would be "backed
      // up" as a copy of nothing, and the mistake found only on restore.
      const ours = db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__drizzle_migrations'").get();
      if (!ours) throw new Error(`${source} is not a Switchboard database (it has no migrations table); check DB_PATH`);
      db.prepare("VACUUM INTO ?").run(target);
    } finally {
      db.close();
    }
  } catch (e) {
    rmSync(target, { force: true }); // ours (made with wx above): no empty file left behind
    throw e;
  }
  return statSync(target).size;
}
