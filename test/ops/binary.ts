/**
 * Runs the single-file binary the way an operator does: copied alone into an empty
 * folder, no node_modules, its own TMPDIR. `npm run build` runs once per test run, and
 * not at all when dist/switchboard is newer than every source file.
 */
import { afterAll, afterEach, beforeAll } from "bun:test";
import { TestSocket } from "../helpers.ts";
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "../..");
const DIST = join(ROOT, "dist/switchboard");

function newestInput(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestInput(path) : statSync(path).mtimeMs);
  }
  return newest;
}

let binary: string | undefined;
let scratch: string | undefined;

/** A private copy of a fresh build; the path of the copy. */
export function ensureBinary(): string {
  if (binary) return binary;
  const inputs = Math.max(newestInput(join(ROOT, "src")), newestInput(join(ROOT, "migrations")), statSync(join(ROOT, "package.json")).mtimeMs);
  if (!existsSync(DIST) || statSync(DIST).mtimeMs < inputs) {
    const build = Bun.spawnSync([process.execPath, "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    if (build.exitCode !== 0) throw new Error(`npm run build failed:\n${build.stderr.toString()}`);
  }
  scratch = mkdtempSync(join(tmpdir(), "switchboard-ops-"));
  mkdirSync(join(scratch, "tmp"));
  // A copy, so that another build of dist/ during the run cannot change it under us.
  binary = join(scratch, "switchboard.bin");
  copyFileSync(DIST, binary);
  return binary;
}

/** TMPDIR for the binaries of this run (Bun unpacks argon2's .node file there). */
export function binaryTmp(): string {
  ensureBinary();
  return join(scratch!, "tmp");
}

/** A new empty folder holding only the binary (a hard link to the private copy). */
export function emptyFolderWithBinary(): string {
  const bin = ensureBinary();
  const dir = mkdtempSync(join(scratch!, "run-"));
  linkSync(bin, join(dir, "switchboard"));
  return dir;
}

export function cleanup(): void {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = binary = undefined;
}

export type LogLine = Record<string, unknown> & { event: string; level: string; time: string };

export interface RunOptions {
  env?: Record<string, string>;
}

function envFor(opts: RunOptions): Record<string, string> {
  // Nothing inherited: no stray PORT or DB_PATH from the test runner's environment.
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", TMPDIR: binaryTmp(), ...opts.env };
}

/** Runs `./switchboard args` in `dir` to completion. */
export async function runOnce(dir: string, args: string[], opts: RunOptions = {}) {
  const proc = Bun.spawn(["./switchboard", ...args], { cwd: dir, env: envFor(opts), stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/** A serving binary whose JSON log lines (stderr) can be awaited. */
export class Instance {
  readonly lines: LogLine[] = [];
  /** Everything written to stderr, for leak checks. */
  stderr = "";
  readonly exited: Promise<number>;
  private waiters: Array<{ event: string; resolve: (l: LogLine) => void }> = [];
  private exitCode: number | null = null;
  port = 0;

  private constructor(
    readonly dir: string,
    readonly proc: ReturnType<typeof Bun.spawn>,
  ) {
    const stderrDone = this.readLines(proc.stderr as ReadableStream<Uint8Array>);
    this.exited = proc.exited.then(async (code) => {
      await stderrDone;
      this.exitCode = code;
      return code;
    });
  }

  /** Starts `./switchboard args` in `dir` on port 0 and resolves once it logs `listening`. */
  static async start(dir: string, args: string[] = [], opts: RunOptions = {}): Promise<Instance> {
    const inst = Instance.spawn(dir, args, opts);
    const listening = await inst.waitFor("listening");
    inst.port = Number(/:(\d+)$/.exec(String(listening.url))?.[1]);
    return inst;
  }

  /** Starts `./switchboard args` in `dir` on port 0, without waiting for anything (`port` stays 0). */
  static spawn(dir: string, args: string[] = [], opts: RunOptions = {}): Instance {
    const proc = Bun.spawn(["./switchboard", ...args, "--port", "0", "--host", "127.0.0.1"], {
      cwd: dir,
      env: envFor(opts),
      stdout: "ignore",
      stderr: "pipe",
    });
    return new Instance(dir, proc);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  private async readLines(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      this.stderr += text;
      partial += text;
      let nl: number;
      while ((nl = partial.indexOf("\n")) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        this.onLine(line);
      }
    }
    if (partial) this.onLine(partial);
    // The process is gone: nothing else will come.
    for (const w of this.waiters) w.resolve(undefined as never);
    this.waiters = [];
  }

  private onLine(line: string): void {
    let parsed: LogLine;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      parsed = { event: "(not json)", level: "?", time: "", text: line };
    }
    this.lines.push(parsed);
    this.waiters = this.waiters.filter((w) => {
      if (w.event !== parsed.event) return true;
      w.resolve(parsed);
      return false;
    });
  }

  /** The first log line with this event (already logged or still to come); rejects if the process ends first. */
  async waitFor(event: string): Promise<LogLine> {
    const seen = this.lines.find((l) => l.event === event);
    if (seen) return seen;
    if (this.exitCode !== null) throw new Error(`exited ${this.exitCode} before logging ${event}:\n${this.stderr}`);
    const line = await new Promise<LogLine>((resolve) => this.waiters.push({ event, resolve }));
    if (!line) throw new Error(`process ended before logging ${event}:\n${this.stderr}`);
    return line;
  }

  signal(sig: "SIGTERM" | "SIGINT" | "SIGHUP"): void {
    this.proc.kill(sig);
  }

  /** SIGTERM and wait for the exit code (for cleanup). */
  async stop(): Promise<number> {
    if (this.exitCode === null) this.signal("SIGTERM");
    return this.exited;
  }
}

/**
 * The hooks of a suite that runs the binary: built once before, every instance and
 * socket it started stopped after each test, temporary folders removed at the end.
 */
export function binarySuite() {
  const running: Instance[] = [];
  const sockets: TestSocket[] = [];
  beforeAll(() => {
    ensureBinary();
  });
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.ws.close();
    await Promise.all(running.splice(0).map((i) => i.stop()));
  });
  afterAll(cleanup);
  return {
    /** Starts the binary in `dir` (a fresh empty folder with it by default). */
    async start(dir: string = emptyFolderWithBinary(), args: string[] = []): Promise<Instance> {
      const inst = await Instance.start(dir, args);
      running.push(inst);
      return inst;
    },
    async connect(inst: Instance): Promise<TestSocket> {
      const s = await TestSocket.open(inst.wsUrl);
      sockets.push(s);
      return s;
    },
  };
}
