import { hash, verify } from "@node-rs/argon2";
import { ProtocolError } from "../../protocol/index.ts";

/**
 * Checked when a queued job reaches a hashing slot: `false` drops the job, which then
 * rejects with `HashSkipped` (the client that asked has gone).
 */
export type StillWanted = () => boolean;

/** Hashes and checks passwords. Both run off the event loop. */
export interface PasswordHasher {
  hash(password: string, stillWanted?: StillWanted): Promise<string>;
  verify(hash: string, password: string, stillWanted?: StillWanted): Promise<boolean>;
}

/**
 * A queued hash that was dropped before it ran, because its client had gone. A
 * ProtocolError, so that it ends the request like any refusal; the socket it would
 * answer is closed, so nobody reads it.
 */
export class HashSkipped extends ProtocolError {
  constructor() {
    super("rate_limited", "the connection closed before its password was checked", { retryAfterMs: 0 });
  }
}

/** OWASP's argon2id parameters (and @node-rs/argon2's defaults): 19 MiB, 2 passes, 1 lane. */
export const ARGON2_PARAMS = { algorithm: 2 /* Algorithm.Argon2id, a const enum */, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

/**
 * Bounds the hashes in flight (each holds 19 MiB) and the sign-ins waiting for one;
 * past the queue, sign-in is answered `rate_limited` instead of piling up memory. A
 * queued job whose client has gone is dropped when its turn comes, not hashed: in a
 * sign-in storm, clients that give up would otherwise keep the slots busy for nobody.
 * `argon2` is injectable for tests.
 */
export function createArgon2Hasher(opts: {
  concurrency: number;
  queue: number;
  argon2?: { hash(password: string): Promise<string>; verify(digest: string, password: string): Promise<boolean> };
}): PasswordHasher {
  const argon2 = opts.argon2 ?? { hash: (password: string) => hash(password, ARGON2_PARAMS), verify };
  let running = 0;
  const waiting: Array<() => void> = [];
  function release(): void {
    const next = waiting.shift();
    // Hand the slot over directly, so that `running` never dips while others wait.
    if (next) next();
    else running--;
  }
  async function slot<T>(work: () => Promise<T>, stillWanted: StillWanted | undefined): Promise<T> {
    if (running >= opts.concurrency) {
      if (waiting.length >= opts.queue) {
        throw new ProtocolError("rate_limited", "the server is busy signing others in", { retryAfterMs: 1000 });
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    } else {
      running++;
    }
    if (stillWanted && !stillWanted()) {
      release();
      throw new HashSkipped();
    }
    try {
      return await work();
    } finally {
      release();
    }
  }
  return {
    hash: (password, stillWanted) => slot(() => argon2.hash(password), stillWanted),
    verify: (digest, password, stillWanted) => slot(() => argon2.verify(digest, password), stillWanted),
  };
}
