/**
 * The server's commits and the checkpointer's RESTART (see src/db/checkpointer.ts): with
 * a WAL threshold a few commits away, sends go on over real sockets while the thread
 * starts the WAL over again and again, and each RESTART runs with the sends held.
 */
import { afterEach, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../../src/config.ts";
import { openStore, type Store } from "../../src/db/open.ts";
import { createArgon2Hasher } from "../../src/features/accounts/password.ts";
import { createLogger } from "../../src/log.ts";
import { createServer, type Switchboard } from "../../src/server.ts";
import { TestSocket, uname } from "../helpers.ts";

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

async function start(checkpoints: { intervalMs: number; restartFrames: number }, onLine: (l: Record<string, unknown>) => void = () => {}) {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-wal-"));
  const store: Store = openStore(join(dir, "s.db"), "NORMAL");
  const lines: Array<Record<string, unknown>> = [];
  // Rows the server's connection has written, when each line is logged.
  const written = () => store.client.query<{ n: number }, []>("SELECT total_changes() AS n").get()!.n;
  const config = defaultConfig({ HOST: "127.0.0.1", PORT: 0, SEND_RATE: 100_000, SEND_BURST: 100_000 });
  const app: Switchboard = createServer({
    config,
    store,
    hasher: createArgon2Hasher({ concurrency: 1, queue: 8 }),
    clock: { now: () => Date.now() },
    log: createLogger("debug", (line) => {
      const entry = { ...JSON.parse(line), written: written() };
      lines.push(entry);
      onLine(entry);
    }),
    checkpoints,
  });
  const server = app.listen({ port: 0, hostname: "127.0.0.1" });
  const sockets: TestSocket[] = [];
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  cleanup.push(() => store.close());
  cleanup.push(() => app.shutdown());
  cleanup.push(() => sockets.forEach((s) => s.ws.close()));
  return {
    app,
    store,
    lines,
    async member(room: string): Promise<TestSocket> {
      const s = await TestSocket.open(`ws://127.0.0.1:${server.port}/ws`);
      sockets.push(s);
      expect((await s.request({ type: "signup", username: uname(), password: "correct horse battery" })).type).toBe("ok");
      expect((await s.request({ type: "join", room })).type).toBe("ok");
      return s;
    },
  };
}

test("sends go on while the WAL starts over: each RESTART holds them, and every one is stored once, in order", async () => {
  // 64 frames: a RESTART every few dozen commits of these 1000-char bodies.
  const t = await start({ intervalMs: 5, restartFrames: 64 });
  const writers = [await t.member("wal"), await t.member("wal"), await t.member("wal")];
  const reader = await t.member("wal");
  const restarts = () => t.lines.filter((l) => l.event === "wal_restarted");
  const acks: number[] = [];
  const body = (w: number, i: number) => `${w}:${i}:`.padEnd(1000, "x");
  let round = 0;
  // Rounds of 8 sends outstanding per writer, until several RESTARTs have run.
  while (restarts().length < 4 && round < 300) {
    const replies = await Promise.all(
      writers.flatMap((w, wi) => Array.from({ length: 8 }, (_, k) => w.request({ type: "send", room: "wal", body: body(wi, round * 8 + k) }))),
    );
    for (const r of replies) {
      expect(r).toMatchObject({ type: "ok", seq: expect.any(Number) });
      acks.push(r.seq as number);
    }
    round++;
  }
  const n = acks.length;
  expect(restarts().length).toBeGreaterThanOrEqual(4);
  // Held by the server for each one: nothing was written between the hold and the
  // RESTART's end. Never past the limit, nor given up.
  // (One more hold may have begun after the last reply.)
  const done = restarts();
  const held = t.lines.filter((l) => l.event === "wal_restart_holding").slice(0, done.length);
  expect(done.map((r) => r.written)).toEqual(held.map((h) => h.written));
  for (const r of restarts()) expect(r.heldMs).toBeGreaterThan(0);
  expect(t.lines.filter((l) => l.event === "wal_restart_slow" || l.event === "wal_restart_deferred")).toEqual([]);
  // Every send answered with its own seq, gapless; every member saw them all in order;
  // the database holds each once.
  expect([...acks].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect((await reader.messages("wal", n)).map((m) => m.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  const stored = t.store.client.query<{ n: number; max: number }, []>("SELECT count(*) AS n, max(seq) AS max FROM messages").get()!;
  expect(stored).toEqual({ n, max: n });
  // A writer's own sends keep their order.
  const own = (await writers[0]!.messages("wal", n)).filter((m) => String(m.body).startsWith("0:")).map((m) => Number(String(m.body).split(":")[1]));
  expect(own).toEqual([...own].sort((a, b) => a - b));
});

test("a graceful stop during a hold answers the sends held, then closes", async () => {
  let holding!: () => void;
  const held = new Promise<void>((r) => (holding = r));
  const t = await start({ intervalMs: 5, restartFrames: 64 }, (l) => {
    if (l.event === "wal_restart_holding") holding();
  });
  const writer = await t.member("wal");
  // A reader that stays in the WAL: the RESTART waits 50 ms for it and gives up, so the
  // hold lasts that long.
  const reader = new Database(t.store.path, { readonly: true });
  cleanup.push(() => reader.close());
  reader.run("BEGIN");
  reader.query("SELECT count(*) FROM messages").get();
  let holdSeen = false;
  void held.then(() => (holdSeen = true));
  // Not waiting for the replies: one waits for the hold to end.
  const replies: Array<Promise<Record<string, unknown>>> = [];
  while (!holdSeen && replies.length < 5000) {
    replies.push(writer.request({ type: "send", room: "wal", body: "x".repeat(1000) }));
    await new Promise<void>((r) => setImmediate(r));
  }
  expect(holdSeen).toBe(true);
  // Sent during the hold: queued, not committed, and then the server is asked to stop.
  const sends = t.app.metrics.requests.get("send")!;
  replies.push(writer.request({ type: "send", room: "wal", body: "held" }));
  while (t.app.metrics.requests.get("send") === sends) await new Promise<void>((r) => setImmediate(r));
  expect(t.lines.some((l) => l.event === "wal_restart_deferred")).toBe(false); // still held
  const stopped = t.app.shutdown();
  const answered = await Promise.all(replies);
  for (const r of answered) expect(r).toMatchObject({ type: "ok" });
  expect(answered.at(-1)).toMatchObject({ seq: replies.length });
  expect(await writer.closed).toMatchObject({ code: 1001 });
  await stopped;
  expect(t.lines.some((l) => l.event === "wal_restart_deferred")).toBe(true);
  reader.run("COMMIT");
  expect(t.store.client.query<{ body: string }, []>("SELECT body FROM messages ORDER BY seq DESC LIMIT 1").get()).toEqual({ body: "held" });
});
