import { z } from "zod";
import { Body, Nonce, RoomName, Seq, Username } from "../protocol/index.ts";

/** A `send` the server has not acknowledged yet. */
export interface OutboxEntry {
  /** Sent with every retry: the server stores the message once per user, room and nonce. */
  nonce: string;
  room: string;
  body: string;
  /** `Date.now()` when `send` was called. */
  createdAt: number;
}

/** What a client persists: whose it is, the last seq delivered per room, and the outbox. */
export interface ClientState {
  /** The username the state belongs to; a sign-in as someone else starts afresh. */
  user: string | null;
  /** Room name -> seq of the last message delivered to the application. */
  seqs: Record<string, number>;
  /** Unacknowledged sends, oldest first. */
  outbox: OutboxEntry[];
}

/**
 * Where a client keeps its state between page loads. `load` is called once, when the
 * client is created; `save` after every change (coalesced to one call per tick).
 * Give each client its own store (or key): two clients sharing one overwrite each other.
 *
 * @example
 * // A store backed by anything synchronous, here a Map:
 * const map = new Map<string, string>();
 * const store: ClientStore = {
 *   load: () => (map.has("s") ? JSON.parse(map.get("s")!) : null),
 *   save: (state) => map.set("s", JSON.stringify(state)),
 * };
 */
export interface ClientStore {
  load(): ClientState | null;
  save(state: ClientState): void;
}

function emptyState(): ClientState {
  return { user: null, seqs: {}, outbox: [] };
}

/** The persisted shape, checked on load: storage is outside the program's control. */
const PersistedState = z.object({
  user: Username.nullable(),
  seqs: z.record(RoomName, Seq),
  outbox: z.array(z.object({ nonce: Nonce, room: RoomName, body: Body, createdAt: z.number() })),
});

function clone(state: ClientState): ClientState {
  return { user: state.user, seqs: { ...state.seqs }, outbox: state.outbox.map((e) => ({ ...e })) };
}

/**
 * The default store: keeps state in memory, so it survives reconnections but not a
 * restart of the program. Pass the same store to a new client to resume where an
 * earlier one stopped (which is how a test simulates a page reload).
 *
 * @example
 * const store = memoryStore();
 * const client = createClient({ url, store });
 * // ... later, after client.close():
 * const again = createClient({ url, store, token }); // re-joins, resends the outbox
 */
export function memoryStore(initial?: ClientState): ClientStore & { readonly state: ClientState | null } {
  let state: ClientState | null = initial ? clone(initial) : null;
  return {
    load: () => (state ? clone(state) : null),
    save: (next) => {
      state = clone(next);
    },
    get state() {
      return state;
    },
  };
}

/** The part of the Web Storage API the store needs (`localStorage`, `sessionStorage`). */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * A store in `localStorage` (or any Web Storage) under `key`, so that a page reload
 * loses neither the outbox nor the place in each room. Unreadable or foreign data
 * under the key is ignored.
 *
 * @example
 * const client = createClient({
 *   url: `${location.origin.replace(/^http/, "ws")}/ws`,
 *   token: localStorage.getItem("token"),
 *   store: localStorageStore("switchboard.state"),
 * });
 */
export function localStorageStore(key = "switchboard.state", storage?: KeyValueStorage): ClientStore {
  const target = (): KeyValueStorage => {
    const s = storage ?? (globalThis as { localStorage?: KeyValueStorage }).localStorage;
    if (!s) throw new Error("localStorageStore: no localStorage in this environment");
    return s;
  };
  return {
    load() {
      const raw = target().getItem(key);
      if (raw === null) return null;
      try {
        const parsed = PersistedState.safeParse(JSON.parse(raw));
        return parsed.success ? parsed.data : null;
      } catch {
        return null;
      }
    },
    save(state) {
      target().setItem(key, JSON.stringify(state));
    },
  };
}

/**
 * The client's state and its writes to the store. Outbox changes are saved at once
 * (a reload must not lose a send); seq updates are coalesced to one write per tick.
 */
export class SavedState {
  state: ClientState;
  private scheduled = false;

  constructor(
    private readonly store: ClientStore,
    /** Called after every write. */
    private readonly written: () => void,
  ) {
    this.state = store.load() ?? emptyState();
  }

  /** Starts afresh: nobody's state. */
  reset(): void {
    this.state = emptyState();
  }

  save(now: boolean): void {
    if (now) {
      this.flush();
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      if (this.scheduled) this.flush();
    });
  }

  flush(): void {
    this.scheduled = false;
    this.store.save(this.state);
    this.written();
  }
}
