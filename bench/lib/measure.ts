/** The measurements the scenarios share, each one timed window of load from worker processes. */
import { runLoad, split, type ConnSpec, type ServerProc, type WorkerResult, type WorkerSpec } from "./proc.ts";
import { JIT_FIGURE, deliveryFigures, latencyFigures, type BenchOptions, type Figures } from "./scenario.ts";

function total(rs: WorkerResult[], key: "acks" | "deliveries" | "errors" | "closed"): number {
  return rs.reduce((n, r) => n + r[key], 0);
}

function check(what: string, rs: WorkerResult[], opts: BenchOptions): void {
  const errors = total(rs, "errors");
  const closed = total(rs, "closed");
  if (errors > 0 || closed > 0) {
    const first = rs.find((r) => r.firstError)?.firstError ?? "";
    opts.log(`  warning: ${what}: ${errors} error replies, ${closed} connections closed ${first}`);
  }
}

function rates(rs: WorkerResult[], serverCpuMs: number, serverJitMs: number, server: ServerProc | undefined): Figures {
  const secs = Math.max(...rs.map((r) => r.elapsedMs)) / 1000;
  const acks = total(rs, "acks");
  return {
    "msgs/s": acks / secs,
    "deliveries/s": total(rs, "deliveries") / secs,
    ...latencyFigures(rs.flatMap((r) => r.lat)),
    ...(rs.some((r) => r.deliveryLat?.length) ? deliveryFigures(rs.flatMap((r) => r.deliveryLat ?? [])) : {}),
    ...(server
      ? { "cpu us/msg": (serverCpuMs * 1000) / acks, "cpu us/delivery": (serverCpuMs * 1000) / total(rs, "deliveries"), "busy %": busy(serverCpuMs, secs), [JIT_FIGURE]: busy(serverJitMs, secs) }
      : {}),
  };
}

/**
 * The server's CPU time as a share of the window (all its threads: above 100% is
 * possible). Near 100%, the server was the limit; well below it, the load generators
 * or the server's waiting (a commit's fsync) were.
 */
function busy(serverCpuMs: number, secs: number): number {
  return serverCpuMs / (secs * 10);
}

export interface RoomLoad {
  url: string;
  /** The server under test, to read its CPU time. */
  server?: ServerProc;
  transport: "ws" | "sio";
  /** Session tokens to sign in with, cycled over the connections (Switchboard only). */
  tokens?: string[];
  room: string;
  members: number;
  senders: number;
  /** Sends each sender keeps outstanding. */
  window: number;
  body: string;
  workers: number;
  /** Sends per second per sender, open loop; unset, each sender refills its window from acks. */
  rate?: number;
}

/**
 * `members` connections join `room`; `senders` of them send as fast as their window
 * allows. Figures: msgs/s acknowledged, deliveries/s received by all members,
 * p50/p99 send-to-ack latency in ms, and with one sender p50/p99 send-to-delivery (its
 * own message event).
 */
export async function measureRoom(load: RoomLoad, opts: BenchOptions): Promise<Figures> {
  const conns: ConnSpec[] = Array.from({ length: load.members }, (_, i) => ({
    ...(load.tokens ? { token: load.tokens[i % load.tokens.length]! } : {}),
    join: load.room,
    // Spread the senders evenly over the members (and so over the workers).
    sender: i % Math.ceil(load.members / load.senders) === 0 && Math.floor(i / Math.ceil(load.members / load.senders)) < load.senders,
  }));
  const specs: WorkerSpec[] = split(conns, load.workers).map((part) => ({
    transport: load.transport,
    url: load.url,
    mode: "chat",
    conns: part,
    durationMs: opts.durationMs,
    room: load.room,
    window: load.window,
    body: load.body,
    ...(load.rate ? { rate: load.rate } : {}),
    ...(load.senders === 1 ? { soleSender: true } : {}),
  }));
  const { results: rs, serverCpuMs, serverJitMs } = await runLoad(specs, load.server);
  check(`room load on ${load.url}`, rs, opts);
  return rates(rs, serverCpuMs, serverJitMs, load.server);
}

export interface RpcLoad {
  url: string;
  server?: ServerProc;
  transport: "ws" | "sio";
  token?: string;
  rpc: "ping" | "history" | "login";
  connections: number;
  workers: number;
  room?: string;
  historyMaxSeq?: number;
  username?: string;
  password?: string;
}

/** Closed loop: each connection keeps one request outstanding. Figures: req/s, p50, p99 (ms). */
export async function measureRpc(load: RpcLoad, opts: BenchOptions): Promise<Figures> {
  const conns: ConnSpec[] = Array.from({ length: load.connections }, () => (load.token ? { token: load.token } : {}));
  const specs: WorkerSpec[] = split(conns, load.workers).map((part) => ({
    transport: load.transport,
    url: load.url,
    mode: "rpc",
    rpc: load.rpc,
    conns: part,
    durationMs: opts.durationMs,
    ...(load.room ? { room: load.room } : {}),
    ...(load.historyMaxSeq ? { historyMaxSeq: load.historyMaxSeq } : {}),
    ...(load.username ? { username: load.username, password: load.password ?? "" } : {}),
  }));
  const { results: rs, serverCpuMs, serverJitMs } = await runLoad(specs, load.server);
  check(`${load.rpc} load on ${load.url}`, rs, opts);
  const secs = Math.max(...rs.map((r) => r.elapsedMs)) / 1000;
  const acks = total(rs, "acks");
  return {
    "req/s": acks / secs,
    ...latencyFigures(rs.flatMap((r) => r.lat)),
    ...(load.server ? { "cpu us/req": (serverCpuMs * 1000) / acks, "busy %": busy(serverCpuMs, secs), [JIT_FIGURE]: busy(serverJitMs, secs) } : {}),
  };
}
