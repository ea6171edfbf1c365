/**
 * A WebSocket relay between SDK clients and a Switchboard, for faults a real server
 * cannot be asked for on cue: a cut connection (the client sees 1006), a given close
 * code, frames lost in either direction.
 */
import type { ServerWebSocket } from "bun";

interface Link {
  upstream: WebSocket | null;
  queue: string[];
}

/** Close codes a server may send in a close frame; others (1005, 1006, 1015) cannot be sent. */
const sendable = (code: number) => (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);

export interface Proxy {
  wsUrl: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Refuse new connections (503 before the upgrade), as a server that is down. */
  refuse: boolean;
  /** Connection attempts refused while `refuse` was set. */
  readonly refused: number;
  /** Drop frames from the server to the clients (replies and events are lost). */
  dropReplies: boolean;
  /** Drop frames from the clients to the server (requests are lost). */
  dropRequests: boolean;
  /** Cuts every connection without a close frame: the clients see 1006. */
  cut(): void;
  /** Closes every client connection with `code`, as the server would. */
  closeAll(code: number, reason?: string): void;
  /** Resolves once `n` upgrades in total have reached the proxy. */
  waitForConnections(n: number): Promise<void>;
  stop(): Promise<void>;
}

export function startProxy(target: string): Proxy {
  const clients = new Set<ServerWebSocket<Link>>();
  let connections = 0;
  let refused = 0;
  let waiters: Array<{ n: number; resolve: () => void }> = [];
  const server = Bun.serve<Link>({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req, srv) {
      if (proxy.refuse) {
        refused++;
        return new Response("down", { status: 503 });
      }
      connections++;
      waiters = waiters.filter((w) => (connections >= w.n ? (w.resolve(), false) : true));
      if (srv.upgrade(req, { data: { upstream: null, queue: [] } })) return undefined;
      return new Response("upgrade required", { status: 426 });
    },
    websocket: {
      open(ws) {
        clients.add(ws);
        const up = new WebSocket(target);
        ws.data.upstream = up;
        up.onopen = () => {
          for (const f of ws.data.queue) up.send(f);
          ws.data.queue = [];
        };
        up.onmessage = (e) => {
          if (!proxy.dropReplies && ws.readyState === 1) ws.send(String(e.data));
        };
        up.onclose = (e) => {
          if (ws.readyState !== 1) return;
          if (sendable(e.code)) ws.close(e.code, e.reason);
          else ws.terminate();
        };
      },
      message(ws, m) {
        if (proxy.dropRequests) return;
        const up = ws.data.upstream;
        if (up && up.readyState === WebSocket.OPEN) up.send(String(m));
        else ws.data.queue.push(String(m));
      },
      close(ws) {
        clients.delete(ws);
        ws.data.upstream?.close();
      },
    },
  });
  const proxy: Proxy = {
    wsUrl: `ws://127.0.0.1:${server.port}/ws`,
    get connections() {
      return connections;
    },
    get refused() {
      return refused;
    },
    refuse: false,
    dropReplies: false,
    dropRequests: false,
    cut() {
      for (const ws of clients) ws.terminate();
    },
    closeAll(code, reason = "") {
      for (const ws of clients) ws.close(code, reason);
    },
    waitForConnections(n) {
      if (connections >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async stop() {
      await server.stop(true);
    },
  };
  return proxy;
}
