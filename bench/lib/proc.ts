/**
 * Process plumbing for the benchmarks: every server and every load generator runs in
 * its own process (Bun.spawn), talks JSON lines on stdout, and is stopped by us.
 */
import type { Subprocess } from "bun";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "../..");
export const BUN = process.execPath;
/** 127.0.0.1 everywhere: nothing listens on a public address. */
export const HOST = "127.0.0.1";

type Proc = Subprocess<"pipe", "pipe", "pipe">;

/** Yields the lines of a byte stream as they arrive. */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
  if (buf) yield buf;
}

/** Rejects after `ms` with `what` in the message. */
export function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let pinning = false;

/**
 * While on, every server process started (Switchboard, the raw baselines, socket.io,
 * the bare argon2 process) is pinned to the first CPU and every load generator to the
 * others, with `taskset`. The suite turns it on for the scenarios whose load one core
 * can generate (`Scenario.pinned`); `--no-pin` keeps it off. Left to the scheduler on
 * these two shared cores, a server and two load generators land differently in every
 * window: an A/A run of fan-out (the same checkout on both sides, `bun bench/ab.ts
 * fanout . . --reps 8`) gave ratios from 0.45x to 1.13x unpinned and from 0.90x to
 * 1.03x pinned, in the same half hour.
 */
export function setPinning(on: boolean): void {
  pinning = on;
}

/** `taskset -c CPUS` for a role, or nothing when pinning is off or impossible. */
function pinFor(role: "server" | "load"): string[] {
  const n = cpus().length;
  if (!pinning || n < 2 || !Bun.which("taskset")) return [];
  return ["taskset", "-c", role === "server" ? "0" : n === 2 ? "1" : `1-${n - 1}`];
}

/** How the processes are placed, for the header of a run. */
export function placement(): string {
  const server = pinFor("server");
  return server.length ? `servers pinned to CPU ${server[2]}, load generators to CPU ${pinFor("load")[2]}` : "not pinned";
}

/**
 * Spawns `argv` through `sh` after raising the soft open-files limit to the hard one
 * (10,000 sockets need more than the usual 1024). `exec` keeps the pid, so the RSS we
 * read is the program's.
 */
function spawn(argv: string[], role: "server" | "load", cwd = ROOT): Proc {
  const proc = Bun.spawn(["sh", "-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', "sh", ...pinFor(role), ...argv], {
    cwd,
    env: process.env,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(proc);
  void proc.exited.then(() => children.delete(proc));
  return proc;
}

/** Every process we started and that still runs: killed when we exit, however we exit. */
const children = new Set<Proc>();
process.on("exit", () => {
  for (const p of children) p.kill("SIGKILL");
});

/** Keeps the last lines of a stream (for error messages) and keeps the pipe drained. */
function tail(stream: ReadableStream<Uint8Array>, keep = 20): string[] {
  const kept: string[] = [];
  void (async () => {
    try {
      for await (const line of lines(stream)) {
        kept.push(line);
        if (kept.length > keep) kept.shift();
      }
    } catch {
      // the process went away
    }
  })();
  return kept;
}

export interface ServerProc {
  readonly name: string;
  readonly pid: number;
  /** ws://127.0.0.1:PORT/ws (socket.io: http://127.0.0.1:PORT) */
  readonly url: string;
  /** Resident set size of the server process, in KiB (from /proc). */
  rssKiB(): number;
  /** CPU time the server process has used so far (user + system), in ms. */
  cpuMs(): number;
  /** CPU time its JavaScriptCore JIT compiler threads have used so far, in ms (every server here runs on Bun). */
  jitMs(): number;
  stop(): Promise<void>;
}

const TICKS_PER_S = 100; // USER_HZ on Linux

export function cpuMs(pid: number | string): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_S;
}

/**
 * CPU time, in ms, of the threads JavaScriptCore names `JITWorker` (its DFG and FTL
 * compilers): while they still work, a Bun server is not yet in its steady state.
 */
export function jitMs(pid: number): number {
  let ms = 0;
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0; // gone
  }
  for (const tid of tasks) {
    try {
      if (!readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").startsWith("JITWorker")) continue;
      ms += cpuMs(`${pid}/task/${tid}`);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ms;
}

export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

async function stopProc(proc: Proc): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  const exited = await Promise.race([proc.exited.then(() => true), sleep(3000).then(() => false)]);
  if (!exited) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

/** Waits for the first line of `source` that `match` turns into a port. */
async function waitForPort(
  name: string,
  proc: Proc,
  source: ReadableStream<Uint8Array>,
  other: string[],
  match: (line: string) => number | undefined,
): Promise<{ port: number; rest: string[] }> {
  const seen: string[] = [];
  const it = lines(source);
  const found = (async () => {
    // `it.next()`, not `for await`: leaving a for-await calls the iterator's `return`,
    // which cancelled the stream and closed the pipe, and the server's next log line
    // failed with EPIPE.
    for (let r = await it.next(); !r.done; r = await it.next()) {
      seen.push(r.value);
      const port = match(r.value);
      if (port !== undefined) return port;
    }
    throw new Error(`${name} exited (code ${await proc.exited}) before listening:\n${[...seen, ...other].join("\n")}`);
  })();
  const port = await within(20_000, `${name} to listen`, found);
  // Keep draining the rest of the stream, or the server blocks on a full pipe.
  const rest: string[] = [];
  void (async () => {
    try {
      for await (const line of it) {
        rest.push(line);
        if (rest.length > 20) rest.shift();
      }
    } catch {
      // gone
    }
  })();
  return { port, rest };
}

/**
 * Switchboard itself: `bun src/main.ts` with a file database in WAL mode. `dir` (or
 * BENCH_SWITCHBOARD_DIR) runs another checkout, to measure a change against this one.
 */
export async function startSwitchboard(opts: {
  dbPath: string;
  sync: "NORMAL" | "FULL";
  flags?: string[];
  dir?: string;
}): Promise<ServerProc> {
  // BENCH_SERVER_BUN_FLAGS="--cpu-prof --cpu-prof-dir /tmp/prof" profiles the server under load.
  const bunFlags = (process.env.BENCH_SERVER_BUN_FLAGS ?? "").split(/\s+/).filter(Boolean);
  const proc = spawn([
    BUN,
    ...bunFlags,
    "src/main.ts",
    "--port", "0",
    "--host", HOST,
    "--db-path", opts.dbPath,
    "--db-sync", opts.sync,
    // Benchmarks measure the server, not its per-connection send and request limits.
    "--send-rate", "1000000",
    "--send-burst", "1000000",
    "--request-rate", "1000000",
    "--request-burst", "1000000",
    // All load comes from 127.0.0.1 and signs in as one user: past 8 connections the
    // login scenario would meet the sign-ins per address, past 10 the failure limiter's
    // attempts in flight per username.
    "--hash-per-address", "1000000",
    "--signin-fails-per-user", "1000000",
    "--signin-fails-per-address", "1000000",
    // Fan-out floods receivers on purpose; do not close them as slow consumers mid-run.
    "--send-buffer-bytes", String(64 * 1024 * 1024),
    "--log-level", "info",
    ...(opts.flags ?? []),
  ], "server", opts.dir ?? process.env.BENCH_SWITCHBOARD_DIR ?? ROOT);
  const out = tail(proc.stdout);
  const { port } = await waitForPort("switchboard", proc, proc.stderr, out, (line) => {
    if (!line.includes('"listening"')) return undefined;
    const m = /:(\d+)"/.exec(JSON.parse(line).url + '"');
    return m ? Number(m[1]) : undefined;
  });
  return {
    name: "switchboard",
    pid: proc.pid,
    url: `ws://${HOST}:${port}/ws`,
    rssKiB: () => rssKiB(proc.pid),
    cpuMs: () => cpuMs(proc.pid),
    jitMs: () => jitMs(proc.pid),
    stop: () => stopProc(proc),
  };
}

/** A benchmark-only server from bench/lib (raw Bun or socket.io); it prints {"port":N} on stdout. */
export async function startBenchServer(name: string, script: string, args: Record<string, string | number | boolean> = {}): Promise<ServerProc> {
  const bunFlags = (process.env.BENCH_SERVER_BUN_FLAGS ?? "").split(/\s+/).filter(Boolean);
  const proc = spawn([BUN, ...bunFlags, join(ROOT, "bench/lib", script), JSON.stringify(args)], "server");
  const err = tail(proc.stderr);
  const { port } = await waitForPort(name, proc, proc.stdout, err, (line) => {
    try {
      const v = JSON.parse(line) as { port?: unknown };
      return typeof v.port === "number" ? v.port : undefined;
    } catch {
      return undefined;
    }
  });
  const url = script.startsWith("sio") ? `http://${HOST}:${port}` : `ws://${HOST}:${port}/ws`;
  return { name, pid: proc.pid, url, rssKiB: () => rssKiB(proc.pid), cpuMs: () => cpuMs(proc.pid), jitMs: () => jitMs(proc.pid), stop: () => stopProc(proc) };
}

/** A fresh temporary folder, removed by `dispose`. */
export function tempDir(prefix = "switchboard-bench-"): { path: string; dispose(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, dispose: () => rmSync(path, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------
// Load generators (bench/lib/client.ts): spawned, made ready, started together.

export interface ConnSpec {
  /** Switchboard session token: the connection sends `auth` first. */
  token?: string;
  /** Room to join before the measurement. */
  join?: string;
  /** This connection sends `send` frames (chat mode). */
  sender?: boolean;
}

export interface WorkerSpec {
  transport: "ws" | "sio";
  url: string;
  mode: "chat" | "rpc" | "idle";
  conns: ConnSpec[];
  durationMs: number;
  /** chat: room, outstanding sends per sender, body */
  room?: string;
  window?: number;
  body?: string;
  /** chat: sends per second per sender, open loop (at most `window` outstanding); unset: closed loop */
  rate?: number;
  /**
   * chat: the room's only sender is here, so every message event it receives is one of
   * its own, in the order it sent them: it measures send-to-delivery latency.
   */
  soleSender?: boolean;
  /** rpc: what each connection asks, one request outstanding at a time */
  rpc?: "ping" | "history" | "login";
  historyMaxSeq?: number;
  username?: string;
  password?: string;
  /** How many connections are being opened at once. */
  connectConcurrency?: number;
}

export interface WorkerResult {
  /** Replies (ok) received during the window. */
  acks: number;
  /** Message events received during the window, all connections together. */
  deliveries: number;
  errors: number;
  /** Connections that closed during the run. */
  closed: number;
  /** Request-to-reply latencies in ms (a sample). */
  lat: number[];
  /** Send-to-delivery latencies in ms at the sender (`soleSender`; a sample). */
  deliveryLat?: number[];
  elapsedMs: number;
  firstError?: string;
}

export interface Workers {
  results(): Promise<WorkerResult[]>;
  /** Idle mode: tells the workers to close their connections and exit. */
  stop(): Promise<void>;
  kill(): void;
}

/** Spawns one process per spec, waits until every connection is ready, then starts them together. */
export async function startWorkers(specs: WorkerSpec[], readyTimeoutMs = 60_000): Promise<Workers> {
  const procs = specs.map((spec) => {
    const p = spawn([BUN, join(ROOT, "bench/lib/client.ts")], "load");
    p.stdin.write(JSON.stringify(spec) + "\n");
    p.stdin.flush();
    return p;
  });
  const errs = procs.map((p) => tail(p.stderr));
  const its = procs.map((p) => lines(p.stdout));
  const kill = () => {
    for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  };
  async function next(i: number, what: string): Promise<Record<string, unknown>> {
    const r = await its[i]!.next();
    if (r.done) {
      const code = await procs[i]!.exited;
      throw new Error(`load worker ${i} exited (code ${code}) waiting for ${what}:\n${errs[i]!.join("\n")}`);
    }
    const v = JSON.parse(r.value) as Record<string, unknown>;
    if (typeof v.fatal === "string") throw new Error(`load worker ${i}: ${v.fatal}`);
    return v;
  }
  try {
    await within(readyTimeoutMs, "load workers to connect", Promise.all(procs.map((_, i) => next(i, "ready"))));
  } catch (e) {
    kill();
    throw e;
  }
  for (const p of procs) {
    p.stdin.write("go\n");
    p.stdin.flush();
  }
  const maxMs = Math.max(...specs.map((s) => s.durationMs)) + 20_000;
  return {
    async results() {
      try {
        const rs = await within(maxMs, "load workers to finish", Promise.all(procs.map((_, i) => next(i, "result"))));
        await Promise.all(procs.map((p) => p.exited));
        return rs.map((r) => r.result as WorkerResult);
      } catch (e) {
        kill();
        throw e;
      }
    },
    async stop() {
      for (const [i, p] of procs.entries()) {
        if (p.exitCode !== null) {
          process.stderr.write(`  warning: load worker ${i} had already exited (code ${p.exitCode}): ${errs[i]!.join(" | ")}\n`);
          continue;
        }
        try {
          p.stdin.write("stop\n");
          p.stdin.flush();
        } catch {
          // it exited meanwhile: nothing left to stop
        }
      }
      const done = await Promise.race([Promise.all(procs.map((p) => p.exited)).then(() => true), sleep(10_000).then(() => false)]);
      if (!done) kill();
    },
    kill,
  };
}

/**
 * Runs one timed window of load and returns every worker's result, with the CPU time
 * `server` used during the window (sampled by our own clock around it).
 */
export async function runLoad(
  specs: WorkerSpec[],
  server?: ServerProc,
): Promise<{ results: WorkerResult[]; serverCpuMs: number; serverJitMs: number }> {
  const w = await startWorkers(specs);
  const c0 = server?.cpuMs() ?? 0;
  const j0 = server?.jitMs() ?? 0;
  await sleep(Math.max(...specs.map((s) => s.durationMs)));
  const c1 = server?.cpuMs() ?? 0;
  const j1 = server?.jitMs() ?? 0;
  // A JIT thread that ends takes its CPU time out of the sum: never below zero.
  return { results: await w.results(), serverCpuMs: c1 - c0, serverJitMs: Math.max(0, j1 - j0) };
}

/** Splits `items` into `n` nearly equal parts, round robin. */
export function split<T>(items: readonly T[], n: number): T[][] {
  const parts: T[][] = Array.from({ length: n }, () => []);
  items.forEach((x, i) => parts[i % n]!.push(x));
  return parts.filter((p) => p.length > 0);
}

/** Runs a bench/lib script (a baseline: placed as a server) to completion and returns the `result` of its last JSON line. */
export async function runScript(script: string, args: unknown, timeoutMs = 60_000): Promise<Record<string, number>> {
  const proc = spawn([BUN, join(ROOT, "bench/lib", script), JSON.stringify(args)], "server");
  const err = tail(proc.stderr);
  try {
    const text = await within(timeoutMs, script, new Response(proc.stdout).text());
    const code = await proc.exited;
    const last = text.trim().split("\n").pop() ?? "";
    if (code !== 0 || !last) throw new Error(`${script} exited ${code}:\n${err.join("\n")}`);
    return (JSON.parse(last) as { result: Record<string, number> }).result;
  } finally {
    if (proc.exitCode === null) proc.kill("SIGKILL");
  }
}
