import type { Server } from "bun";
import type { Database } from "bun:sqlite";
import type { Clock } from "../../clock.ts";
import type { Config } from "../../config.ts";
import type { WriteGate } from "../../db/checkpointer.ts";
import type { WriteHealth } from "../../db/write-health.ts";
import { isoTime } from "../../iso-time.ts";
import { throttled, type Logger } from "../../log.ts";
import type { Metrics } from "../../metrics.ts";
import { CloseCode, ProtocolError, type ResultOf, type StoredMessage } from "../../protocol/index.ts";
import type { Socket } from "../../ws/connection.ts";
import type { Later } from "../../ws/dispatcher.ts";
import { frameBytesBound, type Outbound } from "../../ws/outbound.ts";
import { hintMs, nextSlot, refilled, type RequestBudget } from "../../ws/request-budget.ts";
import type { MessageInsert, RoomQueries } from "./queries.ts";

/** A room with members connected (or sends in flight): its latest seq lives here while loaded. */
interface LiveRoom {
  /**
   * The row's id; null until the room's first message is committed. A join writes
   * nothing: a client joining and leaving new names made one row (and, with
   * `DB_SYNC=FULL`, one fsync on the event loop) per name, kept forever.
   */
  id: number | null;
  readonly name: string;
  readonly topic: string;
  /** The latest committed seq; inside a write transaction, the latest assigned. */
  latestSeq: number;
  readonly conns: Set<Socket>;
  /** The members still being sent missed messages (not yet subscribed). */
  readonly catchingUp: Set<Socket>;
  /** username -> connections of that user in the room. */
  readonly users: Map<string, number>;
  pendingWrites: number;
  /**
   * Events committed but not yet published, in order: a busy room's are written to its
   * members together, at most once per `DELIVERY_INTERVAL_MS` (see `deliver`), and a
   * turn publishes at most so many bytes (`Outbound.fits`). Presence events queue behind
   * them while there are any.
   */
  held: string[];
  /** What `held` adds up to, by `frameBytesBound`. */
  heldBytes: number;
  /** `performance.now()` when the room's events were last published. */
  publishedAt: number;
  /** When what it holds may go: the end of the interval, or the next turn. */
  dueAt: number;
}

interface PendingSend {
  ws: Socket;
  room: LiveRoom;
  userId: number;
  username: string;
  body: string;
  nonce: string | null;
  arrivedAt: number;
  reply: Later<"send">;
  seq: number;
  at: number;
  /** `at` as the protocol writes it, once per message. */
  atIso: string;
  duplicate: boolean;
}

/** Catch-up pages are read this many messages at a time, at most. */
const CATCHUP_PAGE = 256;
/**
 * A page read costs the connection's request budget what it holds, sent or not. With
 * little budget left a page is this short, or as many messages as the budget pays for
 * at 256 bytes each if more. (Charged by what was sent, clients joining and leaving a
 * room with `since` in a loop, waiting out each `rate_limited`, kept the core 65% busy
 * reading pages of 3 KB messages to replay one or two of each.)
 */
const CATCHUP_PAGE_MIN = 16;

function messageEventJson(room: string, seq: number, user: string, body: string, at: string, nonce: string | null): string {
  return JSON.stringify(
    nonce === null
      ? { type: "message", room, seq, user, body, at }
      : { type: "message", room, seq, user, body, at, nonce },
  );
}

export type RoomService = ReturnType<typeof createRoomService>;

/**
 * Rooms: membership and presence in memory, history in SQLite, and the write path.
 *
 * Sends are group-committed: every send that arrives before the next turn of the event
 * loop is written in one transaction, then acknowledged and published (or held for the
 * room's next batch, see `deliver`). Seqs are assigned inside that synchronous
 * transaction, so they are gapless, and the queue is FIFO, so one connection's sends keep
 * their arrival order. Recovery is exact because a join reads the database and subscribes
 * with no commit in between, and only while the room holds no events it has read: it
 * sees each message once, either way.
 */
export function createRoomService(deps: {
  client: Database;
  queries: RoomQueries;
  clock: Clock;
  config: Config;
  outbound: Outbound;
  metrics: Metrics;
  log: Logger;
  /** Replayed messages are paid for from the connection's request budget. */
  budget: RequestBudget;
  /** Told of each commit: a full disk or a read-only file shows in /healthz. */
  writeHealth: WriteHealth;
}) {
  const { client, queries, clock, config, outbound, metrics, log, budget, writeHealth } = deps;
  const live = new Map<string, LiveRoom>();
  /** Ids of rooms known to exist (rooms are never deleted), for history without a SELECT. */
  const roomIds = new Map<string, number>();
  const ROOM_ID_CACHE = 10_000;
  const catchupHighWater = Math.floor(config.SEND_BUFFER_BYTES / 4);
  /** A history reply stays under half the send buffer; a page of huge bodies is cut short. */
  const historyBudget = Math.floor(config.SEND_BUFFER_BYTES / 2);
  /**
   * A room holds at most this much (`frameBytesBound`) before it publishes, whatever the
   * interval. Released at once, a second of a busy room's events (12 MB) reached members
   * faster than they could read and closed them with 1013, members that kept up with the
   * same messages sent as they came; a burst this size fits in their buffers.
   */
  const heldCap = Math.floor(config.SEND_BUFFER_BYTES / 4);
  let server: Server<unknown> | null = null;
  let queue: PendingSend[] = [];
  let flushScheduled = false;
  /** While the checkpointer's RESTART runs, sends queue up uncommitted (see WriteGate). */
  let held = false;
  /** The server is closing every connection: nobody is left to hear who leaves. */
  let silent = false;
  /** Resolved when a flush leaves nothing queued (for shutdown). */
  let idleWaiters: Array<() => void> = [];
  /** Rooms holding message events (`deliver`), and the timer that publishes them. */
  const waiting = new Set<LiveRoom>();
  let releaseTimer: ReturnType<typeof setTimeout> | null = null;
  let releaseAt = Infinity;
  /** Rooms `releaseDue` emptied that have members waiting to subscribe (see `flush`). */
  const released: LiveRoom[] = [];
  /** The server is stopping: nothing waits for an interval any more (see `idle`). */
  let stopping = false;
  /**
   * Rooms stored, counted once and then kept (rooms are stored with their first message
   * and never deleted): `/metrics` ran `count(*)`, a scan of the table, and with a
   * million rooms one address's allowance of `/metrics` requests kept the core busy.
   */
  let storedRooms: number | null = null;
  /** A full disk fails every commit, and each one retries its sends one by one. */
  const logCommitFailed = throttled(log.error, 1000);
  /** Catch-ups paused until their connection's request budget is out of debt. */
  const budgetWaits = new Map<Socket, ReturnType<typeof setTimeout>>();

  function load(name: string): LiveRoom {
    let room = live.get(name);
    if (!room) {
      const row = queries.findRoom(name);
      room = { id: row?.id ?? null, name, topic: `room:${name}`, latestSeq: row?.latestSeq ?? 0, conns: new Set(), catchingUp: new Set(), users: new Map(), pendingWrites: 0, held: [], heldBytes: 0, publishedAt: -Infinity, dueAt: 0 };
      live.set(name, room);
    }
    return room;
  }

  function unloadIfIdle(room: LiveRoom): void {
    if (room.conns.size > 0 || room.pendingWrites > 0) return;
    // Nobody is left to hear what it holds; the members of its next load read it from
    // the database.
    waiting.delete(room);
    live.delete(room.name);
  }

  /**
   * Publishes a committed message's event to the room, now or with the room's next batch.
   *
   * Bun writes everything published to a room in one turn of the event loop with one
   * write per member, and with a few hundred members those writes are most of the
   * server's work (about 7 µs each here): a room of 301 spent 2.1 ms a turn on them,
   * whether the turn published 1 message or 16. So a room whose events were published
   * less than `DELIVERY_INTERVAL_MS` ago holds the new ones and publishes them all at
   * that interval's end (`releaseDue`), with one write per member. A room that was quiet
   * for the interval publishes at once: only a busy room's events wait. The `ok` does
   * not wait (the message is committed). An event past the turn's byte budget
   * (`Outbound.fits`) waits for the next turn, whatever the interval.
   *
   * Who receives what does not change: a joiner does not subscribe while its room holds
   * events (it reads on from the database as a catch-up until the room holds none, see
   * `pumpRooms`), a leaver is sent what the room holds before it unsubscribes, and a
   * graceful stop publishes everything before the 1001 (`idle`).
   */
  function deliver(room: LiveRoom, frame: string, now: number): void {
    const quiet = stopping || now - room.publishedAt >= config.DELIVERY_INTERVAL_MS;
    if (room.held.length === 0 && quiet && outbound.fits(frame)) {
      outbound.publish(server!, room.topic, frame);
      room.publishedAt = now;
      return;
    }
    if (room.held.length === 0) {
      waiting.add(room);
      room.dueAt = quiet ? now : room.publishedAt + config.DELIVERY_INTERVAL_MS;
    }
    hold(room, frame);
    metrics.messageEventsHeld++;
  }

  /** Queues `frame` behind what the room holds; past `heldCap`, the room is due now. */
  function hold(room: LiveRoom, frame: string): void {
    room.held.push(frame);
    room.heldBytes += frameBytesBound(frame);
    if (room.heldBytes >= heldCap) room.dueAt = Math.min(room.dueAt, performance.now());
  }

  /**
   * Publishes what the room holds, oldest first, while the turn's budget lasts. Returns
   * whether it all went; if not, the rest goes next turn.
   */
  function release(room: LiveRoom, now: number): boolean {
    let n = 0;
    while (n < room.held.length && outbound.fits(room.held[n]!)) {
      const frame = room.held[n++]!;
      room.heldBytes -= frameBytesBound(frame);
      outbound.publish(server!, room.topic, frame);
    }
    room.publishedAt = now;
    if (n === room.held.length) {
      room.held = [];
      room.heldBytes = 0;
      waiting.delete(room);
      return true;
    }
    room.held.splice(0, n);
    room.dueAt = now;
    return false;
  }

  /**
   * Publishes the rooms whose time has come, within the turn's budget, and sends their
   * waiting joiners on (`pump`); arms the timer for the rest, or schedules the next turn
   * when the budget ran out. Runs in `flush`, whose turn then checks the members'
   * buffers (`afterPublish`); the timer only schedules a flush. A millisecond early
   * counts as due: a timer can fire a hair before its time.
   */
  function releaseDue(now: number): void {
    if (!server) return;
    let next = Infinity;
    let more = false;
    for (const room of waiting) {
      if (!stopping && room.dueAt > now + 1) {
        next = Math.min(next, room.dueAt);
        continue;
      }
      if (!release(room, now)) {
        more = true;
        break;
      }
      if (room.catchingUp.size > 0) released.push(room);
    }
    if (more) scheduleFlush();
    if (next >= releaseAt) return;
    clearTimeout(releaseTimer ?? undefined);
    releaseAt = next;
    releaseTimer = setTimeout(() => {
      releaseTimer = null;
      releaseAt = Infinity;
      scheduleFlush();
    }, next - now);
  }

  /** A joiner's live messages from here on, or, while the room holds events, once it holds none. */
  function subscribeOrWait(ws: Socket, room: LiveRoom, afterReply: (fn: () => void) => void): void {
    if (room.held.length === 0) {
      ws.subscribe(room.topic);
      return;
    }
    (ws.data.catchups ??= new Map()).set(room.name, room.latestSeq);
    room.catchingUp.add(ws);
    afterReply(() => pump(ws));
  }

  /**
   * To the other members: one publish to the room's topic, which Bun writes to every
   * subscriber natively, all of a turn's frames in one write per socket. (A send per
   * member made a room's join storm quadratic in JavaScript and in syscalls: 2,000 users
   * joining one room held the event loop for 16 s.) The publish goes out with the
   * subscribers of this moment: the joiner subscribes after it, the leaver unsubscribed
   * before it, so neither hears of itself. Members still catching up are not subscribed
   * yet and get it directly. The next turn's `flush` checks the subscribers' buffers.
   * `cause`, the connection whose join or leave it is, pays for what it sends (one
   * request token per KiB): one connection joining and leaving a room of 3,000 in a
   * loop, waiting out each `rate_limited`, sent 1.2 million presence frames a second.
   */
  function presence(room: LiveRoom, user: string, state: "join" | "leave", cause: Socket): void {
    if (silent) return;
    const frame = JSON.stringify({ type: "presence", room: room.name, user, state });
    budget.chargeCaused(cause.data, frame.length * room.conns.size);
    for (const ws of room.catchingUp) outbound.send(ws, frame);
    if (server && room.held.length > 0) {
      hold(room, frame); // after the messages before it
    } else if (server) {
      outbound.publish(server, room.topic, frame);
      scheduleFlush();
    } else {
      for (const ws of room.conns) if (!room.catchingUp.has(ws)) outbound.send(ws, frame);
    }
  }

  /** Returns the rows stored (0 when every send repeated a nonce). */
  function writeBatch(batch: PendingSend[]): number {
    const touched = new Set<LiveRoom>();
    const rows: MessageInsert[] = [];
    // Nonces stored by this batch: its rows are inserted at the end, so the table cannot tell yet.
    let fresh: Map<string, PendingSend> | null = null;
    // One commit, one timestamp: the messages are stored together.
    const at = clock.now();
    for (const item of batch) {
      const { room } = item;
      item.duplicate = false;
      // Stored with its first message (rolled back with it: `commit` puts the null back).
      room.id ??= queries.insertRoom(room.name, at);
      if (item.nonce !== null) {
        const key = `${room.id}:${item.userId}:${item.nonce}`;
        const prior = fresh?.get(key) ?? queries.findByNonce(room.id, item.userId, item.nonce);
        if (prior) {
          item.seq = prior.seq;
          item.at = prior.at;
          item.duplicate = true;
          continue;
        }
        (fresh ??= new Map()).set(key, item);
      }
      touched.add(room);
      item.seq = ++room.latestSeq;
      item.at = at;
      rows.push({ roomId: room.id, seq: item.seq, userId: item.userId, body: item.body, nonce: item.nonce, at });
    }
    queries.insertMessages(rows);
    for (const room of touched) queries.setLatest(room.id!, room.latestSeq);
    return rows.length;
  }
  const writeBatchTx = client.transaction(writeBatch);

  /** Writes `batch` in one transaction; on failure logs it, puts every room's seq (and id) back and returns false. */
  function commit(batch: PendingSend[]): boolean {
    const saved = new Map<LiveRoom, { seq: number; id: number | null }>();
    for (const { room } of batch) if (!saved.has(room)) saved.set(room, { seq: room.latestSeq, id: room.id });
    try {
      // Counted when it stored something: a batch of repeated nonces only read.
      if (writeBatchTx(batch) > 0) metrics.commits++;
      writeHealth.ok();
      if (storedRooms !== null) for (const [room, { id }] of saved) if (id === null && room.id !== null) storedRooms++;
      return true;
    } catch (err) {
      for (const [room, { seq, id }] of saved) {
        room.latestSeq = seq;
        room.id = id;
      }
      writeHealth.failed(err);
      logCommitFailed("send_commit_failed", { err, size: batch.length });
      return false;
    }
  }

  /** Runs `flush` at the next turn: to commit the queue, or only to check buffers after a presence publish. */
  function scheduleFlush(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  }

  function flush(): void {
    flushScheduled = false;
    // What was published before this turn (presence, from the handlers) is written by now.
    outbound.beginPublishing();
    if (held || queue.length === 0) {
      releaseDue(performance.now());
      outbound.afterPublish();
      pumpReleased();
      resolveIdle();
      return; // held: `writeGate.release` schedules it again
    }
    const batch = queue;
    queue = [];
    const failed = new Set<PendingSend>();
    if (!commit(batch)) {
      // One bad row must not sink the others: each is retried on its own.
      for (const item of batch) if (batch.length === 1 || !commit([item])) failed.add(item);
    }
    const touched = new Set<LiveRoom>();
    // Replies grouped by socket, in order, to be written corked: one write per socket.
    const replies = new Map<Socket, PendingSend[]>();
    const now = performance.now();
    for (const item of batch) {
      if (!failed.has(item)) item.atIso = isoTime(item.at);
      const { room } = item;
      room.pendingWrites--;
      touched.add(room);
      const list = replies.get(item.ws);
      if (list) list.push(item);
      else replies.set(item.ws, [item]);
      if (failed.has(item)) continue;
      if (item.duplicate) {
        metrics.messagesDeduplicated++;
      } else {
        metrics.messagesStored++;
        if (server) {
          const frame = messageEventJson(room.name, item.seq, item.username, item.body, item.atIso, item.nonce);
          deliver(room, frame, now);
          // A sender that left the room before its send was committed still gets its event.
          if (!item.ws.data.closed && !item.ws.data.rooms.has(room.name)) outbound.send(item.ws, frame);
        }
      }
      metrics.sendLatency(now - item.arrivedAt);
    }
    releaseDue(now);
    for (const [ws, items] of replies) {
      const answer = () => {
        for (const item of items) {
          // Logged once as send_commit_failed (throttled): not again per send as request_failed.
          if (failed.has(item)) item.reply.fail(new ProtocolError("internal", "internal error"));
          else item.reply.ok({ seq: item.seq, at: item.atIso });
        }
      };
      try {
        if (ws.data.closed) answer(); // nothing is written; cork needs an open socket
        else ws.cork(answer);
      } catch (err) {
        // A throw here would escape setImmediate and end the process.
        log.error("send_reply_failed", { conn: ws.data.id, err });
      }
    }
    outbound.afterPublish();
    pumpReleased();
    for (const room of touched) {
      // Members still catching up read on to the new latest seq (or pause until drain).
      if (room.catchingUp.size > 0) for (const ws of [...room.catchingUp]) pump(ws);
      unloadIfIdle(room);
    }
    // Nothing can queue a send while this runs: the queue is empty here.
    resolveIdle();
  }

  /** Joiners waiting for their room to publish what it held: it has, so they subscribe. */
  function pumpReleased(): void {
    for (const room of released.splice(0)) for (const ws of [...room.catchingUp]) pump(ws);
  }

  /**
   * Shutdown waits until nothing is queued or held, and what was published is written:
   * a turn's frames go out when it ends, and the sockets are closed right after this.
   */
  function resolveIdle(): void {
    if (idleWaiters.length === 0 || queue.length > 0 || waiting.size > 0) return;
    if (outbound.publishing) scheduleFlush();
    else for (const resolve of idleWaiters.splice(0)) resolve();
  }

  /**
   * Replays missed messages to `ws` while its unsent bytes stay under a quarter of the
   * send buffer (checked after every message: one page of large bodies can pass the
   * whole buffer) and its request budget lasts, then subscribes it to live ones. The
   * rest follows on `drain`, or once the budget is out of debt.
   */
  function pump(ws: Socket): void {
    if (budgetWaits.has(ws)) return; // its timer resumes it
    try {
      pumpRooms(ws);
    } catch (err) {
      // Runs from drain, flush and after a join's reply: a throw must not reach the process.
      log.error("catch_up_failed", { conn: ws.data.id, err });
      outbound.close(ws, CloseCode.tryAgainLater, "catch-up failed; reconnect and recover");
    }
  }

  function pumpRooms(ws: Socket): void {
    const catchups = ws.data.catchups;
    if (!catchups) return;
    for (const [name, from] of catchups) {
      const room = live.get(name);
      if (!room) {
        catchups.delete(name);
        continue;
      }
      let cursor = from;
      let paused = false;
      while (!paused) {
        if (ws.data.closed) return;
        if (cursor >= room.latestSeq) {
          // Not while the room holds events it has read (`deliver`): the release pumps it.
          if (room.held.length > 0) {
            paused = true;
            break;
          }
          // Same synchronous block as the last read: no commit can fall in between.
          ws.subscribe(room.topic);
          catchups.delete(name);
          room.catchingUp.delete(ws);
          break;
        }
        const tokens = budget.refill(ws.data, performance.now());
        if (tokens < 0) {
          // A join and leave in a loop would otherwise replay a whole backlog each time.
          paused = true;
          waitForBudget(ws);
          break;
        }
        const limit = Math.min(CATCHUP_PAGE, Math.max(CATCHUP_PAGE_MIN, Math.ceil(tokens * 4)));
        // latestSeq > cursor >= 0: the room has messages, so it has its row.
        const page = queries.range(name, room.id!, cursor, room.latestSeq, limit);
        if (page.length === 0) {
          // Only if the database lost rows it said it had: do not spin.
          log.error("catch_up_gap", { room: name, after: cursor, latest: room.latestSeq });
          cursor = room.latestSeq;
          continue;
        }
        let sent = 0;
        for (const m of page) {
          const frame = messageEventJson(name, m.seq, m.user, m.body, m.at, m.nonce ?? null);
          outbound.send(ws, frame);
          budget.chargeCaused(ws.data, frame.length);
          sent++;
          cursor = m.seq;
          if (ws.getBufferedAmount() > catchupHighWater) {
            paused = true;
            break;
          }
        }
        // The rest was read too (and is read again on drain).
        for (let i = sent; i < page.length; i++) budget.chargeCaused(ws.data, page[i]!.body.length + 128);
      }
      if (paused) catchups.set(name, cursor);
      if (budgetWaits.has(ws)) break;
    }
    if (catchups.size === 0) ws.data.catchups = null;
  }

  function waitForBudget(ws: Socket): void {
    const ms = budget.msUntil(ws.data, 0);
    budgetWaits.set(
      ws,
      setTimeout(() => {
        budgetWaits.delete(ws);
        pump(ws);
      }, ms),
    );
  }

  /**
   * Drops the oldest messages of a history page until its reply fits `historyBudget`
   * (keeping at least one): 100 bodies of escaped control characters would be 2.4 MB,
   * past the send buffer, and the client would be closed instead of answered.
   */
  function fitBudget(messages: StoredMessage[]): StoredMessage[] {
    let rough = 0;
    for (const m of messages) rough += m.body.length + 160;
    // JSON escapes expand a UTF-16 unit to at most 6 bytes: below that, it surely fits.
    if (rough * 6 <= historyBudget) return messages;
    let bytes = 64;
    let keep = messages.length;
    while (keep > 0) {
      bytes += Buffer.byteLength(JSON.stringify(messages[keep - 1])) + 1;
      if (bytes > historyBudget && keep < messages.length) break;
      keep--;
    }
    return messages.slice(keep);
  }

  function leaveRoom(ws: Socket, room: LiveRoom): void {
    const username = ws.data.user!.username;
    ws.data.rooms.delete(room.name);
    // A subscribed member gets what the room holds, committed before it left; one still
    // catching up has read it from the database, or stops here.
    if (!ws.data.closed && !room.catchingUp.has(ws)) for (const frame of room.held) outbound.send(ws, frame);
    ws.data.catchups?.delete(room.name);
    room.catchingUp.delete(ws);
    room.conns.delete(ws);
    if (!ws.data.closed) ws.unsubscribe(room.topic);
    const left = (room.users.get(username) ?? 1) - 1;
    if (left > 0) {
      room.users.set(username, left);
    } else {
      room.users.delete(username);
      presence(room, username, "leave", ws);
    }
    unloadIfIdle(room);
  }

  /**
   * Takes a send token, or throws `rate_limited` with the time the send may run after
   * the sends refused before it (`nextSlot`): every refusal had said "when one token is
   * back", so a client retrying each refused send at its hint retried them all at once.
   */
  function refillAndTake(ws: Socket): void {
    const conn = ws.data;
    const now = clock.now();
    conn.sendTokens = refilled(conn.sendTokens, conn.sendRefilledAt, now, config.SEND_RATE, config.SEND_BURST);
    conn.sendRefilledAt = now;
    if (conn.sendTokens < 1) {
      conn.sendQueuedUntil = nextSlot(conn.sendQueuedUntil, conn.sendTokens, 1, config.SEND_RATE, now);
      const retryAfterMs = hintMs(conn.sendQueuedUntil, now);
      throw new ProtocolError("rate_limited", `at most ${config.SEND_RATE} sends per second`, { retryAfterMs });
    }
    conn.sendTokens -= 1;
  }

  return {
    attach(s: Server<unknown>): void {
      server = s;
    },

    join(ws: Socket, name: string, since: number | undefined, afterReply: (fn: () => void) => void): ResultOf<"join"> {
      const conn = ws.data;
      const username = conn.user!.username;
      const already = conn.rooms.has(name);
      if (!already && conn.rooms.size >= config.MAX_ROOMS_PER_CONNECTION) {
        // Each room a connection is in costs memory, and rooms are never deleted: a
        // connection joining new names as fast as it can made a million rooms a minute.
        const message = `this connection is in ${conn.rooms.size} rooms, the most allowed: leave one first`;
        throw new ProtocolError("bad_request", `room: ${message}`, { issues: [{ path: "room", message }] });
      }
      const room = load(name);
      if (!already) {
        if (!room.users.has(username)) presence(room, username, "join", ws);
        room.users.set(username, (room.users.get(username) ?? 0) + 1);
        room.conns.add(ws);
        conn.rooms.add(name);
      }
      const result: ResultOf<"join"> = { room: name, seq: room.latestSeq, members: [...room.users.keys()] };
      if (since === undefined) {
        if (!already) subscribeOrWait(ws, room, afterReply);
        return result;
      }
      const missed = room.latestSeq - since;
      result.recovered = missed >= 0 && missed <= config.RECOVERY_LIMIT;
      if (already) {
        // Already receiving live messages: replaying would deliver some twice, so nothing
        // is pushed, and only a client that missed nothing is told it has recovered.
        result.recovered = missed === 0;
        return result;
      }
      if (!result.recovered || missed === 0) {
        subscribeOrWait(ws, room, afterReply);
        return result;
      }
      (conn.catchups ??= new Map()).set(name, since);
      room.catchingUp.add(ws);
      afterReply(() => pump(ws));
      return result;
    },

    leave(ws: Socket, name: string): void {
      const room = live.get(name);
      if (room && ws.data.rooms.has(name)) leaveRoom(ws, room);
    },

    /**
     * No more presence events: the server is closing every connection (a graceful stop).
     * Each close would tell the members not closed yet, users²/2 events for a room
     * (4,000 members: 2.9 s, past the stop's 2 s), to sockets about to close anyway.
     */
    silence(): void {
      silent = true;
    },

    leaveAll(ws: Socket): void {
      clearTimeout(budgetWaits.get(ws));
      budgetWaits.delete(ws);
      // A joined room stays loaded while it has members, so each name is live here.
      for (const name of [...ws.data.rooms]) leaveRoom(ws, live.get(name)!);
    },

    /**
     * Queues a send for the next group commit and answers `reply` after it: `ok` once
     * the message is committed (its event published, or held, see `deliver`). Throws
     * `not_joined` or `rate_limited`.
     */
    send(ws: Socket, name: string, body: string, nonce: string | undefined, arrivedAt: number, reply: Later<"send">): void {
      const conn = ws.data;
      const room = conn.rooms.has(name) ? live.get(name) : undefined;
      if (!room) throw new ProtocolError("not_joined", `join ${name} before sending to it`);
      refillAndTake(ws);
      room.pendingWrites++;
      queue.push({
        ws,
        room,
        userId: conn.user!.id,
        username: conn.user!.username,
        body,
        nonce: nonce ?? null,
        arrivedAt,
        reply,
        seq: 0,
        at: 0,
        atIso: "",
        duplicate: false,
      });
      scheduleFlush();
    },

    history(name: string, before: number | undefined, limit: number): ResultOf<"history"> {
      let roomId = live.get(name)?.id ?? roomIds.get(name);
      if (roomId === undefined) {
        roomId = queries.findRoom(name)?.id;
        if (roomId === undefined) return { messages: [], hasMore: false };
        if (roomIds.size >= ROOM_ID_CACHE) roomIds.clear();
        roomIds.set(name, roomId);
      }
      const messages = fitBudget(queries.before(name, roomId, before ?? Number.MAX_SAFE_INTEGER, limit));
      // Seqs are gapless from 1, so older messages exist exactly when the oldest returned is not 1.
      return { messages, hasMore: messages.length > 0 && messages[0]!.seq > 1 };
    },

    who(name: string): ResultOf<"who"> {
      return { members: [...(live.get(name)?.users.keys() ?? [])] };
    },

    drain(ws: Socket): void {
      pump(ws);
    },

    /**
     * For shutdown: from now on nothing waits for an interval, and this resolves once
     * every queued send is committed and answered and every held event written.
     */
    idle(): Promise<void> {
      stopping = true;
      if (queue.length === 0 && waiting.size === 0) return Promise.resolve();
      scheduleFlush();
      return new Promise<void>((resolve) => idleWaiters.push(resolve));
    },

    /**
     * Held, sends are queued and not committed: the checkpointer's RESTART then takes the
     * write lock without a commit waiting for it inside SQLite, which would block the
     * event loop. Everything else (pings, joins, history) goes on.
     */
    writeGate: {
      hold(): void {
        held = true;
      },
      release(): void {
        held = false;
        if (queue.length > 0) scheduleFlush();
      },
    } satisfies WriteGate,

    /** Rooms in the database. */
    get storedRooms(): number {
      return (storedRooms ??= queries.countRooms());
    },

    get liveRooms(): number {
      return live.size;
    },
  };
}
