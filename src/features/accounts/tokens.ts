import { createHash, randomBytes } from "node:crypto";

/** A session token: 32 random bytes (256 bits), base64url. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/** What the database keeps instead of the token: its SHA-256, hex. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}
