/**
 * Ping: request/reply round trips, each connection with one request outstanding.
 * Switchboard's `{"type":"ping"}` against a raw Bun echo server and socket.io 4.8
 * (emit with an acknowledgement, websocket transport only).
 *
 *   bun bench/ping.ts [--reps 5] [--seconds 2.5] [--connections 16]
 */
import { measureRpc } from "./lib/measure.ts";
import { startBenchServer, startSwitchboard, tempDir } from "./lib/proc.ts";
import { pairwise, row, type BenchOptions, type Row, type Scenario } from "./lib/scenario.ts";
import { cliOptions, runAlone } from "./lib/cli.ts";

export function pingScenario(params: { connections?: number } = {}): Scenario {
  const connections = params.connections ?? 16;
  return {
    name: "ping",
    pinned: false,
    description: `${connections} connections, one ping outstanding each`,
    async run(opts: BenchOptions): Promise<Row[]> {
      const dir = tempDir();
      const sb = await startSwitchboard({ dbPath: `${dir.path}/switchboard.db`, sync: "NORMAL" });
      const raw = await startBenchServer("raw-echo", "raw-server.ts", { mode: "echo" });
      const sio = await startBenchServer("socket.io", "sio-server.ts");
      try {
        const common = { rpc: "ping" as const, connections, workers: 2 };
        const results = await pairwise(opts, "ping", {
          switchboard: () => measureRpc({ ...common, url: sb.url, server: sb, transport: "ws" }, opts),
          raw: () => measureRpc({ ...common, url: raw.url, server: raw, transport: "ws" }, opts),
          "socket.io": () => measureRpc({ ...common, url: sio.url, server: sio, transport: "sio" }, opts),
        });
        return [
          row("ping", "round trips/s", results, "req/s", { of: "ratio", op: ">=", value: 0.8 }),
          row("ping", "p50 ms", results, "p50"),
          row("ping", "p99 ms", results, "p99"),
          row("ping", "server CPU µs/req", results, "cpu us/req"),
          row("ping", "server CPU busy %", results, "busy %"),
        ];
      } finally {
        await Promise.all([sb.stop(), raw.stop(), sio.stop()]);
        dir.dispose();
      }
    },
  };
}

export const scenario = pingScenario();

if (import.meta.main) {
  const o = cliOptions(process.argv.slice(2));
  await runAlone(pingScenario({ connections: o.int("connections", 16) }), o);
}
