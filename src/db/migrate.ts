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

/** The `when` of the newest migration recorded in the database, or null for a new database. */
function latestApplied(client: Database): number | null {
  const table = client.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__drizzle_migrations'").get();
  if (!table) return null;
  return client.query<{ at: number | null }, []>("SELECT max(created_at) AS at FROM __drizzle_migrations").get()?.at ?? null;
}

/**
 * Applies the migrations the database does not have yet and returns their tags.
 * Throws when the database has a migration newer than any of `migrations`: an older
 * Switchboard on a database a newer one upgraded (drizzle would start it unchanged,
 * on a schema it does not know).
 */
export function migrate(db: object, client: Database, migrations = embeddedMigrations): string[] {
  const applied = latestApplied(client);
  const newest = migrations.at(-1)?.when ?? 0;
  if (applied !== null && applied > newest) {
    const day = (ms: number) => new Date(ms).toISOString();
    throw new Error(
      `the database was migrated by a newer Switchboard (its latest migration is from ${day(applied)}, ` +
        `this version knows migrations up to ${day(newest)}): run that version, or restore a backup made before the upgrade`,
    );
  }
  const pending = migrations.filter((m) => applied === null || m.when > applied).map((m) => m.tag);
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
  return pending;
}
