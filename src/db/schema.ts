// Tables only: drizzle-kit loads this file under node, so no bun:* imports here.
import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

export const users = sqliteTable(
  "users",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    username: text("username").notNull(),
    passwordHash: text("password_hash").notNull(),
    createdAt: integer("created_at").notNull(), // Unix ms
  },
  // Names compare case-insensitively: "Ada" and "ada" are one account.
  (t) => [uniqueIndex("users_username_nocase").on(sql`${t.username} COLLATE NOCASE`)],
);

export const sessions = sqliteTable(
  "sessions",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tokenHash: text("token_hash").notNull(), // hex SHA-256 of the token; the token itself is never stored
    userId: integer("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    createdAt: integer("created_at").notNull(),
    lastUsedAt: integer("last_used_at").notNull(),
    expiresAt: integer("expires_at").notNull(), // last use + idle timeout
    revokedAt: integer("revoked_at"),
  },
  (t) => [uniqueIndex("sessions_token_hash").on(t.tokenHash), index("sessions_user").on(t.userId)],
);

export type UserRow = typeof users.$inferSelect;
export type SessionRow = typeof sessions.$inferSelect;

export const rooms = sqliteTable(
  "rooms",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    name: text("name").notNull(),
    latestSeq: integer("latest_seq").notNull().default(0),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [uniqueIndex("rooms_name").on(t.name)],
);

export const messages = sqliteTable(
  "messages",
  {
    id: integer("id").primaryKey(),
    roomId: integer("room_id")
      .notNull()
      .references(() => rooms.id, { onDelete: "cascade" }),
    seq: integer("seq").notNull(),
    userId: integer("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    body: text("body").notNull(),
    nonce: text("nonce"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    // History and recovery read ranges of (room, seq); it also makes seqs unique per room.
    uniqueIndex("messages_room_seq").on(t.roomId, t.seq),
    // Idempotent retries: a nonce is used once per user and room.
    uniqueIndex("messages_room_user_nonce").on(t.roomId, t.userId, t.nonce).where(sql`${t.nonce} IS NOT NULL`),
  ],
);

export type RoomRow = typeof rooms.$inferSelect;
export type MessageRow = typeof messages.$inferSelect;
