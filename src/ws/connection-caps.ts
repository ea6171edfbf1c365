/**
 * Counts open things per key against a cap: WebSocket connections per client address,
 * signed-in connections per user, sign-ins being hashed per client address. A cap of 0 is no cap, and then nothing is counted (no
 * map entry per connection: 10,000 idle connections must stay cheap).
 *
 * Without a cap, every per-connection limit multiplies with connections: one address
 * opened 6,000 sockets, each in 100 new rooms (962 MB); 30 sockets, each within its own
 * request budget, read 92 MB of history a second.
 */
export class KeyedCap<K> {
  private readonly counts = new Map<K, number>();

  constructor(readonly max: number) {}

  /** Whether `key` holds `max` already, so that one more would pass the cap. */
  full(key: K): boolean {
    return this.max > 0 && (this.counts.get(key) ?? 0) >= this.max;
  }

  add(key: K): void {
    if (this.max > 0) this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  remove(key: K): void {
    if (this.max === 0) return;
    const n = (this.counts.get(key) ?? 0) - 1;
    if (n > 0) this.counts.set(key, n);
    else this.counts.delete(key);
  }

  /** How many `key` holds (0 when no cap: nothing is counted). */
  count(key: K): number {
    return this.counts.get(key) ?? 0;
  }

  /** Keys holding at least one (for tests: nothing must be left behind). */
  get size(): number {
    return this.counts.size;
  }
}
