/**
 * Connection churn: CYCLES x (connect, auth, join, close) against a server in a child
 * process, CONCURRENCY at a time. Prints the server's RSS and open file descriptors
 * (read from /proc/<pid>, the server exposes nothing extra) before, at the end, and
 * after an idle period in which the runtime can collect garbage.
 *
 * Sign-in uses `auth` with a token obtained once by signup: 10,000 logins would be
 * 10,000 argon2id hashes (about 11 ms and 19 MiB each), which measures the hasher,
 * not connection handling (bench/signin.ts does that).
 *
 *   bun bench/churn.ts [cycles=10000] [concurrency=20]
 */
import { RawWs, spawnServer } from "./lib/raw-ws.ts";

const CYCLES = Math.min(Number(process.argv[2] ?? 10_000), 100_000);
const CONCURRENCY = Math.min(Number(process.argv[3] ?? 20), 200);
const SETTLE_MS = 5000;

const server = await spawnServer();
try {
  const first = await RawWs.open(server.port);
  first.text({ type: "signup", ref: 1, username: "churner", password: "correct horse battery" });
  const token = (await first.reply(1)).token as string;
  first.destroy();
  await Bun.sleep(500);
  const before = { rss: server.rssKiB(), fds: server.fds() };

  let done = 0;
  let failed = 0;
  const started = performance.now();
  async function worker(): Promise<void> {
    while (done + failed < CYCLES) {
      const i = done + failed;
      done++;
      try {
        const w = await RawWs.open(server.port);
        w.text({ type: "auth", ref: 1, token });
        w.text({ type: "join", ref: 2, room: `churn-${i % 50}` });
        const r = await w.reply(2);
        if (r.type !== "ok") throw new Error(JSON.stringify(r));
        if (i % 2 === 0) {
          w.frame({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) });
          await w.end();
        } else {
          w.destroy();
        }
      } catch (e) {
        done--;
        failed++;
        if (failed <= 3) console.error("cycle failed:", String(e));
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  await Bun.sleep(200);
  const end = { rss: server.rssKiB(), fds: server.fds() };
  await Bun.sleep(SETTLE_MS);
  const settled = { rss: server.rssKiB(), fds: server.fds() };
  const health = await fetch(`http://127.0.0.1:${server.port}/healthz`).then((r) => r.status);

  const mib = (k: number) => (k / 1024).toFixed(1);
  console.log(`churn: ${done} cycles ok, ${failed} failed, ${CONCURRENCY} at a time, ${seconds.toFixed(1)} s (${Math.round(done / seconds)} cycles/s)`);
  console.log("| when                      | server RSS MiB | server open fds |");
  console.log("| ------------------------- | -------------- | --------------- |");
  console.log(`| before                    | ${mib(before.rss).padStart(14)} | ${String(before.fds).padStart(15)} |`);
  console.log(`| right after the churn     | ${mib(end.rss).padStart(14)} | ${String(end.fds).padStart(15)} |`);
  console.log(`| after ${SETTLE_MS / 1000} s idle            | ${mib(settled.rss).padStart(14)} | ${String(settled.fds).padStart(15)} |`);
  console.log(`fds back to baseline: ${settled.fds <= before.fds ? "yes" : "NO"}; /healthz ${health}`);
} finally {
  await server.stop();
}
