/**
 * Durable before acknowledged: a server process on a file database is killed with
 * SIGKILL while clients send; a new one on the same file must hold every acknowledged
 * message, gapless, and retried nonces must not duplicate anything.
 */
import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TestSocket } from "../helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "switchboard-crash-"));
const dbPath = join(dir, "crash.db");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function startChild(): Promise<{ proc: Bun.Subprocess<"ignore", "ignore", "pipe">; wsUrl: string }> {
  const proc = Bun.spawn(
    [process.execPath, "src/main.ts", "--host", "127.0.0.1", "--port", "0", "--db-path", dbPath, "--send-rate", "100000", "--send-burst", "100000"],
    { stdin: "ignore", stdout: "ignore", stderr: "pipe", env: { ...process.env, LOG_LEVEL: "info" } },
  );
  const reader = proc.stderr.getReader();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited before listening: ${text}`);
    text += new TextDecoder().decode(value);
    const m = text.match(/"event":"listening","url":"http:\/\/127\.0\.0\.1:(\d+)"/);
    if (m) {
      reader.releaseLock();
      return { proc, wsUrl: `ws://127.0.0.1:${m[1]}/ws` };
    }
  }
}

interface Sender {
  name: string;
  token: string;
  s: TestSocket;
  acked: Map<string, { seq: number; at: string }>;
  sent: string[];
}

test("SIGKILL while sending: every acknowledged message survives, seqs are gapless, retries create no duplicate", async () => {
  let child = await startChild();
  const senders: Sender[] = [];
  for (let u = 0; u < 3; u++) {
    const s = await TestSocket.open(child.wsUrl);
    const name = `crash_user_${u}`;
    const r = await s.request({ type: "signup", username: name, password: "correct horse battery" });
    await s.request({ type: "join", room: "crash" });
    senders.push({ name, token: r.token as string, s, acked: new Map(), sent: [] });
  }

  // Each sender keeps up to 25 sends in flight; the kill lands mid-stream.
  let killed = false;
  const inFlight: Promise<void>[] = [];
  const fire = (snd: Sender) => {
    const nonce = `${snd.name}-${snd.sent.length}`;
    snd.sent.push(nonce);
    const done = Promise.race([
      snd.s.request({ type: "send", room: "crash", body: `body of ${nonce}`, nonce }),
      snd.s.closed.then(() => null),
    ]).then((r) => {
      if (!r) return;
      expect(r.type).toBe("ok");
      snd.acked.set(nonce, { seq: r.seq as number, at: r.at as string });
    });
    inFlight.push(done);
    return done;
  };
  const pumps = senders.map(async (snd) => {
    const window = new Set<Promise<void>>();
    while (!killed) {
      while (window.size < 25) {
        const p = fire(snd);
        window.add(p);
        void p.then(() => window.delete(p));
      }
      await Promise.race(window);
    }
  });
  // Kill once a few hundred are acknowledged, right after a burst the server cannot have finished.
  while (senders.reduce((n, s) => n + s.acked.size, 0) < 600) await Bun.sleep(5);
  for (const snd of senders) for (let k = 0; k < 30; k++) void fire(snd);
  child.proc.kill("SIGKILL");
  killed = true;
  await child.proc.exited;
  await Promise.all(pumps);
  await Promise.all(inFlight);
  const ackedTotal = senders.reduce((n, s) => n + s.acked.size, 0);
  expect(ackedTotal).toBeGreaterThanOrEqual(600);
  // Some sends were in flight, unanswered, when the process died.
  expect(senders.reduce((n, s) => n + s.sent.length, 0)).toBeGreaterThan(ackedTotal);

  // Restart on the same file; every sender retries everything it ever sent.
  child = await startChild();
  for (const snd of senders) {
    const s = await TestSocket.open(child.wsUrl);
    expect(await s.request({ type: "auth", token: snd.token })).toMatchObject({ type: "ok" });
    await s.request({ type: "join", room: "crash" });
    const replies = await Promise.all(
      snd.sent.map((nonce) => s.request({ type: "send", room: "crash", body: `body of ${nonce}`, nonce })),
    );
    // An acknowledged send answers its original seq and at.
    snd.sent.forEach((nonce, k) => {
      const before = snd.acked.get(nonce);
      expect(replies[k]!.type).toBe("ok");
      if (before) expect({ seq: replies[k]!.seq, at: replies[k]!.at }).toEqual(before);
    });
    s.ws.close();
  }
  child.proc.kill("SIGTERM");
  await child.proc.exited;

  const db = new Database(dbPath, { readonly: true });
  expect(db.query("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" });
  const rows = db.query<{ seq: number; nonce: string }, []>("SELECT seq, nonce FROM messages ORDER BY seq").all();
  const sentTotal = senders.reduce((n, s) => n + s.sent.length, 0);
  // Gapless from 1, one row per nonce ever sent, no duplicate.
  expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
  expect(new Set(rows.map((r) => r.nonce)).size).toBe(rows.length);
  expect(rows.length).toBe(sentTotal);
  const bySeq = new Map(rows.map((r) => [r.nonce, r.seq]));
  for (const snd of senders) for (const [nonce, { seq }] of snd.acked) expect(bySeq.get(nonce)).toBe(seq);
  expect(db.query("SELECT latest_seq AS n FROM rooms WHERE name = 'crash'").get()).toEqual({ n: rows.length });
  db.close();
}, 60_000);
