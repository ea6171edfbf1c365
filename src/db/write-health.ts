/** SQLite's codes for a database or disk that refuses writes (not a constraint, not a bug). */
const REFUSED = /^SQLITE_(FULL|READONLY|IOERR|CANTOPEN|CORRUPT|NOTADB|PERM)/;

/**
 * Whether the database was last seen refusing a write (a full disk, a file made
 * read-only, an I/O error), for /healthz: it answered 200 while every signup and send
 * failed. Whoever writes reports; /healthz, while `failing`, probes with a write of its
 * own until one succeeds.
 */
export class WriteHealth {
  failing = false;

  /** A write failed: counts if the database or the disk refused it. */
  failed(err: unknown): void {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === "string" && REFUSED.test(code)) this.failing = true;
  }

  /** A write went through. */
  ok(): void {
    this.failing = false;
  }
}
