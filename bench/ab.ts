/**
 * A/B: the same scenario against two Switchboard checkouts in one run, pair by pair,
 * to measure a change before it lands (this file is a tool, not part of `npm run bench`).
 *
 *   bun bench/ab.ts <ping|history|fanout|chat> <dir-A> <dir-B> [--reps 5] [--seconds 2.5] [--rate N]
 */
import { measureRoom, measureRpc } from "./lib/measure.ts";
import { startSwitchboard, tempDir, type ServerProc } from "./lib/proc.ts";
import { JIT_FIGURE, pairwise, row, type Figures } from "./lib/scenario.ts";
import { fillRoom, signupUsers } from "./lib/setup.ts";
import { benchOptions, cliOptions, positionals } from "./lib/cli.ts";
import { setPinning } from "./lib/proc.ts";
import { table } from "./lib/table.ts";

const [what, dirA, dirB] = positionals(process.argv.slice(2));
if (!what || !dirA || !dirB) {
  process.stderr.write("usage: bun bench/ab.ts <ping|history|fanout|chat> <dir-A> <dir-B> [--reps N] [--seconds S]\n");
  process.exit(2);
}
const o = cliOptions(process.argv.slice(2));
const opts = benchOptions(o);
// Placed as in `npm run bench`: the server-bound scenarios pinned.
setPinning(o.pin && (what === "fanout" || what === "history"));
// --rate N: each sender sends N a second, open loop, and the figure to compare is the
// server's CPU per message or delivery at the same load (less noisy than throughput).
const rate = o.int("rate", 0);
const open = rate > 0 ? { rate, window: 1000 } : {};
const tmp = tempDir();
const sync = process.env.DB_SYNC === "FULL" ? "FULL" : "NORMAL";
const a = await startSwitchboard({ dbPath: `${tmp.path}/a.db`, sync, dir: dirA });
const b = await startSwitchboard({ dbPath: `${tmp.path}/b.db`, sync, dir: dirB }).catch(async (e: unknown) => {
  await a.stop();
  tmp.dispose();
  throw e;
});
try {
  async function prepare(s: ServerProc): Promise<() => Promise<Figures>> {
    const tokens = await signupUsers(s.url, what === "chat" ? 50 : 8);
    switch (what) {
      case "ping":
        return () => measureRpc({ url: s.url, server: s, transport: "ws", rpc: "ping", connections: 16, workers: 2 }, opts);
      case "history":
        await fillRoom(s.url, tokens[0]!, "hist", 2000);
        return () =>
          measureRpc({ url: s.url, server: s, transport: "ws", rpc: "history", connections: 8, workers: 2, room: "hist", historyMaxSeq: 2000, token: tokens[0]! }, opts);
      case "fanout":
        return () =>
          measureRoom({ url: s.url, server: s, transport: "ws", tokens, room: "f", members: 301, senders: 1, window: 16, body: "x".repeat(40), workers: 2, ...open }, opts);
      default:
        return () =>
          measureRoom({ url: s.url, server: s, transport: "ws", tokens, room: "c", members: 50, senders: 10, window: 8, body: "x".repeat(64), workers: 2, ...open }, opts);
    }
  }
  const runA = await prepare(a);
  const runB = await prepare(b);
  // "switchboard" is A and "raw" is B here: the ratio is A / B.
  const results = await pairwise(opts, `${what} A/B`, { switchboard: runA, raw: runB });
  // Not the JIT's share: both sides are warm, and its ratio is mostly 0 / 0.
  const keys = Object.keys(results.switchboard[0] ?? {}).filter((k) => k !== JIT_FIGURE);
  process.stdout.write(`A = ${dirA}\nB = ${dirB}\n${table(keys.map((k) => row(what, k, results, k)))}\n`);
} finally {
  await Promise.all([a.stop(), b.stop()]);
  tmp.dispose();
}
