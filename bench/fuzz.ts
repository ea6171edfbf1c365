/**
 * Fuzzes a real server (`bun src/main.ts` in a child process, default settings) with
 * FRAMES hostile frames from the generators of test/hardening/frames.ts, over
 * CONNECTIONS signed-in connections, one frame in flight per connection. Prints the
 * count of each outcome (reply code, or close code), checks every error code is in the
 * spec, and that the server is still alive at the end.
 *
 *   bun bench/fuzz.ts [frames=100000] [connections=8]
 */
import { Database } from "bun:sqlite";
import fc from "fast-check";
import { decodeRequest } from "../src/protocol/index.ts";
import { anyFrame, ERROR_CODES } from "../test/hardening/frames.ts";
import { RawWs, spawnServer } from "./lib/raw-ws.ts";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const FRAMES = Math.min(Number(args[0] ?? 100_000), 1_000_000);
const CONNECTIONS = Math.min(Number(args[1] ?? 8), 64);
const MAX_FRAME_BYTES = 65_536;
const INVALID_FRAME_LIMIT = 10;
const SEED = 20261128;

const server = await spawnServer();
const counts = new Map<string, number>();
const count = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
let offSpec = 0;
let serverDied = false;

// Frames are generated lazily, a chunk at a time: some hold a megabyte.
let pool: string[] = [];
let generated = 0;
function nextFrame(): string | null {
  for (;;) {
    if (pool.length === 0) {
      if (generated >= FRAMES) return null;
      const n = Math.min(1000, FRAMES - generated);
      pool = fc.sample(anyFrame, { numRuns: n, seed: SEED + generated });
      generated += n;
    }
    return pool.pop()!;
  }
}

const first = await RawWs.open(server.port);
first.text({ type: "signup", ref: 1, username: "fuzzer", password: "correct horse battery" });
let token = (await first.reply(1)).token as string;
first.destroy();

let accounts = 1;
/** A connection signed in as the fuzz account and a member of lobby; retried if a fuzzed logout interferes. */
async function member(): Promise<RawWs> {
  for (let attempt = 0; ; attempt++) {
    const w = await RawWs.open(server.port);
    try {
      w.text({ type: "auth", ref: "setup-auth", token });
      if ((await w.reply("setup-auth")).type !== "ok") {
        // A fuzzed logout revoked the session. A new account, since a login could be
        // rate_limited by the fuzzed failed logins from this address.
        w.text({ type: "signup", ref: "setup-signup", username: `fuzzer${++accounts}`, password: "correct horse battery" });
        token = (await w.reply("setup-signup", 30_000)).token as string;
      }
      w.text({ type: "join", ref: "setup-join", room: "lobby" });
      if ((await w.reply("setup-join")).type !== "ok") throw new Error("join refused");
      w.frames.length = 0;
      return w;
    } catch (e) {
      w.destroy();
      if (attempt >= 5) throw e;
    }
  }
}

const isReply = (f: { opcode: number; payload: Buffer }) => {
  if (f.opcode === 0x8) return true;
  if (f.opcode !== 0x1) return false;
  const t = (JSON.parse(f.payload.toString()) as { type?: unknown }).type;
  return t === "ok" || t === "error";
};

async function worker(): Promise<void> {
  let w = await member();
  let streak = 0;
  for (let text = nextFrame(); text !== null && !serverDied; text = nextFrame()) {
    const tooBig = Buffer.byteLength(text) > MAX_FRAME_BYTES;
    const valid = !tooBig && decodeRequest(text).ok;
    if (w.closeReceived) {
      // Closed between frames (a fuzzed logout elsewhere revokes this session: 4001).
      count(`close ${w.closeReceived.code ?? "none"}`);
      w.destroy();
      w = await member();
      streak = 0;
    }
    const seen = w.frames.length;
    w.text(text);
    let f;
    try {
      f = await w.next((x) => w.frames.indexOf(x) >= seen && isReply(x), 5000);
    } catch {
      count("no answer (timeout)");
      console.error("no answer within 5 s to:", JSON.stringify(text.slice(0, 300)));
      w.destroy();
      w = await member();
      continue;
    }
    if (f.opcode === 0x8) {
      count(`close ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : "none"}`);
      await w.end().catch(() => {});
      w = await member();
      streak = 0;
      continue;
    }
    const reply = JSON.parse(f.payload.toString()) as { type: string; code?: string };
    if (reply.type === "ok") count("ok");
    else {
      count(reply.code ?? "error without code");
      if (!ERROR_CODES.has(reply.code ?? "")) offSpec++;
    }
    streak = valid ? 0 : streak + 1;
    if (streak >= INVALID_FRAME_LIMIT) {
      const end = await w.end().catch(() => null);
      count(`close ${end?.code ?? "none"}`);
      w = await member();
      streak = 0;
    }
  }
  w.destroy();
}

const started = performance.now();
server.proc.exited.then(() => (serverDied = true));
try {
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
} catch (e) {
  console.error("worker failed:", String(e));
}
const seconds = (performance.now() - started) / 1000;
const alive = !serverDied && (await fetch(`http://127.0.0.1:${server.port}/healthz`).then((r) => r.status === 200).catch(() => false));
const db = new Database(server.dbPath, { readonly: true });
const rows = Object.fromEntries(
  ["users", "sessions", "rooms", "messages"].map((t) => [t, (db.query(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n]),
);
db.close();
await server.stop();

const total = [...counts.values()].reduce((a, b) => a + b, 0);
console.log(`fuzz: ${generated} frames generated, ${CONNECTIONS} connections, ${seconds.toFixed(1)} s`);
console.log("| outcome                   |  count |");
console.log("| ------------------------- | ------ |");
for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`| ${k.padEnd(25)} | ${String(n).padStart(6)} |`);
console.log(`| total                     | ${String(total).padStart(6)} |`);
console.log(`error codes outside the spec: ${offSpec}; server alive at the end: ${alive ? "yes" : "NO"}; rows: ${JSON.stringify(rows)}`);
if (!alive || offSpec > 0) process.exitCode = 1;
