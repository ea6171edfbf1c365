/**
 * Size of the single-file binary and time from exec to healthy (first 200 from
 * /healthz), median of 10 runs, each in a fresh empty folder with a fresh TMPDIR.
 * "first start" creates and migrates ./data/switchboard.db; "restart" reuses it.
 *
 *   bun bench/startup.ts [--runs 10] [--no-build]
 */
import { linkSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const BINARY = join(ROOT, "dist/switchboard");
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf("--runs") + 1]) || 10;

if (!args.includes("--no-build")) {
  const build = Bun.spawnSync([process.execPath, "run", "build"], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed:\n${build.stderr}`);
}

function freePort(): number {
  const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

/** Starts the binary in `dir` and resolves with ms from spawn to the first 200 from /healthz. */
async function timeToHealthy(dir: string): Promise<number> {
  const port = freePort();
  const started = performance.now();
  const proc = Bun.spawn(["./switchboard", "--port", String(port), "--host", "127.0.0.1", "--log-level", "warn"], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "", TMPDIR: join(dir, "tmp") },
    stdout: "ignore",
    stderr: "inherit",
  });
  try {
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode} before becoming healthy`);
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status === 200, () => false);
      if (ok) return performance.now() - started;
      await Bun.sleep(2); // polling is the measurement: no event says "healthy"
    }
  } finally {
    proc.kill("SIGTERM");
    if ((await proc.exited) !== 0) throw new Error("did not stop cleanly");
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const scratch = mkdtempSync(join(tmpdir(), "switchboard-startup-"));
const first: number[] = [];
const restart: number[] = [];
try {
  for (let i = 0; i < runs; i++) {
    const dir = join(scratch, `run-${i}`);
    mkdirSync(join(dir, "tmp"), { recursive: true });
    linkSync(BINARY, join(dir, "switchboard"));
    first.push(await timeToHealthy(dir));
    restart.push(await timeToHealthy(dir));
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const mib = (statSync(BINARY).size / 1024 / 1024).toFixed(1);
const row = (name: string, xs: number[]) =>
  `| ${name.padEnd(39)} | ${median(xs).toFixed(0).padStart(6)} | ${Math.min(...xs).toFixed(0).padStart(4)} | ${Math.max(...xs).toFixed(0).padStart(4)} |`;
console.log(`binary dist/switchboard: ${mib} MiB; bun ${Bun.version}; ${navigator.hardwareConcurrency} cores; ${runs} runs\n`);
console.log(`| exec -> first 200 from /healthz, ms     | median |  min |  max |`);
console.log(`| --------------------------------------- | -----: | ---: | ---: |`);
console.log(row("first start (creates + migrates the DB)", first));
console.log(row("restart (existing DB)", restart));
