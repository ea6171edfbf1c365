/**
 * History: 50-row reads at random points of a 2,000-message room, one request
 * outstanding per connection. Switchboard's `history` against a raw Bun server running
 * one prepared SELECT on the same database file (same data, same JSON reply).
 *
 *   bun bench/history.ts [--reps 5] [--seconds 2.5] [--connections 8]
 */
import { measureRpc } from "./lib/measure.ts";
import { startBenchServer, startSwitchboard, tempDir } from "./lib/proc.ts";
import { pairwise, row, type BenchOptions, type Row, type Scenario } from "./lib/scenario.ts";
import { fillRoom, signupUsers } from "./lib/setup.ts";
import { cliOptions, runAlone } from "./lib/cli.ts";

const MESSAGES = 2000;

export function historyScenario(params: { connections?: number } = {}): Scenario {
  const connections = params.connections ?? 8;
  return {
    name: "history",
    pinned: true,
    description: `${connections} connections reading 50 rows of a ${MESSAGES}-message room`,
    async run(opts: BenchOptions): Promise<Row[]> {
      const dir = tempDir();
      const dbPath = `${dir.path}/switchboard.db`;
      const sb = await startSwitchboard({ dbPath, sync: "NORMAL" });
      let raw: Awaited<ReturnType<typeof startBenchServer>> | undefined;
      try {
        const [token] = await signupUsers(sb.url, 1);
        await fillRoom(sb.url, token!, "hist", MESSAGES);
        raw = await startBenchServer("raw-history", "raw-server.ts", { mode: "history", db: dbPath });
        const common = { rpc: "history" as const, connections, workers: 2, room: "hist", historyMaxSeq: MESSAGES };
        const rawUrl = raw.url;
        const rawServer = raw;
        const results = await pairwise(opts, "history", {
          switchboard: () => measureRpc({ ...common, url: sb.url, server: sb, transport: "ws", token: token! }, opts),
          raw: () => measureRpc({ ...common, url: rawUrl, server: rawServer, transport: "ws" }, opts),
        });
        return [
          row("history", "50-row reads/s", results, "req/s", { of: "ratio", op: ">=", value: 0.8 }),
          row("history", "p50 ms", results, "p50"),
          row("history", "server CPU µs/read", results, "cpu us/req"),
          row("history", "server CPU busy %", results, "busy %"),
        ];
      } finally {
        await Promise.all([sb.stop(), raw?.stop()]);
        dir.dispose();
      }
    },
  };
}

export const scenario = historyScenario();

if (import.meta.main) {
  const o = cliOptions(process.argv.slice(2));
  await runAlone(historyScenario({ connections: o.int("connections", 8) }), o);
}
