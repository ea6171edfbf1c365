/**
 * Fan-out: one sender, a room of many receivers; deliveries per second received.
 * Switchboard (every message stored before it is published) against raw
 * `server.publish` (no database) and socket.io 4.8 `io.to(room).emit`; then, for the
 * record, Switchboard with `DELIVERY_INTERVAL_MS=0` (each commit's events written in its
 * own turn, as the raw server does) against the raw server again.
 *
 *   bun bench/fanout.ts [--reps 5] [--seconds 2.5] [--receivers 300] [--window 16]
 */
import { measureRoom } from "./lib/measure.ts";
import { startBenchServer, startSwitchboard, tempDir } from "./lib/proc.ts";
import { pairwise, row, type BenchOptions, type Row, type Scenario } from "./lib/scenario.ts";
import { signupUsers } from "./lib/setup.ts";
import { cliOptions, runAlone } from "./lib/cli.ts";

const BODY = "fan-out message body, 40 chars long....";

export function fanoutScenario(params: { receivers?: number; window?: number } = {}): Scenario {
  const receivers = params.receivers ?? 300;
  const window = params.window ?? 16;
  return {
    name: "fanout",
    pinned: true,
    description: `1 sender (${window} sends outstanding) into a room of ${receivers} receivers`,
    async run(opts: BenchOptions): Promise<Row[]> {
      const dir = tempDir();
      const sb = await startSwitchboard({ dbPath: `${dir.path}/switchboard.db`, sync: "NORMAL" });
      const sb0 = await startSwitchboard({ dbPath: `${dir.path}/interval-0.db`, sync: "NORMAL", flags: ["--delivery-interval-ms", "0"] });
      const raw = await startBenchServer("raw-publish", "raw-server.ts", { mode: "publish" });
      const sio = await startBenchServer("socket.io", "sio-server.ts");
      try {
        const tokens = await signupUsers(sb.url, 8);
        const tokens0 = await signupUsers(sb0.url, 8);
        // The sender is a member too (it receives its own messages).
        const common = { room: "fanout", members: receivers + 1, senders: 1, window, body: BODY, workers: 2 };
        const results = await pairwise(opts, "fanout", {
          switchboard: () => measureRoom({ ...common, url: sb.url, server: sb, transport: "ws", tokens }, opts),
          raw: () => measureRoom({ ...common, url: raw.url, server: raw, transport: "ws" }, opts),
          "socket.io": () => measureRoom({ ...common, url: sio.url, server: sio, transport: "sio" }, opts),
        });
        const unbatched = await pairwise(opts, "fanout, DELIVERY_INTERVAL_MS=0", {
          switchboard: () => measureRoom({ ...common, url: sb0.url, server: sb0, transport: "ws", tokens: tokens0 }, opts),
          raw: () => measureRoom({ ...common, url: raw.url, server: raw, transport: "ws" }, opts),
        });
        const interval0 = "fanout, interval 0";
        return [
          row("fanout", "deliveries/s", results, "deliveries/s", { of: "ratio", op: ">=", value: 0.9 }),
          row("fanout", "msgs/s", results, "msgs/s"),
          row("fanout", "p50 send→ok ms", results, "p50"),
          row("fanout", "p50 send→delivery ms", results, "delivery p50"),
          row("fanout", "p99 send→delivery ms", results, "delivery p99"),
          row("fanout", "server CPU µs/delivery", results, "cpu us/delivery"),
          row("fanout", "server CPU busy %", results, "busy %"),
          row(interval0, "deliveries/s", unbatched, "deliveries/s"),
          row(interval0, "p50 send→delivery ms", unbatched, "delivery p50"),
          row(interval0, "p99 send→delivery ms", unbatched, "delivery p99"),
          row(interval0, "server CPU µs/delivery", unbatched, "cpu us/delivery"),
          row(interval0, "server CPU busy %", unbatched, "busy %"),
        ];
      } finally {
        await Promise.all([sb.stop(), sb0.stop(), raw.stop(), sio.stop()]);
        dir.dispose();
      }
    },
  };
}

export const scenario = fanoutScenario();

if (import.meta.main) {
  const o = cliOptions(process.argv.slice(2));
  await runAlone(fanoutScenario({ receivers: o.int("receivers", 300), window: o.int("window", 16) }), o);
}
