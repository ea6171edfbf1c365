/** Preparing a Switchboard for a measurement: accounts, and history to read. */

/** A tiny request/reply client for setup work (not for measuring). */
export class SetupClient {
  private nextRef = 0;
  private readonly waiting = new Map<number, (frame: Record<string, unknown>) => void>();
  private constructor(private readonly ws: WebSocket) {
    ws.onmessage = (ev) => {
      const frame = JSON.parse(String(ev.data)) as Record<string, unknown>;
      if (typeof frame.ref !== "number") return; // events
      this.waiting.get(frame.ref)?.(frame);
      this.waiting.delete(frame.ref);
    };
  }

  static open(url: string): Promise<SetupClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(new SetupClient(ws));
      ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
  }

  /** Sends a request and resolves with its ok reply; an error reply rejects. */
  request(type: string, fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const ref = ++this.nextRef;
    return new Promise((resolve, reject) => {
      this.waiting.set(ref, (frame) => (frame.type === "ok" ? resolve(frame) : reject(new Error(`${type}: ${JSON.stringify(frame)}`))));
      this.ws.send(JSON.stringify({ type, ref, ...fields }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

export const BENCH_PASSWORD = "correct horse battery staple";

/** Signs up `n` users (bench0, bench1, ...) and returns their session tokens. */
export async function signupUsers(url: string, n: number, prefix = "bench"): Promise<string[]> {
  const tokens: string[] = new Array(n);
  // A few connections at a time, so that several hashes run in parallel.
  const lanes = 4;
  let next = 0;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      const c = await SetupClient.open(url);
      while (next < n) {
        const i = next++;
        const reply = await c.request("signup", { username: `${prefix}${i}`, password: BENCH_PASSWORD });
        tokens[i] = String(reply.token);
      }
      c.close();
    }),
  );
  return tokens;
}

/** Writes `count` messages into `room` through the server's own send path. */
export async function fillRoom(url: string, token: string, room: string, count: number): Promise<void> {
  const c = await SetupClient.open(url);
  await c.request("auth", { token });
  await c.request("join", { room });
  const window = 256;
  let sent = 0;
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (sent < count) {
        sent++;
        await c.request("send", { room, body: `history message ${sent} ${"x".repeat(40)}` });
      }
    }),
  );
  c.close();
}
