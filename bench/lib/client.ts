/**
 * A load-generator process: `bun bench/lib/client.ts`, its WorkerSpec as one JSON line on stdin.
 * Opens its connections (signing in and joining as asked), prints {"ready":true},
 * waits for "go" on stdin, runs for `durationMs`, prints {"result":...} and exits.
 * Idle mode holds its connections until "stop" instead.
 *
 * The hot paths do not parse frames they only count: the frame's type is read from
 * its first bytes (`{"type":"m...`), which every server under test writes first, by
 * a minimal client of our own (fast-ws.ts) that builds no string or event per frame.
 */
import { io as sioConnect, type Socket as SioSocket } from "socket.io-client";
import { FastWs } from "./fast-ws.ts";
import { lines, type WorkerResult, type WorkerSpec } from "./proc.ts";
import { Reservoir } from "./stats.ts";

const stdin = lines(Bun.stdin.stream() as ReadableStream<Uint8Array>);
// The spec comes as the first line on stdin: 5,000 tokens do not fit in argv.
const first = await stdin.next();
if (first.done) process.exit(0);
const spec = JSON.parse(first.value) as WorkerSpec;

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + "\n");
}

/** Reads stdin lines up to `word`. (next(), not for-await: leaving a for-await loop would close the stream.) */
async function waitFor(word: string): Promise<void> {
  for (;;) {
    const r = await stdin.next();
    if (r.done) process.exit(0); // parent went away
    if (r.value.trim() === word) return;
  }
}

const result: WorkerResult = { acks: 0, deliveries: 0, errors: 0, closed: 0, lat: [], elapsedMs: 0 };
const lat = new Reservoir(50_000);
const deliveryLat = new Reservoir(50_000);
let running = false;
let setupDone = false;

function noteError(frame: string): void {
  result.errors++;
  result.firstError ??= frame.slice(0, 300);
}

const M = "m".charCodeAt(0);
const O = "o".charCodeAt(0);
const E = "e".charCodeAt(0);

/** A connection of the "ws" transport, with a one-reply-at-a-time helper for setup. */
interface WsConn {
  ws: FastWs;
  /** Setup: resolves with the next reply (ok or error) frame. */
  waiting: ((type: number, text: string) => void) | null;
  onFrame: (type: number, text: string | null) => void;
  start?: () => void;
}

const target = new URL(spec.url);

async function openWs(): Promise<WsConn> {
  const conn: WsConn = { ws: null as unknown as FastWs, waiting: null, onFrame: () => {} };
  conn.ws = await FastWs.connect(target.hostname, Number(target.port), target.pathname, {
    frame(type, text) {
      if (conn.waiting && (type === O || type === E)) {
        const w = conn.waiting;
        conn.waiting = null;
        w(type, text ?? "");
        return;
      }
      conn.onFrame(type, text);
    },
    close() {
      if (setupDone) result.closed++;
    },
  });
  return conn;
}

function ask(conn: WsConn, frame: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to ${frame.slice(0, 80)}`)), 20_000);
    conn.waiting = (type, reply) => {
      clearTimeout(timer);
      if (type === E) reject(new Error(`setup refused: ${reply}`));
      else resolve(reply);
    };
    conn.ws.send(frame);
  });
}

async function setupWs(i: number): Promise<WsConn> {
  const c = spec.conns[i]!;
  const conn = await openWs();
  if (c.token) await ask(conn, JSON.stringify({ type: "auth", ref: "a", token: c.token }));
  if (c.join) await ask(conn, JSON.stringify({ type: "join", ref: "j", room: c.join }));
  conn.ws.wantText = false;
  return conn;
}

async function setupSio(i: number): Promise<SioSocket> {
  const c = spec.conns[i]!;
  const socket = sioConnect(spec.url, { transports: ["websocket"], forceNew: true, reconnection: false });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("connect_error", (e) => reject(e));
  });
  socket.on("disconnect", () => {
    if (setupDone) result.closed++;
  });
  if (c.join) await socket.timeout(20_000).emitWithAck("join", c.join);
  return socket;
}

/** Opens every connection, `connectConcurrency` at a time. */
async function openAll<T>(open: (i: number) => Promise<T>): Promise<T[]> {
  const conns: T[] = new Array(spec.conns.length);
  let next = 0;
  const lanes = Math.min(spec.connectConcurrency ?? 64, spec.conns.length);
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < spec.conns.length) {
        const i = next++;
        conns[i] = await open(i);
      }
    }),
  );
  return conns;
}

function rpcFrame(ref: number): string {
  switch (spec.rpc) {
    case "history": {
      const max = spec.historyMaxSeq ?? 1000;
      const before = 51 + Math.floor(Math.random() * Math.max(1, max - 50));
      return `{"type":"history","ref":${ref},"room":"${spec.room}","before":${before},"limit":50}`;
    }
    case "login":
      return JSON.stringify({ type: "login", ref, username: spec.username, password: spec.password });
    default:
      return `{"type":"ping","ref":${ref}}`;
  }
}

/**
 * Send-to-delivery latency at the room's only sender (`soleSender`): each message event
 * it receives is its own next one. A refused send has no event, and which one it was is
 * not known here, so a refusal ends the measuring for that connection.
 */
function ownDeliveries(sender: boolean) {
  const on = sender && spec.soleSender === true;
  let lost = false;
  const pending: number[] = [];
  return {
    sent(): void {
      if (on) pending.push(performance.now());
    },
    delivered(): void {
      const at = on ? pending.shift() : undefined;
      if (running && !lost && at !== undefined) deliveryLat.add(performance.now() - at);
    },
    lost(): void {
      lost = true;
    },
  };
}

function armWs(conns: WsConn[]): void {
  let ref = 0;
  const body = JSON.stringify(spec.body ?? "hello");
  for (let i = 0; i < conns.length; i++) {
    const conn = conns[i]!;
    const c = spec.conns[i]!;
    if (spec.mode === "chat") {
      const sentAt: number[] = [];
      const own = ownDeliveries(c.sender === true);
      const sendOne = () => {
        sentAt.push(performance.now());
        own.sent();
        conn.ws.send(`{"type":"send","ref":${++ref},"room":"${spec.room}","body":${body}}`);
      };
      conn.onFrame = (t, text) => {
        if (t === M) {
          own.delivered();
          if (running) result.deliveries++;
        } else if (t === O) {
          const at = sentAt.shift();
          if (!running) return;
          result.acks++;
          if (at !== undefined) lat.add(performance.now() - at);
          if (!spec.rate) sendOne();
        } else if (t === E) {
          sentAt.shift();
          own.lost();
          noteError(text ?? "error");
          if (running && !spec.rate) sendOne();
        }
      };
      if (c.sender) {
        conn.start = spec.rate
          ? () => {
              // Open loop: `rate` sends a second in ticks of 10 ms, whatever the acks do,
              // while fewer than `window` are outstanding (so a slow server is not buried).
              const startedAt = performance.now();
              let sent = 0;
              const timer = setInterval(() => {
                if (!running) return clearInterval(timer);
                const due = Math.floor(((performance.now() - startedAt) * spec.rate!) / 1000);
                while (sent < due && sentAt.length < (spec.window ?? 1)) {
                  sendOne();
                  sent++;
                }
                sent = due;
              }, 10);
            }
          : () => {
              for (let k = 0; k < (spec.window ?? 1); k++) sendOne();
            };
      }
    } else if (spec.mode === "rpc") {
      let sentAt = 0;
      const next = () => {
        sentAt = performance.now();
        conn.ws.send(rpcFrame(++ref));
      };
      conn.onFrame = (t, text) => {
        if (!running) return;
        if (t === E) noteError(text ?? "error");
        else {
          result.acks++;
          lat.add(performance.now() - sentAt);
        }
        next();
      };
      conn.start = next;
    }
  }
}

function armSio(sockets: SioSocket[]): void {
  const body = spec.body ?? "hello";
  for (let i = 0; i < sockets.length; i++) {
    const s = sockets[i]!;
    const c = spec.conns[i]!;
    if (spec.mode === "chat") {
      const own = ownDeliveries(c.sender === true);
      s.on("message", () => {
        own.delivered();
        if (running) result.deliveries++;
      });
      if (c.sender) {
        const sendOne = () => {
          const at = performance.now();
          own.sent();
          s.emit("send", { room: spec.room, body }, () => {
            if (!running) return;
            result.acks++;
            lat.add(performance.now() - at);
            sendOne();
          });
        };
        (s as SioSocket & { start?: () => void }).start = () => {
          for (let k = 0; k < (spec.window ?? 1); k++) sendOne();
        };
      }
    } else if (spec.mode === "rpc") {
      let ref = 0;
      const next = () => {
        const at = performance.now();
        s.emit("echo", ++ref, () => {
          if (!running) return;
          result.acks++;
          lat.add(performance.now() - at);
          next();
        });
      };
      (s as SioSocket & { start?: () => void }).start = next;
    }
  }
}

async function main(): Promise<void> {
  let conns: Array<{ start?: () => void }>;
  let closeAll: () => void;
  if (spec.transport === "sio") {
    const sockets = await openAll(setupSio);
    armSio(sockets);
    conns = sockets as Array<SioSocket & { start?: () => void }>;
    closeAll = () => sockets.forEach((s) => s.disconnect());
  } else {
    const ws = await openAll(setupWs);
    armWs(ws);
    conns = ws;
    closeAll = () => ws.forEach((c) => c.ws.close());
  }
  setupDone = true;
  out({ ready: true, conns: conns.length });
  await waitFor("go");
  if (spec.mode === "idle") {
    await waitFor("stop");
    setupDone = false;
    closeAll();
    out({ result });
    process.exit(0);
  }
  const t0 = performance.now();
  running = true;
  for (const c of conns) c.start?.();
  await Bun.sleep(spec.durationMs);
  running = false;
  result.elapsedMs = performance.now() - t0;
  result.lat = lat.values.map((v) => Math.round(v * 1000) / 1000);
  if (deliveryLat.values.length) result.deliveryLat = deliveryLat.values.map((v) => Math.round(v * 1000) / 1000);
  setupDone = false;
  out({ result });
  closeAll();
  setTimeout(() => process.exit(0), 50);
}

main().catch((e: unknown) => {
  out({ fatal: e instanceof Error ? e.message : String(e) });
  process.exit(1);
});
