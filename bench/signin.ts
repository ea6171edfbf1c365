/**
 * Sign-in timing, against a server in a child process:
 * 1. login with an unknown name vs a wrong password, TRIES each, interleaved: the
 *    medians should be within 10% (the server verifies against a dummy hash for
 *    unknown names, so both cost one argon2id verify).
 * 2. a storm of failing logins from a separate process (`--storm`), while this process
 *    pings over PINGERS other connections: ping round trips should keep p99 < 5 ms,
 *    because hashing runs off the event loop (HASH_CONCURRENCY at a time).
 * Failure limits are raised for the run, or they would answer rate_limited (no hash).
 *
 *   bun bench/signin.ts [tries=50] [stormSeconds=3]
 */
import { RawWs, spawnServer } from "./lib/raw-ws.ts";

const PASSWORD = "correct horse battery";

if (process.argv[2] === "--storm") {
  // The load generator: STORM connections, each sending failing logins back to back.
  const port = Number(process.argv[3]);
  const until = Date.now() + Number(process.argv[4]) * 1000;
  let sent = 0;
  let limited = 0;
  await Promise.all(
    Array.from({ length: 16 }, async (_, c) => {
      const w = await RawWs.open(port);
      for (let i = 0; Date.now() < until; i++) {
        w.text({ type: "login", ref: i, username: `storm${c}`, password: `wrong ${i}` });
        const r = await w.reply(i, 30_000);
        sent++;
        if (r.code === "rate_limited") limited++;
      }
      w.destroy();
    }),
  );
  console.log(JSON.stringify({ sent, limited }));
  process.exit(0);
}

const TRIES = Math.min(Number(process.argv[2] ?? 50), 1000);
const STORM_S = Math.min(Number(process.argv[3] ?? 3), 30);
const PINGERS = 4;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

const server = await spawnServer({ SIGNIN_FAILS_PER_USER: "1000000", SIGNIN_FAILS_PER_ADDRESS: "1000000" });
try {
  const w = await RawWs.open(server.port);
  let ref = 0;
  const call = async (frame: Record<string, unknown>) => {
    const r = ++ref;
    const t0 = performance.now();
    w.text({ ...frame, ref: r });
    const reply = await w.reply(r, 30_000);
    return { reply, ms: performance.now() - t0 };
  };
  await call({ type: "signup", username: "timing_user", password: PASSWORD });
  // Warm up both paths (the dummy hash is made on the first unknown-name login).
  for (let i = 0; i < 5; i++) {
    await call({ type: "login", username: "nobody", password: "wrong password" });
    await call({ type: "login", username: "timing_user", password: "wrong password" });
  }
  const unknown: number[] = [];
  const wrong: number[] = [];
  const codes = new Set<string>();
  for (let i = 0; i < TRIES; i++) {
    const a = await call({ type: "login", username: `nobody${i}`, password: "wrong password" });
    const b = await call({ type: "login", username: "timing_user", password: "wrong password" });
    unknown.push(a.ms);
    wrong.push(b.ms);
    codes.add(`${a.reply.code}/${a.reply.message}`).add(`${b.reply.code}/${b.reply.message}`);
  }
  const mu = median(unknown);
  const mw = median(wrong);
  const diff = Math.abs(mu - mw) / Math.max(mu, mw);
  console.log(`sign-in timing, ${TRIES} tries each, interleaved`);
  console.log("| login with           | median ms | p90 ms |");
  console.log("| -------------------- | --------- | ------ |");
  console.log(`| unknown username     | ${mu.toFixed(2).padStart(9)} | ${pct(unknown, 90).toFixed(2).padStart(6)} |`);
  console.log(`| wrong password       | ${mw.toFixed(2).padStart(9)} | ${pct(wrong, 90).toFixed(2).padStart(6)} |`);
  console.log(`medians differ by ${(diff * 100).toFixed(1)}% (target < 10%): ${diff < 0.1 ? "PASS" : "FAIL"}; distinct replies: ${[...codes].join(" | ")}`);

  // Ping round trips, first quiet, then during the storm.
  const pingers = await Promise.all(Array.from({ length: PINGERS }, () => RawWs.open(server.port)));
  async function pingFor(ms: number): Promise<number[]> {
    const rtts: number[] = [];
    const until = performance.now() + ms;
    await Promise.all(
      pingers.map(async (p, c) => {
        for (let i = 0; performance.now() < until; i++) {
          const r = `${c}-${i}-${ms}`;
          const t0 = performance.now();
          p.text({ type: "ping", ref: r });
          await p.reply(r);
          rtts.push(performance.now() - t0);
          p.frames.length = 0;
          await Bun.sleep(2);
        }
      }),
    );
    return rtts;
  }
  const quiet = await pingFor(1500);
  const storm = Bun.spawn([process.execPath, import.meta.path, "--storm", String(server.port), String(STORM_S)], { stdout: "pipe", stderr: "inherit" });
  await Bun.sleep(300); // let the storm start
  const loud = await pingFor(STORM_S * 1000 - 600);
  await storm.exited;
  const stormStats = JSON.parse(await new Response(storm.stdout).text()) as { sent: number; limited: number };
  console.log(`\nping round trips over ${PINGERS} other connections (storm: ${stormStats.sent} failing logins from 16 connections in ${STORM_S} s, ${stormStats.limited} rate_limited)`);
  console.log("| while              | pings | p50 ms | p99 ms | max ms |");
  console.log("| ------------------ | ----- | ------ | ------ | ------ |");
  for (const [name, xs] of [["quiet", quiet], ["sign-in storm", loud]] as const) {
    console.log(`| ${name.padEnd(18)} | ${String(xs.length).padStart(5)} | ${pct(xs, 50).toFixed(2).padStart(6)} | ${pct(xs, 99).toFixed(2).padStart(6)} | ${Math.max(...xs).toFixed(2).padStart(6)} |`);
  }
  console.log(`p99 during the storm < 5 ms: ${pct(loud, 99) < 5 ? "PASS" : "FAIL"}`);
  for (const p of pingers) p.destroy();
  w.destroy();
} finally {
  await server.stop();
}
