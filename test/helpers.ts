/**
 * Test scaffolding: a fresh migrated in-memory database per test (deserialized from
 * one migrated image), a real Switchboard on port 0, and a raw WebSocket client that
 * matches replies by ref.
 */
import type { Clock } from "../src/clock.ts";
import { migratedImage, openStoreFromImage, type Store } from "../src/db/open.ts";
import type { Switchboard } from "../src/server.ts";
import { startTestServer, type TestServerOptions } from "../src/testing.ts";

let image: Uint8Array | undefined;

/** A fresh, migrated, private in-memory database. */
export function freshStore(): Store {
  image ??= migratedImage();
  return openStoreFromImage(image);
}

/** A clock tests can move. */
export class TestClock implements Clock {
  constructor(public time = Date.UTC(2026, 10, 28, 12, 0, 0)) {}
  now(): number {
    return this.time;
  }
  advance(ms: number): void {
    this.time += ms;
  }
}

/**
 * An argon2 stand-in for `createArgon2Hasher({ argon2 })`: each hash or verify waits
 * until the test calls `finishNext` (oldest first); `started` lists those that ran, and
 * `started.length` waits are awaited with `untilStarted(n)`. Every verify succeeds.
 */
export function manualArgon2() {
  const started: string[] = [];
  const finish: Array<() => void> = [];
  let onStart: (() => void) | null = null;
  const run = <T>(label: string, value: T) =>
    new Promise<T>((resolve) => {
      started.push(label);
      finish.push(() => resolve(value));
      onStart?.();
    });
  return {
    started,
    finishNext(): void {
      const next = finish.shift();
      if (!next) throw new Error("no hash is running");
      next();
    },
    async untilStarted(n: number): Promise<void> {
      while (started.length < n) await new Promise<void>((resolve) => (onStart = resolve));
      onStart = null;
    },
    argon2: {
      hash: (password: string) => run(`hash ${password}`, `digest of ${password}`),
      verify: (_digest: string, password: string) => run(`verify ${password}`, true),
    },
  };
}

export interface TestApp {
  url: string;
  wsUrl: string;
  port: number;
  store: Store;
  app: Switchboard;
  /** A raw protocol client (closed by `stop`). */
  connect(opts?: { headers?: Record<string, string> }): Promise<TestSocket>;
  stop(): Promise<void>;
}

/** The real server of `switchboard/testing`, driven by raw sockets instead of the SDK. */
export async function startApp(opts: TestServerOptions = {}): Promise<TestApp> {
  const server = await startTestServer(opts);
  const sockets: TestSocket[] = [];
  return {
    url: server.url,
    wsUrl: server.wsUrl,
    port: server.port,
    store: server.store,
    app: server.app,
    async connect(o = {}) {
      const s = await TestSocket.open(server.wsUrl, o.headers);
      sockets.push(s);
      return s;
    },
    async stop() {
      for (const s of sockets) s.ws.close();
      await server.stop();
    },
  };
}

export type Frame = Record<string, unknown> & { type: string };

/**
 * A raw protocol client: `request` sends a frame with a fresh ref and resolves with
 * the reply bearing that ref; events and unmatched frames queue for `next`.
 */
export class TestSocket {
  private refs = 0;
  private readonly waiting = new Map<string | number, (f: Frame) => void>();
  private readonly events: Frame[] = [];
  private eventWaiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (e) => {
      const f = JSON.parse(String(e.data)) as Frame;
      this.frames.push(f);
      const ref = f.ref as string | number | undefined;
      if (ref !== undefined && this.waiting.has(ref)) {
        const resolve = this.waiting.get(ref)!;
        this.waiting.delete(ref);
        resolve(f);
        return;
      }
      const i = this.eventWaiters.findIndex((w) => w.match(f));
      if (i >= 0) {
        const [w] = this.eventWaiters.splice(i, 1);
        w!.resolve(f);
      } else {
        this.events.push(f);
      }
    });
    this.closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })));
  }

  static open(url: string, headers?: Record<string, string>): Promise<TestSocket> {
    const ws = new WebSocket(url, headers ? ({ headers } as never) : undefined);
    const s = new TestSocket(ws);
    return new Promise((resolve, reject) => {
      ws.addEventListener("open", () => resolve(s));
      ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)));
    });
  }

  /** Sends `frame` with a new ref (unless it has one) and resolves with its reply. */
  request(frame: Record<string, unknown>): Promise<Frame> {
    const ref = (frame.ref as string | number | undefined) ?? `r${++this.refs}`;
    const reply = new Promise<Frame>((resolve) => this.waiting.set(ref, resolve));
    this.ws.send(JSON.stringify({ ...frame, ref }));
    return reply;
  }

  /** Sends raw text (or an object as JSON) without a ref. */
  sendRaw(data: string | Record<string, unknown> | Uint8Array<ArrayBuffer>): void {
    this.ws.send(typeof data === "string" || data instanceof Uint8Array ? data : JSON.stringify(data));
  }

  /** The next unmatched frame satisfying `match` (already received or still to come). */
  next(match: (f: Frame) => boolean = () => true, timeoutMs = 5000): Promise<Frame> {
    const i = this.events.findIndex(match);
    if (i >= 0) return Promise.resolve(this.events.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("timed out waiting for a frame")), timeoutMs);
      this.eventWaiters.push({
        match,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }

  /** Collects `n` message events of `room`, in arrival order. */
  async messages(room: string, n: number, timeoutMs = 5000): Promise<Frame[]> {
    const out: Frame[] = [];
    while (out.length < n) {
      const f = await this.next((f) => f.type === "message" && f.room === room, timeoutMs).catch(() => {
        const last = out.at(-1)?.seq;
        throw new Error(`timed out after ${out.length} of ${n} messages in ${room} (last seq ${last}; frames ${this.frames.length})`);
      });
      out.push(f);
    }
    return out;
  }

  /** Frames received that no request or `next` claimed. */
  get unclaimed(): Frame[] {
    return this.events;
  }

  close(code?: number): Promise<{ code: number; reason: string }> {
    this.ws.close(code);
    return this.closed;
  }
}

let userCounter = 0;
/** A unique valid username. */
export function uname(prefix = "user"): string {
  return `${prefix}${++userCounter}_${Math.random().toString(36).slice(2, 6)}`;
}

/** Connects and signs up a new user; resolves with the socket, name and token. */
export async function signedIn(t: TestApp, name = uname()): Promise<{ s: TestSocket; name: string; token: string }> {
  const s = await t.connect();
  const r = await s.request({ type: "signup", username: name, password: "correct horse battery" });
  if (r.type !== "ok") throw new Error(`signup failed: ${JSON.stringify(r)}`);
  return { s, name, token: r.token as string };
}
