/**
 * A WebSocket client that writes frames by hand over a TCP socket (node:net), for
 * tests and benches that must send what a well-behaved client library never would:
 * invalid UTF-8, reserved opcodes and RSV bits, unmasked or fragmented control
 * frames, lengths past the limit. It also parses what the server sends back, so the
 * close code of a refusal can be read, and it can stop reading (a slow consumer).
 */
import { connect, type Socket } from "node:net";
import { createHash, randomBytes } from "node:crypto";

export const Opcode = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

export interface FrameSpec {
  opcode: number;
  payload?: Uint8Array | string;
  /** FIN bit; default true. */
  fin?: boolean;
  /** RSV1..RSV3 as a 3-bit number (4 = RSV1); default 0. */
  rsv?: number;
  /** Mask the payload as RFC 6455 requires of clients; default true. */
  mask?: boolean;
}

/** One frame's bytes, exactly as `spec` says (no check that it is legal). */
export function encodeFrame(spec: FrameSpec): Buffer {
  const payload = typeof spec.payload === "string" ? Buffer.from(spec.payload, "utf8") : Buffer.from(spec.payload ?? new Uint8Array());
  const fin = spec.fin ?? true;
  const mask = spec.mask ?? true;
  const len = payload.length;
  const head: number[] = [(fin ? 0x80 : 0) | (((spec.rsv ?? 0) & 7) << 4) | (spec.opcode & 0x0f)];
  const maskBit = mask ? 0x80 : 0;
  if (len < 126) head.push(maskBit | len);
  else if (len < 65536) head.push(maskBit | 126, len >> 8, len & 0xff);
  else {
    head.push(maskBit | 127, 0, 0, 0, 0);
    head.push((len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const body = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([Buffer.from(head), key, body]);
}

export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** How the connection ended: the server's close frame (code and reason), or a bare TCP close. */
export interface Ending {
  /** The close code in the server's close frame; null when it sent none (or an empty one). */
  code: number | null;
  reason: string;
  /** A close frame arrived (as opposed to the TCP connection just ending). */
  closeFrame: boolean;
}

/** A hand-driven WebSocket connection. */
export class RawWs {
  readonly frames: ServerFrame[] = [];
  readonly ended: Promise<Ending>;
  private buf: Buffer = Buffer.alloc(0);
  private closeFrame: Ending | null = null;
  private waiters: Array<{ match: (f: ServerFrame) => boolean; resolve: (f: ServerFrame) => void; seen: number }> = [];
  private settle!: (e: Ending) => void;
  /** Bytes received since the handshake. */
  bytesIn = 0;

  private constructor(readonly socket: Socket) {
    this.ended = new Promise((resolve) => (this.settle = resolve));
    socket.on("close", () => this.settle(this.closeFrame ?? { code: null, reason: "", closeFrame: false }));
    socket.on("error", () => {});
  }

  /**
   * Opens a TCP connection to 127.0.0.1:`port` and performs the upgrade handshake,
   * checking `Sec-WebSocket-Accept`. Rejects with the status line if the server refuses.
   */
  static open(port: number, opts: { path?: string; headers?: Record<string, string>; host?: string } = {}): Promise<RawWs> {
    const host = opts.host ?? "127.0.0.1";
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const key = randomBytes(16).toString("base64");
      const expected = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        socket.off("data", onData);
        socket.off("error", reject);
        const text = head.subarray(0, end).toString("latin1");
        const status = text.split("\r\n")[0] ?? "";
        const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(text)?.[1];
        if (!status.startsWith("HTTP/1.1 101") || accept !== expected) {
          socket.destroy();
          reject(new Error(`handshake refused: ${status}`));
          return;
        }
        const ws = new RawWs(socket);
        socket.on("data", (c: Buffer) => ws.onData(c));
        const rest = head.subarray(end + 4);
        if (rest.length > 0) ws.onData(rest);
        resolve(ws);
      };
      socket.on("error", reject);
      socket.on("data", onData);
      socket.once("connect", () => {
        const headers: Record<string, string> = {
          Host: `${host}:${port}`,
          Upgrade: "websocket",
          Connection: "Upgrade",
          "Sec-WebSocket-Key": key,
          "Sec-WebSocket-Version": "13",
          ...opts.headers,
        };
        const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
        socket.write(`GET ${opts.path ?? "/ws"} HTTP/1.1\r\n${lines.join("\r\n")}\r\n\r\n`);
      });
    });
  }

  private onData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (b[1]! & 0x80) off += 4; // servers must not mask, but skip a key if one is there
      if (b.length < off + len) return;
      const frame: ServerFrame = { fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload: Buffer.from(b.subarray(off, off + len)) };
      this.buf = b.subarray(off + len);
      this.frames.push(frame);
      if (frame.opcode === Opcode.close && !this.closeFrame) {
        this.closeFrame = {
          code: frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : null,
          reason: frame.payload.subarray(2).toString("utf8"),
          closeFrame: true,
        };
      }
      for (const w of [...this.waiters]) {
        if (w.match(frame)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(frame);
        }
      }
    }
  }

  /** The server's close frame, once one has arrived (kept even if `frames` is cleared). */
  get closeReceived(): Ending | null {
    return this.closeFrame;
  }

  /** Writes raw bytes (one or more frames, or a piece of one). */
  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Writes one frame built from `spec`. */
  frame(spec: FrameSpec): void {
    this.write(encodeFrame(spec));
  }

  /** Sends one masked text frame. */
  text(data: string | object): void {
    this.frame({ opcode: Opcode.text, payload: typeof data === "string" ? data : JSON.stringify(data) });
  }

  /** The first frame (received already or later) that `match` accepts. */
  next(match: (f: ServerFrame) => boolean, timeoutMs = 5000): Promise<ServerFrame> {
    const found = this.frames.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("timed out waiting for a frame")), timeoutMs);
      this.waiters.push({ match, seen: 0, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  }

  /** The text frames received, parsed as JSON. */
  json(): Array<Record<string, unknown>> {
    return this.frames.filter((f) => f.opcode === Opcode.text).map((f) => JSON.parse(f.payload.toString("utf8")) as Record<string, unknown>);
  }

  /** The next JSON reply whose `ref` is `ref`. */
  async reply(ref: string | number, timeoutMs = 5000): Promise<Record<string, unknown>> {
    const f = await this.next((f) => f.opcode === Opcode.text && (JSON.parse(f.payload.toString("utf8")) as { ref?: unknown }).ref === ref, timeoutMs);
    return JSON.parse(f.payload.toString("utf8")) as Record<string, unknown>;
  }

  /** Resolves with how the connection ended, or rejects after `timeoutMs`. */
  end(timeoutMs = 5000): Promise<Ending> {
    return Promise.race([
      this.ended,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error("connection did not end")), timeoutMs).unref?.()),
    ]);
  }

  /** Stops reading from the socket: the kernel buffers fill and the server sees backpressure. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A Switchboard (`bun src/main.ts`) in a child process, on a fresh database in a temp folder. */
export interface ChildServer {
  port: number;
  pid: number;
  dbPath: string;
  proc: ReturnType<typeof Bun.spawn>;
  /** Resident memory of the server process, in KiB, from /proc. */
  rssKiB(): number;
  /** Open file descriptors of the server process, from /proc. */
  fds(): number;
  stop(): Promise<void>;
}

export async function spawnServer(env: Record<string, string> = {}): Promise<ChildServer> {
  const { mkdtempSync, readdirSync, readFileSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "switchboard-bench-"));
  const dbPath = join(dir, "bench.db");
  const root = new URL("../../", import.meta.url).pathname;
  const proc = Bun.spawn([process.execPath, join(root, "src/main.ts")], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", DB_PATH: dbPath, LOG_LEVEL: "info", ...env },
    stdout: "ignore",
    stderr: "pipe",
  });
  const reader = proc.stderr.getReader();
  let log = "";
  const deadline = Date.now() + 10_000;
  while (!/"event":"listening"/.test(log)) {
    if (Date.now() > deadline) throw new Error(`server did not start: ${log}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited: ${log}`);
    log += new TextDecoder().decode(value);
  }
  // Keep draining stderr so that the child never blocks on a full pipe.
  void (async () => {
    for (;;) {
      const { done } = await reader.read();
      if (done) return;
    }
  })();
  const port = Number(/:(\d+)"/.exec(log.slice(log.indexOf('"listening"')))?.[1]);
  const pid = proc.pid;
  return {
    port,
    pid,
    dbPath,
    proc,
    rssKiB: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN),
    fds: () => readdirSync(`/proc/${pid}/fd`).length,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
