import { hash, verify } from "@node-rs/argon2";
import { ProtocolError } from "../../protocol/index.ts";

/** Hashes and checks passwords. Both run off the event loop. */
export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(hash: string, password: string): Promise<boolean>;
}

/** OWASP's argon2id parameters (and @node-rs/argon2's defaults): 19 MiB, 2 passes, 1 lane. */
export const ARGON2_PARAMS = { algorithm: 2 /* Algorithm.Argon2id, a const enum */, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

/**
 * Bounds the hashes in flight (each holds 19 MiB) and the sign-ins waiting for one;
 * past the queue, sign-in is answered `rate_limited` instead of piling up memory.
 */
export function createArgon2Hasher(opts: { concurrency: number; queue: number }): PasswordHasher {
  let running = 0;
  const waiting: Array<() => void> = [];
  async function slot<T>(work: () => Promise<T>): Promise<T> {
    if (running >= opts.concurrency) {
      if (waiting.length >= opts.queue) {
        throw new ProtocolError("rate_limited", "the server is busy signing others in", { retryAfterMs: 1000 });
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    } else {
      running++;
    }
    try {
      return await work();
    } finally {
      const next = waiting.shift();
      // Hand the slot over directly, so that `running` never dips while others wait.
      if (next) next();
      else running--;
    }
  }
  return {
    hash: (password) => slot(() => hash(password, ARGON2_PARAMS)),
    verify: (digest, password) => slot(() => verify(digest, password)),
  };
}
