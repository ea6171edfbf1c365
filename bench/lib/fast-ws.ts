/**
 * A minimal WebSocket client over Bun.connect for load generation: it writes masked
 * text frames and, for each frame it receives, reports only the byte at position
 * `TYPE_AT` of the payload (`{"type":"m...` -> "m") unless the text is asked for. That
 * keeps the load generator cheap enough that the server, not the client, is measured:
 * the WebSocket class builds a string and an event for every frame, which at 50
 * deliveries per message costs more than the server's publish.
 */
import type { Socket } from "bun";

/** Position of the first letter of the type in `{"type":"...`. */
export const TYPE_AT = 9;

export interface FrameSink {
  /** A text frame: `type` is the payload byte at TYPE_AT (0 if shorter); `text` when `wantText()`, or for errors. */
  frame(type: number, text: string | null): void;
  close(): void;
}

const E = "e".charCodeAt(0);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface State {
  ws: FastWs;
}

export class FastWs {
  private pending: Uint8Array[] = [];
  private rest: Uint8Array | null = null;
  private upgraded = false;
  closed = false;

  private constructor(
    private readonly socket: Socket<State>,
    public sink: FrameSink,
    public wantText: boolean,
  ) {}

  /** Opens `ws://host:port/path` and resolves once the upgrade is answered 101. */
  static connect(host: string, port: number, path: string, sink: FrameSink): Promise<FastWs> {
    return new Promise((resolve, reject) => {
      let ws: FastWs | null = null;
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        reject(e);
      };
      Bun.connect<State>({
        hostname: host,
        port,
        socket: {
          open(socket) {
            ws = new FastWs(socket, sink, true);
            socket.data = { ws };
            socket.write(
              `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
            );
          },
          data(socket, chunk) {
            const w = socket.data.ws;
            if (w.upgraded) {
              w.onData(chunk);
              return;
            }
            const bytes = w.rest ? concat(w.rest, chunk) : chunk;
            const end = indexOfHeaderEnd(bytes);
            if (end < 0) {
              w.rest = bytes;
              return;
            }
            w.rest = null;
            const head = decoder.decode(bytes.subarray(0, end));
            if (!head.startsWith("HTTP/1.1 101")) {
              fail(new Error(`upgrade refused: ${head.split("\r\n")[0]}`));
              socket.end();
              return;
            }
            w.upgraded = true;
            settled = true;
            resolve(w);
            if (bytes.length > end + 4) w.onData(bytes.subarray(end + 4));
          },
          drain(socket) {
            socket.data.ws.flush();
          },
          close(socket) {
            const w = socket.data?.ws;
            if (w && !w.closed) {
              w.closed = true;
              w.sink.close();
            }
            fail(new Error("connection closed before the upgrade"));
          },
          error(_socket, err) {
            fail(err);
          },
          connectError(_socket, err) {
            fail(err);
          },
        },
      }).catch((e: unknown) => fail(e instanceof Error ? e : new Error(String(e))));
    });
  }

  /** Sends one text frame (masked with a zero key, as RFC 6455 allows). */
  send(text: string): void {
    const payload = encoder.encode(text);
    const n = payload.length;
    const headLen = n < 126 ? 6 : n < 65536 ? 8 : 14;
    const frame = new Uint8Array(headLen + n);
    frame[0] = 0x81;
    if (n < 126) {
      frame[1] = 0x80 | n;
    } else if (n < 65536) {
      frame[1] = 0x80 | 126;
      frame[2] = n >> 8;
      frame[3] = n & 0xff;
    } else {
      frame[1] = 0x80 | 127;
      new DataView(frame.buffer).setBigUint64(2, BigInt(n));
    }
    // mask key: four zero bytes, already there
    frame.set(payload, headLen);
    this.write(frame);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // close frame, code 1000, masked with a zero key
    this.write(Uint8Array.of(0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8));
    this.socket.end();
  }

  private write(bytes: Uint8Array): void {
    if (this.pending.length > 0) {
      this.pending.push(bytes);
      return;
    }
    const n = this.socket.write(bytes);
    if (n < bytes.length) this.pending.push(bytes.subarray(Math.max(0, n)));
  }

  private flush(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      const n = this.socket.write(head);
      if (n < head.length) {
        this.pending[0] = head.subarray(Math.max(0, n));
        return;
      }
      this.pending.shift();
    }
  }

  private onData(chunk: Uint8Array): void {
    const buf = this.rest ? concat(this.rest, chunk) : chunk;
    this.rest = null;
    let at = 0;
    while (buf.length - at >= 2) {
      const b0 = buf[at]!;
      const b1 = buf[at + 1]!;
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) {
        if (buf.length - at < 4) break;
        len = (buf[at + 2]! << 8) | buf[at + 3]!;
        head = 4;
      } else if (len === 127) {
        if (buf.length - at < 10) break;
        len = Number(new DataView(buf.buffer, buf.byteOffset + at + 2, 8).getBigUint64(0));
        head = 10;
      }
      if (b1 & 0x80) head += 4; // servers do not mask, but be safe
      if (buf.length - at < head + len) break;
      const start = at + head;
      const opcode = b0 & 0x0f;
      if (opcode === 1 || opcode === 0) {
        const type = len > TYPE_AT ? buf[start + TYPE_AT]! : 0;
        const text = this.wantText || type === E ? decoder.decode(buf.subarray(start, start + len)) : null;
        this.sink.frame(type, text);
      } else if (opcode === 8) {
        if (!this.closed) {
          this.closed = true;
          this.sink.close();
        }
        this.socket.end();
        return;
      } else if (opcode === 9) {
        // pong with the same payload, masked with a zero key
        const pong = new Uint8Array(6 + len);
        pong[0] = 0x8a;
        pong[1] = 0x80 | len;
        pong.set(buf.subarray(start, start + len), 6);
        this.write(pong);
      }
      at = start + len;
    }
    if (at < buf.length) this.rest = buf.slice(at);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function indexOfHeaderEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}
