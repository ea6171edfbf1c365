/**
 * The sign-in baseline: bare @node-rs/argon2 verify throughput with Switchboard's own
 * parameters, `concurrency` verifies in flight, in its own process.
 * `bun bench/lib/argon2-worker.ts '{"concurrency":4,"durationMs":2500}'` prints {"result":{...}}.
 */
import { hash, verify } from "@node-rs/argon2";
import { ARGON2_PARAMS } from "../../src/features/accounts/password.ts";
import { Reservoir, quantile } from "./stats.ts";

const args = JSON.parse(process.argv[2] ?? "{}") as { concurrency: number; durationMs: number; password: string };
const digest = await hash(args.password, ARGON2_PARAMS);
const lat = new Reservoir();
let ops = 0;
const c0 = process.cpuUsage();
const t0 = performance.now();
const end = t0 + args.durationMs;
await Promise.all(
  Array.from({ length: args.concurrency }, async () => {
    while (performance.now() < end) {
      const at = performance.now();
      if (!(await verify(digest, args.password))) throw new Error("verify failed");
      ops++;
      lat.add(performance.now() - at);
    }
  }),
);
const secs = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(c0);
process.stdout.write(
  JSON.stringify({
    result: { "req/s": ops / secs, p50: quantile(lat.values, 0.5), p99: quantile(lat.values, 0.99), "cpu us/req": (cpu.user + cpu.system) / ops },
  }) + "\n",
);
