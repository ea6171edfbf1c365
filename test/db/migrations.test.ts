import { Database } from "bun:sqlite";
import { expect, spyOn, test } from "bun:test";
import * as fs from "node:fs";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { backup } from "../../src/db/backup.ts";
import { migrate } from "../../src/db/migrate.ts";
import { embeddedMigrations } from "../../src/db/migrations.gen.ts";
import { openStore } from "../../src/db/open.ts";

const root = join(import.meta.dir, "../..");

test("the embedded migrations are exactly the files in migrations/, in journal order", () => {
  const journal = JSON.parse(readFileSync(join(root, "migrations/meta/_journal.json"), "utf8"));
  const files = readdirSync(join(root, "migrations")).filter((f) => f.endsWith(".sql")).sort();
  expect(embeddedMigrations.map((m) => `${m.tag}.sql`)).toEqual(files);
  expect(embeddedMigrations.map((m) => m.tag)).toEqual(journal.entries.map((e: { tag: string }) => e.tag));
  for (const m of embeddedMigrations) expect(m.sql).toBe(readFileSync(join(root, "migrations", `${m.tag}.sql`), "utf8"));
});

test("a file database: folder created, WAL, foreign keys on, temp store in memory, migrations applied once", () => {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-db-"));
  try {
    const path = join(dir, "nested/folder/app.db");
    const store = openStore(path, "FULL");
    expect(store.client.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    expect(store.client.query("PRAGMA synchronous").get()).toEqual({ synchronous: 2 });
    expect(store.client.query("PRAGMA foreign_keys").get()).toEqual({ foreign_keys: 1 });
    // Statement journals in memory, not spilled to /var/tmp under large group commits.
    expect(store.client.query("PRAGMA temp_store").get()).toEqual({ temp_store: 2 });
    store.client.run("INSERT INTO users (username, password_hash, created_at) VALUES ('ada', 'x', 0)");
    store.close();
    const again = openStore(path);
    expect(again.client.query("SELECT count(*) AS n FROM __drizzle_migrations").get()).toEqual({ n: embeddedMigrations.length });
    expect(again.client.query("SELECT username FROM users").all()).toEqual([{ username: "ada" }]);
    again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a new database is its owner's only: folders 0700, the file and its -wal and -shm 0600, whatever the umask; an existing one keeps its mode", () => {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-db-"));
  const umask = process.umask(0o022);
  try {
    const path = join(dir, "made/here/app.db");
    const store = openStore(path);
    store.client.run("INSERT INTO users (username, password_hash, created_at) VALUES ('ada', 'x', 0)");
    const mode = (p: string) => statSync(p).mode & 0o777;
    expect([mode(join(dir, "made")), mode(join(dir, "made/here"))]).toEqual([0o700, 0o700]);
    expect([mode(path), mode(`${path}-wal`), mode(`${path}-shm`)]).toEqual([0o600, 0o600, 0o600]);
    const copy = join(dir, "copy.db");
    backup(path, copy);
    expect(mode(copy)).toBe(0o600);
    store.close();
    // The operator's choice stands: an existing file is not changed.
    chmodSync(path, 0o640);
    openStore(path).close();
    expect(mode(path)).toBe(0o640);
    // A backup that fails leaves no file behind.
    writeFileSync(join(dir, "not-a-db"), "hello");
    expect(() => backup(join(dir, "not-a-db"), join(dir, "copy2.db"))).toThrow();
    expect(existsSync(join(dir, "copy2.db"))).toBe(false);
    // A wrong path to an empty file, or to another program's database, is not a backup.
    writeFileSync(join(dir, "empty.db"), "");
    const other = new Database(join(dir, "other.db"));
    other.run("CREATE TABLE notes (id integer PRIMARY KEY)");
    other.close();
    for (const wrong of ["empty.db", "other.db"]) {
      expect(() => backup(join(dir, wrong), join(dir, "copy3.db"))).toThrow(`${join(dir, wrong)} is not a Switchboard database (it has no migrations table); check DB_PATH`);
      expect(existsSync(join(dir, "copy3.db"))).toBe(false);
    }
    expect(backup(path, join(dir, "copy3.db"))).toBeGreaterThan(0);
  } finally {
    process.umask(umask);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a table-recreate migration does not cascade-delete child rows (foreign keys off while migrating)", () => {
  const client = new Database(":memory:");
  client.run("PRAGMA foreign_keys = ON");
  const db = drizzle({ client });
  const base = [
    { tag: "a", when: 1, breakpoints: true, sql: "CREATE TABLE parent (id integer PRIMARY KEY, name text);--> statement-breakpoint\nCREATE TABLE child (id integer PRIMARY KEY, parent_id integer REFERENCES parent(id) ON DELETE CASCADE);" },
  ];
  migrate(db, client, base);
  client.run("INSERT INTO parent VALUES (1, 'p'); INSERT INTO child VALUES (1, 1);");
  // What drizzle-kit emits to change a column of `parent`.
  const recreate = {
    tag: "b",
    when: 2,
    breakpoints: true,
    sql: [
      "CREATE TABLE __new_parent (id integer PRIMARY KEY, name text NOT NULL DEFAULT '');",
      "INSERT INTO __new_parent (id, name) SELECT id, name FROM parent;",
      "DROP TABLE parent;",
      "ALTER TABLE __new_parent RENAME TO parent;",
    ].join("--> statement-breakpoint\n"),
  };
  migrate(db, client, [...base, recreate]);
  expect(client.query("SELECT count(*) AS n FROM child").get()).toEqual({ n: 1 });
  expect(client.query("PRAGMA foreign_keys").get()).toEqual({ foreign_keys: 1 });
});

test("migrate returns the migrations it applied (none the second time), and refuses a database a newer version migrated", () => {
  const client = new Database(":memory:");
  const db = drizzle({ client });
  const v1 = [{ tag: "0000_a", when: 1000, breakpoints: true, sql: "CREATE TABLE a (id integer PRIMARY KEY);" }];
  const v2 = [...v1, { tag: "0001_b", when: 2000, breakpoints: true, sql: "CREATE TABLE b (id integer PRIMARY KEY);" }];
  expect(migrate(db, client, v1)).toEqual(["0000_a"]);
  expect(migrate(db, client, v1)).toEqual([]);
  expect(migrate(db, client, v2)).toEqual(["0001_b"]);
  // v1 again: the database has a migration v1 does not know. Refused, and nothing changed.
  expect(() => migrate(db, client, v1)).toThrow(/migrated by a newer Switchboard/);
  expect(client.query("SELECT count(*) AS n FROM __drizzle_migrations").get()).toEqual({ n: 2 });
  expect(migrate(db, client, v2)).toEqual([]);
});

test("backup on a file system without hard links: the copy is renamed into place, still never over an existing file; other link errors are thrown", () => {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-db-"));
  const link = spyOn(fs, "linkSync");
  try {
    const path = join(dir, "app.db");
    const store = openStore(path);
    store.client.run("INSERT INTO users (username, password_hash, created_at) VALUES ('ada', 'x', 0)");
    const fail = (code: string) => link.mockImplementation(() => {
      throw Object.assign(new Error(`${code}: link`), { code });
    });
    for (const code of ["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"]) {
      fail(code);
      const copy = join(dir, `copy-${code}.db`);
      expect(backup(path, copy)).toBeGreaterThan(0);
      expect(existsSync(`${copy}.partial`)).toBe(false);
      const db = new Database(copy, { readonly: true });
      expect(db.query("SELECT username FROM users").all()).toEqual([{ username: "ada" }]);
      db.close();
    }
    // A FILE that appears while the copy is written (between the check and the link) is
    // not overwritten by the rename.
    const late = join(dir, "late.db");
    link.mockImplementation(() => {
      writeFileSync(late, "someone else's");
      throw Object.assign(new Error("EPERM: link"), { code: "EPERM" });
    });
    expect(() => backup(path, late)).toThrow(`${late} exists; choose a new file`);
    expect(readFileSync(late, "utf8")).toBe("someone else's");
    expect(existsSync(`${late}.partial`)).toBe(false);
    // Any other failure is the backup's failure: no file under either name.
    fail("EIO");
    expect(() => backup(path, join(dir, "io.db"))).toThrow("EIO: link");
    expect(existsSync(join(dir, "io.db"))).toBe(false);
    expect(existsSync(join(dir, "io.db.partial"))).toBe(false);
    store.close();
  } finally {
    link.mockRestore();
    rmSync(dir, { recursive: true, force: true });
  }
});
