/**
 * Chat: N senders in a room of 50 members, Switchboard against the naive raw baseline
 * (Bun.serve + bun:sqlite, one autocommit INSERT per message), for DB_SYNC NORMAL and
 * FULL, each side on its own file database in WAL mode in a temp folder.
 *
 *   bun bench/chat.ts [--reps 5] [--seconds 2.5] [--senders 10] [--window 8]
 */
import { measureRoom } from "./lib/measure.ts";
import { startBenchServer, startSwitchboard, tempDir } from "./lib/proc.ts";
import { pairwise, row, type BenchOptions, type Row, type Scenario } from "./lib/scenario.ts";
import { signupUsers } from "./lib/setup.ts";
import { cliOptions, runAlone } from "./lib/cli.ts";

const MEMBERS = 50;
const BODY = "The quick brown fox jumps over the lazy dog, again and again: 64 ch";

export function chatScenario(params: { senders?: number; window?: number } = {}): Scenario {
  const senders = params.senders ?? 10;
  const window = params.window ?? 8;
  return {
    name: "chat",
    pinned: false,
    description: `${senders} senders (${window} sends outstanding each) in a room of ${MEMBERS}`,
    async run(opts: BenchOptions): Promise<Row[]> {
      const rows: Row[] = [];
      for (const sync of ["NORMAL", "FULL"] as const) {
        const dir = tempDir();
        const sb = await startSwitchboard({ dbPath: `${dir.path}/switchboard.db`, sync });
        const raw = await startBenchServer("raw-chat", "raw-server.ts", { mode: "chat", db: `${dir.path}/raw.db`, sync });
        try {
          const tokens = await signupUsers(sb.url, MEMBERS);
          const common = { room: "chat", members: MEMBERS, senders, window, body: BODY, workers: 2, transport: "ws" as const };
          const results = await pairwise(opts, `chat ${sync}`, {
            switchboard: () => measureRoom({ ...common, url: sb.url, server: sb, tokens }, opts),
            raw: () => measureRoom({ ...common, url: raw.url, server: raw }, opts),
          });
          const name = `chat ${sync}`;
          rows.push(
            row(name, "msgs/s", results, "msgs/s", { of: "ratio", op: ">=", value: sync === "FULL" ? 3.0 : 0.9 }),
            row(name, "deliveries/s", results, "deliveries/s"),
            row(name, "p50 send→ok ms", results, "p50"),
            row(name, "p99 send→ok ms", results, "p99"),
            row(name, "server CPU µs/msg", results, "cpu us/msg"),
            row(name, "server CPU busy %", results, "busy %"),
          );
        } finally {
          await Promise.all([sb.stop(), raw.stop()]);
          dir.dispose();
        }
      }
      return rows;
    },
  };
}

export const scenario = chatScenario();

if (import.meta.main) {
  const o = cliOptions(process.argv.slice(2));
  await runAlone(chatScenario({ senders: o.int("senders", 10), window: o.int("window", 8) }), o);
}
