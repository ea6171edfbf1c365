/**
 * Memory per idle connection: RSS of the server process before and after opening
 * 10,000 signed-in idle connections (opened by two load-generator processes), for a
 * fresh Switchboard and, for reference, a raw Bun.serve server (no accounts).
 *
 *   bun bench/memory.ts [--reps 5] [--connections 10000]
 */
import { sleep, split, startBenchServer, startSwitchboard, startWorkers, tempDir, type ServerProc, type WorkerSpec } from "./lib/proc.ts";
import { pairwise, row, type BenchOptions, type Figures, type Row, type Scenario } from "./lib/scenario.ts";
import { signupUsers } from "./lib/setup.ts";
import { cliOptions, runAlone } from "./lib/cli.ts";

const WORKERS = 2;

async function idleConnections(server: ServerProc, n: number, token: string | undefined, opts: BenchOptions): Promise<Figures> {
  const specs = (count: number): WorkerSpec[] =>
    split(Array.from({ length: count }, () => (token ? { token } : {})), WORKERS).map((conns) => ({
      transport: "ws" as const,
      url: server.url,
      mode: "idle" as const,
      conns,
      durationMs: 0,
      connectConcurrency: 32,
    }));
  // Warm up: the first connections pay for code and buffers every later one shares.
  const warm = await startWorkers(specs(200));
  await warm.stop();
  await sleep(500);
  const before = server.rssKiB();
  const started = performance.now();
  const load = await startWorkers(specs(n), 120_000);
  const connectSecs = (performance.now() - started) / 1000;
  await sleep(1000);
  const after = server.rssKiB();
  await load.stop();
  opts.log(`    ${server.name}: RSS ${before} KiB -> ${after} KiB with ${n} connections (opened in ${connectSecs.toFixed(1)} s)`);
  return { "KiB/conn": (after - before) / n, "rss MiB": after / 1024 };
}

export function memoryScenario(params: { connections?: number } = {}): Scenario {
  const n = params.connections ?? 10_000;
  return {
    name: "memory",
    pinned: false,
    description: `server RSS growth with ${n} signed-in idle connections`,
    async run(opts: BenchOptions): Promise<Row[]> {
      // Every repetition starts fresh servers and warms them up itself (idleConnections).
      const results = await pairwise({ ...opts, warmup: 0 }, "memory", {
        async switchboard() {
          const dir = tempDir();
          const sb = await startSwitchboard({ dbPath: `${dir.path}/switchboard.db`, sync: "NORMAL" });
          try {
            const [token] = await signupUsers(sb.url, 1, "idle");
            return await idleConnections(sb, n, token!, opts);
          } finally {
            await sb.stop();
            dir.dispose();
          }
        },
        async raw() {
          const raw = await startBenchServer("raw-idle", "raw-server.ts", { mode: "idle" });
          try {
            return await idleConnections(raw, n, undefined, opts);
          } finally {
            await raw.stop();
          }
        },
      });
      return [row(`memory @${n / 1000}k idle`, "KiB/conn", results, "KiB/conn", { of: "value", op: "<=", value: 8 })];
    },
  };
}

export const scenario = memoryScenario();

if (import.meta.main) {
  const o = cliOptions(process.argv.slice(2));
  await runAlone(memoryScenario({ connections: o.int("connections", 10_000) }), o);
}
