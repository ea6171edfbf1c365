import { createHash } from "node:crypto";
import type { Database } from "bun:sqlite";
import type { MigrationMeta } from "drizzle-orm/migrator";
import { embeddedMigrations, type EmbeddedMigration } from "./migrations.gen.ts";

function toMeta(m: EmbeddedMigration): MigrationMeta {
  return {
    sql: m.sql.split("--> statement-breakpoint"),
    bps: m.breakpoints,
    folderMillis: m.when,
    // The same hash drizzle's folder migrator records, so either can take over.
    hash: createHash("sha256").update(m.sql).digest("hex"),
  };
}

/**
 * Applies the embedded migrations in the foreign-key-safe order of STACK-NOTES.md:
 * SQLite ignores `PRAGMA foreign_keys` inside drizzle's migration transaction, so a
 * table-recreate migration would cascade-delete child rows with them on.
 */
interface MigratableDb {
  dialect: { migrate(m: MigrationMeta[], session: unknown, config: object): void };
  session: unknown;
}

export function migrate(db: object, client: Database, migrations = embeddedMigrations): void {
  client.run("PRAGMA foreign_keys = OFF");
  try {
    // drizzle's own bun-sqlite migrator does exactly this after reading a folder.
    const { dialect, session } = db as MigratableDb;
    dialect.migrate(migrations.map(toMeta), session, {});
    const broken = client.query("PRAGMA foreign_key_check").all();
    if (broken.length > 0) {
      throw new Error(`migration left ${broken.length} rows violating foreign keys`);
    }
  } finally {
    client.run("PRAGMA foreign_keys = ON");
  }
}
