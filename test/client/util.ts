import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MessageEvent, SwitchboardClient } from "../../src/client/index.ts";

/** Records a client's message events and lets a test await a count of them. */
export function collect(client: SwitchboardClient, room?: string) {
  const messages: MessageEvent[] = [];
  let waiters: Array<{ n: number; resolve: () => void }> = [];
  client.on("message", (m) => {
    if (room !== undefined && m.room !== room) return;
    messages.push(m);
    waiters = waiters.filter((w) => (messages.length >= w.n ? (w.resolve(), false) : true));
  });
  return {
    messages,
    bodies: () => messages.map((m) => m.body),
    seqs: () => messages.map((m) => m.seq),
    /** Resolves once `n` messages have been delivered in total (rejects after `timeoutMs`). */
    waitFor(n: number, timeoutMs = 5000): Promise<void> {
      if (messages.length >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`expected ${n} messages, got ${messages.length}: ${JSON.stringify(messages.map((m) => m.seq))}`)),
          timeoutMs,
        );
        waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
      });
    },
  };
}

/** 1..n */
export const range = (n: number, from = 1) => Array.from({ length: n }, (_, i) => i + from);

/** A temporary folder, removed by the returned function. */
export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), "switchboard-client-"));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Fast, deterministic reconnection for tests. */
export const fast = { backoff: { minMs: 5, maxMs: 40 }, requestTimeoutMs: 3000 } as const;

/** The SwitchboardError `p` rejects with (fails the test if it resolves). */
export async function failure(p: Promise<unknown>): Promise<import("../../src/client/index.ts").SwitchboardError> {
  const { SwitchboardError } = await import("../../src/client/index.ts");
  try {
    await p;
  } catch (e) {
    if (e instanceof SwitchboardError) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}
