/**
 * Prometheus counters, gauges and a latency histogram, rendered in the text
 * exposition format at `GET /metrics`. Plain objects: no registry library needed
 * for a handful of series.
 */
import { readdirSync, readFileSync } from "node:fs";
import type { CheckpointStats } from "./db/checkpointer.ts";
import { ErrorCode, requestTypes } from "./protocol/index.ts";

const LATENCY_BUCKETS_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500];

export class Metrics {
  connectionsOpened = 0;
  connectionsClosed = 0;
  /** Upgrades refused at MAX_CONNECTIONS. */
  connectionsRefused = 0;
  addressConnectionsRefused = 0;
  userSigninsRefused = 0;
  httpRefused = 0;
  // Every known label value starts at 0, so that rate() and alerts see a series from the start.
  readonly requests = new Map<string, number>([...requestTypes, "invalid"].map((t) => [t, 0]));
  readonly errors = new Map<string, number>(ErrorCode.options.map((c) => [c, 0]));
  readonly closes = new Map<number | "other", number>();
  messagesStored = 0;
  messagesDeduplicated = 0;
  /** Message events that waited for their room's DELIVERY_INTERVAL_MS. */
  messageEventsHeld = 0;
  commits = 0;
  private readonly latencyCounts = new Array<number>(LATENCY_BUCKETS_MS.length).fill(0);
  private latencyCount = 0;
  private latencySumMs = 0;

  request(type: string): void {
    this.requests.set(type, (this.requests.get(type) ?? 0) + 1);
  }
  error(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }
  closed(code: number | "other"): void {
    this.connectionsClosed++;
    this.closes.set(code, (this.closes.get(code) ?? 0) + 1);
  }
  sendLatency(ms: number): void {
    this.latencyCount++;
    this.latencySumMs += ms;
    for (let i = 0; i < LATENCY_BUCKETS_MS.length; i++) {
      if (ms <= LATENCY_BUCKETS_MS[i]!) this.latencyCounts[i]!++;
    }
  }

  render(gauges: { rooms: number; dbBytes: number; roomsLoaded: number; checkpoints: CheckpointStats }): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

    family("switchboard_connections", "gauge", "Open WebSocket connections.");
    out.push(`switchboard_connections ${this.connectionsOpened - this.connectionsClosed}`);
    family("switchboard_connections_opened_total", "counter", "WebSocket connections accepted.");
    out.push(`switchboard_connections_opened_total ${this.connectionsOpened}`);
    family("switchboard_connections_refused_total", "counter", "WebSocket upgrades refused with 503 at MAX_CONNECTIONS.");
    out.push(`switchboard_connections_refused_total ${this.connectionsRefused}`);
    family("switchboard_address_connections_refused_total", "counter", "WebSocket upgrades refused with 429: their client address held MAX_CONNECTIONS_PER_ADDRESS.");
    out.push(`switchboard_address_connections_refused_total ${this.addressConnectionsRefused}`);
    family("switchboard_user_signins_refused_total", "counter", "Sign-ins refused rate_limited: their user had MAX_CONNECTIONS_PER_USER connections signed in.");
    out.push(`switchboard_user_signins_refused_total ${this.userSigninsRefused}`);
    family("switchboard_http_refused_total", "counter", "HTTP requests answered 429: their client address was past HTTP_BURST.");
    out.push(`switchboard_http_refused_total ${this.httpRefused}`);
    family("switchboard_connections_closed_total", "counter", "WebSocket connections closed, by close code.");
    for (const [code, n] of this.closes) out.push(`switchboard_connections_closed_total{code="${code}"} ${n}`);
    family("switchboard_requests_total", "counter", "Requests answered, by type.");
    for (const [type, n] of this.requests) out.push(`switchboard_requests_total{type="${esc(type)}"} ${n}`);
    family("switchboard_errors_total", "counter", "Error replies, by code.");
    for (const [code, n] of this.errors) out.push(`switchboard_errors_total{code="${esc(code)}"} ${n}`);
    family("switchboard_messages_stored_total", "counter", "Messages committed.");
    out.push(`switchboard_messages_stored_total ${this.messagesStored}`);
    family("switchboard_messages_deduplicated_total", "counter", "Sends answered from an earlier send with the same nonce.");
    out.push(`switchboard_messages_deduplicated_total ${this.messagesDeduplicated}`);
    family("switchboard_message_events_held_total", "counter", "Message events that waited for their room's next write (DELIVERY_INTERVAL_MS) instead of going out at once.");
    out.push(`switchboard_message_events_held_total ${this.messageEventsHeld}`);
    family("switchboard_commits_total", "counter", "Database transactions that stored messages (group commits).");
    out.push(`switchboard_commits_total ${this.commits}`);
    // Prometheus' base unit is the second.
    family("switchboard_send_latency_seconds", "histogram", "Time from a send frame's arrival to its ok (committed).");
    LATENCY_BUCKETS_MS.forEach((le, i) => out.push(`switchboard_send_latency_seconds_bucket{le="${le / 1000}"} ${this.latencyCounts[i]}`));
    out.push(`switchboard_send_latency_seconds_bucket{le="+Inf"} ${this.latencyCount}`);
    out.push(`switchboard_send_latency_seconds_sum ${this.latencySumMs / 1000}`);
    out.push(`switchboard_send_latency_seconds_count ${this.latencyCount}`);
    family("switchboard_rooms", "gauge", "Rooms in the database (a room is stored with its first message).");
    out.push(`switchboard_rooms ${gauges.rooms}`);
    family("switchboard_rooms_active", "gauge", "Rooms with at least one member connected.");
    out.push(`switchboard_rooms_active ${gauges.roomsLoaded}`);
    family("switchboard_database_bytes", "gauge", "Size of the database (pages times page size).");
    out.push(`switchboard_database_bytes ${gauges.dbBytes}`);
    family("switchboard_wal_checkpoints_total", "counter", "WAL checkpoints by the checkpointer thread that copied pages back.");
    out.push(`switchboard_wal_checkpoints_total ${gauges.checkpoints.checkpoints}`);
    family("switchboard_wal_checkpointed_frames_total", "counter", "WAL frames the checkpointer thread copied back into the database.");
    out.push(`switchboard_wal_checkpointed_frames_total ${gauges.checkpoints.frames}`);
    family("switchboard_wal_restarts_total", "counter", "Times the checkpointer thread made a WAL that had grown past 64 MiB under writes that never paused start over.");
    out.push(`switchboard_wal_restarts_total ${gauges.checkpoints.restarts}`);
    processMetrics(out, family);
    return out.join("\n") + "\n";
  }
}

/** When this process started, in seconds since the epoch (for `process_start_time_seconds`). */
const startedAt = (Date.now() - performance.now()) / 1000;

/**
 * The process families Prometheus' own clients export, under their usual names, so that
 * the usual dashboards and alerts work: CPU time, resident memory, open descriptors
 * (and their limit), start time. Read from /proc on Linux; a family that cannot be read
 * there is left out rather than reported as 0.
 */
function processMetrics(out: string[], family: (name: string, type: string, help: string) => void): void {
  const cpu = process.cpuUsage();
  family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
  out.push(`process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`);
  family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  out.push(`process_resident_memory_bytes ${process.memoryUsage.rss()}`);
  family("process_start_time_seconds", "gauge", "Start time of the process since the epoch, in seconds.");
  out.push(`process_start_time_seconds ${Math.round(startedAt)}`);
  try {
    const fds = readdirSync("/proc/self/fd").length - 1; // less the one reading it
    family("process_open_fds", "gauge", "Open file descriptors.");
    out.push(`process_open_fds ${fds}`);
    const soft = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
    if (soft) {
      family("process_max_fds", "gauge", "The limit of open file descriptors.");
      out.push(`process_max_fds ${soft}`);
    }
  } catch {
    // Not Linux: no /proc.
  }
}
