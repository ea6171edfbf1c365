/**
 * Sign-in: `login` requests answered per second (argon2id verify + a session row),
 * against bare @node-rs/argon2 verify throughput with the same parameters
 * (m=19456 KiB, t=2, p=1) and the same number of hashes in flight (HASH_CONCURRENCY).
 *
 *   bun bench/login.ts [--reps 5] [--seconds 5] [--connections 8]   (windows of at least 5 s)
 */
import { loadConfig } from "../src/config.ts";
import { measureRpc } from "./lib/measure.ts";
import { runScript, startSwitchboard, tempDir } from "./lib/proc.ts";
import { pairwise, row, type BenchOptions, type Figures, type Row, type Scenario } from "./lib/scenario.ts";
import { BENCH_PASSWORD, signupUsers } from "./lib/setup.ts";
import { cliOptions, runAlone } from "./lib/cli.ts";

export function loginScenario(params: { connections?: number } = {}): Scenario {
  const connections = params.connections ?? 8;
  const concurrency = loadConfig({}).config.HASH_CONCURRENCY;
  return {
    name: "login",
    pinned: true,
    description: `${connections} connections signing in over and over; ${concurrency} hashes in flight on both sides`,
    async run(given: BenchOptions): Promise<Row[]> {
      // At about 50 sign-ins a second, a 2.5 s window holds some 125 of them and one slow
      // hash moves the ratio by several percent: the windows here are at least 5 s.
      const opts = { ...given, durationMs: Math.max(given.durationMs, 5000) };
      const dir = tempDir();
      const sb = await startSwitchboard({ dbPath: `${dir.path}/switchboard.db`, sync: "NORMAL" });
      try {
        await signupUsers(sb.url, 1, "signin");
        // CPU per sign-in in ms: the server process's (hash threads included) against the bare hasher process's.
        const inMs = (f: Figures): Figures => ({ ...f, "cpu ms/req": (f["cpu us/req"] ?? Number.NaN) / 1000 });
        const results = await pairwise(opts, "login", {
          switchboard: async () =>
            inMs(
              await measureRpc(
                { url: sb.url, server: sb, transport: "ws", rpc: "login", connections, workers: 1, username: "signin0", password: BENCH_PASSWORD },
                opts,
              ),
            ),
          raw: async () => inMs(await runScript("argon2-worker.ts", { concurrency, durationMs: opts.durationMs, password: BENCH_PASSWORD })),
        });
        return [
          row("sign-in (login)", "sign-ins/s", results, "req/s", { of: "ratio", op: ">=", value: 0.9 }),
          row("sign-in (login)", "p50 ms", results, "p50"),
          row("sign-in (login)", "CPU ms/sign-in", results, "cpu ms/req"),
        ];
      } finally {
        await sb.stop();
        dir.dispose();
      }
    },
  };
}

export const scenario = loginScenario();

if (import.meta.main) {
  const o = cliOptions(process.argv.slice(2));
  await runAlone(loginScenario({ connections: o.int("connections", 8) }), o);
}
