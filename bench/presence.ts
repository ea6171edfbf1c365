/**
 * A join storm: `--users` distinct users, each on its own connection, join one room at
 * once (as after a restart, when every client re-joins). Each join is a presence event
 * for every member already there, so the room's members receive about users²/2 events
 * in all. Figures: the server's CPU time and the wall time until every event has
 * arrived, for Switchboard (the real server, in memory, with a stand-in for argon2 so
 * that the users can sign up in a moment: bench/lib/storm-server.ts) against a raw Bun
 * server that publishes each join to the room's topic (bench/lib/raw-server.ts,
 * `presence`). The connections are this process's, which receiving the events keeps
 * busy: compare the servers' CPU, not the wall time. A tool, not part of `npm run bench`.
 *
 *   bun bench/presence.ts [--users 2000] [--reps 3]
 */
import { cliOptions } from "./lib/cli.ts";
import { HOST, setPinning, startBenchServer, type ServerProc } from "./lib/proc.ts";
import { median } from "./lib/stats.ts";

const o = cliOptions(process.argv.slice(2));
const users = o.int("users", 2000);
setPinning(o.pin);

async function storm(server: ServerProc): Promise<{ cpuMs: number; wallMs: number }> {
  const sockets = await Promise.all(
    Array.from({ length: users }, () =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(server.url);
        ws.onopen = () => resolve(ws);
        ws.onerror = () => reject(new Error(`cannot connect to ${server.url}`));
      }),
    ),
  );
  const answered = (ws: WebSocket, ref: string, onOther: (text: string) => void = () => {}) =>
    new Promise<void>((resolve) => {
      ws.onmessage = (e) => {
        const text = String(e.data);
        if (text.includes(`"ref":"${ref}"`)) resolve();
        else onOther(text);
      };
    });
  await Promise.all(
    sockets.map((ws, i) => {
      const done = answered(ws, "s");
      ws.send(JSON.stringify({ type: "signup", ref: "s", username: `storm_${i}`, password: "correct horse battery" }));
      return done;
    }),
  );
  const expected = (users * (users - 1)) / 2;
  let events = 0;
  let allIn!: () => void;
  const all = new Promise<void>((resolve) => (allIn = resolve));
  const count = (text: string) => {
    if (text.includes('"presence"') && ++events === expected) allIn();
  };
  const cpu0 = server.cpuMs();
  const t0 = performance.now();
  await Promise.all(
    sockets.map((ws) => {
      const done = answered(ws, "j", count);
      ws.send(JSON.stringify({ type: "join", ref: "j", room: "storm" }));
      return done;
    }),
  );
  await all;
  const figures = { cpuMs: server.cpuMs() - cpu0, wallMs: performance.now() - t0 };
  for (const ws of sockets) ws.close();
  return figures;
}

type Side = "switchboard" | "raw";
const rows: Record<Side, Array<{ cpuMs: number; wallMs: number }>> = { switchboard: [], raw: [] };
process.stderr.write(`presence: ${users} users join one room, ${o.reps} reps (${HOST}, servers pinned: ${o.pin})\n`);
for (let rep = 0; rep < o.reps; rep++) {
  for (const side of (rep % 2 === 0 ? ["switchboard", "raw"] : ["raw", "switchboard"]) as Side[]) {
    const server =
      side === "switchboard" ? await startBenchServer("switchboard", "storm-server.ts") : await startBenchServer("raw-presence", "raw-server.ts", { mode: "presence" });
    try {
      const f = await storm(server);
      rows[side].push(f);
      process.stderr.write(`  rep ${rep + 1} ${side}: server CPU ${Math.round(f.cpuMs)} ms, all events in ${Math.round(f.wallMs)} ms\n`);
    } finally {
      await server.stop();
    }
  }
}
const med = (side: Side, k: "cpuMs" | "wallMs") => median(rows[side].map((r) => r[k]));
const ratios = rows.switchboard.map((r, i) => r.cpuMs / rows.raw[i]!.cpuMs);
process.stdout.write(
  JSON.stringify({
    users,
    events: (users * (users - 1)) / 2,
    switchboardCpuMs: Math.round(med("switchboard", "cpuMs")),
    rawCpuMs: Math.round(med("raw", "cpuMs")),
    cpuRatio: Number(median(ratios).toFixed(3)),
    cpuRatioRange: [Math.min(...ratios), Math.max(...ratios)].map((x) => Number(x.toFixed(3))),
    switchboardWallMs: Math.round(med("switchboard", "wallMs")),
    rawWallMs: Math.round(med("raw", "wallMs")),
  }, null, 2) + "\n",
);
