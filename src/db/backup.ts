import { Database } from "bun:sqlite";
import { closeSync, existsSync, fsyncSync, linkSync, openSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Writes a consistent copy of the database at `source` to `target` with `VACUUM INTO`,
 * which reads one snapshot and is safe while a server writes (WAL). Refuses to
 * overwrite. Returns the copy's size in bytes.
 *
 * The copy is written as `<target>.partial`, synced, and only then named `target` (a
 * hard link, which fails rather than overwrite; a rename where the file system has no
 * hard links): a backup killed or cut off midway (a signal, a full disk, a power loss)
 * leaves a `.partial` file, never a `target` that looks like a backup and is not whole.
 */
export function backup(source: string, target: string): number {
  if (source === ":memory:") throw new Error("an in-memory database has nothing to back up");
  if (!existsSync(source)) throw new Error(`no database at ${source}`);
  if (existsSync(target)) throw new Error(`${target} exists; choose a new file`);
  if (!existsSync(dirname(target))) throw new Error(`no folder ${dirname(target)} for ${target}; create it first`);
  const partial = `${target}.partial`;
  if (existsSync(partial)) throw new Error(`${partial} exists, left by a backup that did not finish: delete it first`);
  // Empty and readable by its owner only: VACUUM INTO writes into an empty file, and
  // would otherwise create it by the umask (0644 with the usual 022).
  closeSync(openSync(partial, "wx", 0o600));
  try {
    const db = new Database(source, { readonly: true });
    try {
      db.run("PRAGMA busy_timeout = 5000");
      // A wrong path to an empty file (or another program's database) would be "backed
      // up" as a copy of nothing, and the mistake found only on restore.
      const ours = db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__drizzle_migrations'").get();
      if (!ours) throw new Error(`${source} is not a Switchboard database (it has no migrations table); check DB_PATH`);
      db.prepare("VACUUM INTO ?").run(partial);
    } finally {
      db.close();
    }
    sync(partial);
    try {
      linkSync(partial, target);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "EEXIST") throw new Error(`${target} exists; choose a new file`);
      // A file system without hard links (some network and FUSE mounts): a rename,
      // which would overwrite a FILE made since the check above.
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e;
      if (existsSync(target)) throw new Error(`${target} exists; choose a new file`);
      renameSync(partial, target);
    }
    sync(dirname(target)); // the new name, too
  } finally {
    rmSync(partial, { force: true }); // ours (made with wx above)
  }
  return statSync(target).size;
}

/** fsync of a file or a folder. */
function sync(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
