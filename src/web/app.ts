/**
 * The demo chat page, built on the SDK. The session token and the current room live
 * in localStorage and the SDK's state (outbox, place in each room) in a
 * localStorageStore, so a reload resumes where the page was, unsent messages included.
 */
import "./no-eval.ts"; // first: before the protocol's schemas are built
import {
  createClient,
  localStorageStore,
  newNonce,
  SwitchboardError,
  type ConnectionState,
  type MessageEvent,
  type OutboxEntry,
} from "../client/index.ts";
import { BODY_MAX_CHARS, codePoints } from "../protocol/limits.ts";

/**
 * Inside another site's frame the page does not run: it could be laid under a decoy
 * and clicked through (Bun cannot send `X-Frame-Options` or `frame-ancestors` with an
 * HTML-import route; a proxy in front can, see SECURITY.md).
 */
function framedByAnotherSite(): boolean {
  if (window.top === window.self) return false;
  try {
    return window.top?.location.origin !== location.origin;
  } catch {
    return true; // another origin's location cannot be read
  }
}
if (framedByAnotherSite()) {
  document.body.textContent = "Switchboard's page does not run inside another site's frame. Open it in its own tab.";
  throw new Error("framed by another site: not started");
}

const TOKEN_KEY = "switchboard.token";
const ROOM_KEY = "switchboard.room";
const PAGE = 50;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  status: $("status"),
  me: $("me"),
  meName: $("me-name"),
  meAvatar: $("me-avatar"),
  signOut: $<HTMLButtonElement>("sign-out"),
  auth: $("auth"),
  authForm: $<HTMLFormElement>("auth-form"),
  username: $<HTMLInputElement>("username"),
  password: $<HTMLInputElement>("password"),
  authError: $("auth-error"),
  chat: $("chat"),
  joinForm: $<HTMLFormElement>("join-form"),
  room: $<HTMLInputElement>("room"),
  roomTitle: $("room-title"),
  scroller: $("scroller"),
  older: $<HTMLButtonElement>("older"),
  jump: $<HTMLButtonElement>("jump"),
  empty: $("empty"),
  messages: $<HTMLOListElement>("messages"),
  pending: $<HTMLOListElement>("pending"),
  composer: $<HTMLFormElement>("composer"),
  body: $<HTMLTextAreaElement>("body"),
  send: $<HTMLButtonElement>("send"),
  chatError: $("chat-error"),
  members: $<HTMLUListElement>("members"),
  peopleCount: $("people-count"),
};

const STATE_TEXT: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  open: "Online",
  reconnecting: "Reconnecting…",
  "signed-out": "Signed out",
  closed: "Offline",
};

const client = createClient({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
  token: localStorage.getItem(TOKEN_KEY),
  store: localStorageStore("switchboard.state"),
});

/** What the page shows of the current room. */
let room: string | null = null;
let shown = new Map<number, HTMLLIElement>();
let seenNonces = new Set<string>();
const failed = new Map<string, string>();
let members = new Set<string>();
/** The smallest seq shown. */
let oldest: number | null = null;
/** The newest page of history has been read (before that, whether older exist is unknown). */
let historyRead = false;
let loadingOlder = false;
/** Messages from others that arrived while the view was scrolled up. */
let unseen = 0;

// ------------------------------------------------------------------ rendering

function hue(name: string): number {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function avatar(name: string): HTMLSpanElement {
  const el = document.createElement("span");
  el.className = "avatar";
  el.setAttribute("aria-hidden", "true");
  el.style.setProperty("--hue", String(hue(name)));
  el.textContent = name.slice(0, 1).toUpperCase();
  return el;
}

function messageItem(user: string, body: string, at: string | null, note?: string): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "msg";
  if (user === client.user?.username) li.classList.add("mine");
  const header = document.createElement("header");
  const author = document.createElement("span");
  author.className = "author";
  author.dir = "auto";
  author.textContent = user;
  header.append(author);
  if (at) {
    const time = document.createElement("time");
    time.dateTime = at;
    time.textContent = new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    time.title = new Date(at).toLocaleString();
    header.append(time);
  }
  if (note) {
    const n = document.createElement("span");
    n.className = "note";
    n.textContent = note;
    header.append(n);
  }
  const p = document.createElement("p");
  p.dir = "auto"; // right-to-left text laid out as such
  p.textContent = body;
  li.append(avatar(user), header, p);
  return li;
}

const nearBottom = () => ui.scroller.scrollHeight - ui.scroller.scrollTop - ui.scroller.clientHeight < 80;

/** The "new messages" button: shown with a count while messages arrive below the view. */
function renderUnseen(): void {
  ui.jump.hidden = unseen === 0;
  ui.jump.textContent = unseen === 1 ? "1 new message ↓" : `${unseen} new messages ↓`;
}

function scrollToBottom(): void {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
  unseen = 0;
  renderUnseen();
}

/** Inserts messages in seq order; each seq once, whether from history or live. */
function show(messages: ReadonlyArray<Omit<MessageEvent, "type">>): void {
  for (const m of messages) {
    if (m.nonce) seenNonces.add(m.nonce);
    if (shown.has(m.seq)) continue;
    const li = messageItem(m.user, m.body, m.at);
    li.dataset.seq = String(m.seq);
    let after: HTMLLIElement | null = null;
    for (const [seq, el] of shown) if (seq > m.seq && (!after || seq < Number(after.dataset.seq))) after = el;
    ui.messages.insertBefore(li, after);
    shown.set(m.seq, li);
    if (oldest === null || m.seq < oldest) oldest = m.seq;
  }
  ui.empty.hidden = shown.size > 0 || ui.pending.childElementCount > 0;
  // Seqs are gapless from 1, and what is shown is contiguous (the SDK delivers from its
  // last seq on, history pages are contiguous): older messages exist while seq 1 is not shown.
  if (historyRead) ui.older.hidden = !(oldest !== null && oldest > 1);
}

function renderPending(): void {
  const entries = client.outbox.filter((e: OutboxEntry) => e.room === room && !seenNonces.has(e.nonce));
  const items = entries.map((e) => {
    const li = messageItem(client.user?.username ?? "me", e.body, null, "sending…");
    li.dataset.nonce = e.nonce;
    return li;
  });
  for (const [nonce, body] of failed) {
    const li = messageItem(client.user?.username ?? "me", body, null, "not sent");
    li.classList.add("failed");
    li.dataset.nonce = nonce;
    items.push(li);
  }
  ui.pending.replaceChildren(...items);
  ui.pending.hidden = items.length === 0; // an empty list is not read out
  ui.empty.hidden = shown.size > 0 || items.length > 0;
}

function renderMembers(): void {
  const names = [...members].sort((a, b) => a.localeCompare(b));
  ui.members.replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      li.append(avatar(name), document.createTextNode(name === client.user?.username ? `${name} (you)` : name));
      return li;
    }),
  );
  ui.peopleCount.textContent = `(${names.length})`;
}

function renderState(): void {
  ui.status.dataset.state = client.state;
  ui.status.textContent = STATE_TEXT[client.state];
}

function renderSession(): void {
  const signedIn = client.token !== null;
  ui.auth.hidden = signedIn;
  ui.chat.hidden = !signedIn;
  ui.me.hidden = !client.user;
  if (client.user) {
    ui.meName.textContent = client.user.username;
    ui.meAvatar.style.setProperty("--hue", String(hue(client.user.username)));
    ui.meAvatar.textContent = client.user.username.slice(0, 1).toUpperCase();
  }
  const canWrite = signedIn && room !== null;
  ui.body.disabled = !canWrite;
  ui.send.disabled = !canWrite;
}

/** Shows `prefix` + what `e` means in `el`; a connectivity error is cleared once the client is online again. */
function showError(el: HTMLElement, prefix: string, e: unknown): void {
  el.textContent = prefix + describe(e);
  el.dataset.transient = String(e instanceof SwitchboardError && (e.code === "timeout" || e.code === "disconnected"));
}

/** "45 s", "15 min". */
function waitText(ms: number): string {
  const s = Math.ceil(ms / 1000);
  return s < 90 ? `${s} s` : `${Math.ceil(s / 60)} min`;
}

function describe(e: unknown): string {
  if (!SwitchboardError.is(e)) return "Something went wrong.";
  switch (e.code) {
    case "invalid_credentials":
      return "Wrong username or password.";
    case "username_taken":
      return "That username is taken.";
    case "rate_limited":
      return `Too many attempts; try again in ${waitText(e.retryAfterMs)}.`;
    case "bad_request": {
      // Sign-in fields have hints beside them; anything else says which field.
      const paths = new Set(e.issues?.map((i) => i.path));
      if (paths.has("username")) return "Check the username: 3–32 letters, digits, “_”, “.” or “-”.";
      if (paths.has("password")) return "Check the password: 8 to 1,024 characters.";
      return e.issues?.map((i) => `${i.path}: ${i.message}`).join("; ") || e.message;
    }
    case "timeout":
    case "disconnected":
      return "The server did not answer; check your connection.";
    case "too_large":
      return "The message is too large for this server.";
    case "closed":
      return "Not connected: the server closed the connection. Reload the page.";
    default:
      return e.message;
  }
}

// ------------------------------------------------------------------ rooms

async function enterRoom(name: string): Promise<void> {
  if (room && room !== name) void client.leave({ room }).catch(() => {});
  room = name;
  localStorage.setItem(ROOM_KEY, name);
  shown = new Map();
  seenNonces = new Set();
  failed.clear();
  members = new Set();
  oldest = null;
  historyRead = false;
  unseen = 0;
  renderUnseen();
  ui.older.hidden = true;
  ui.messages.replaceChildren();
  ui.room.value = name;
  ui.roomTitle.textContent = `#${name}`;
  ui.body.placeholder = "Write a message…";
  ui.chatError.textContent = "";
  renderPending();
  renderMembers();
  renderSession();
  try {
    const joined = await client.join({ room: name }, { timeoutMs: 60_000 });
    if (room !== name) return;
    members = new Set(joined.members);
    renderMembers();
    await loadOlder(true);
    scrollToBottom();
    // Joined from the room form (Enter in the field or the Join button): on to writing.
    if (document.activeElement === document.body || ui.joinForm.contains(document.activeElement)) ui.body.focus();
  } catch (e) {
    if (room === name) showError(ui.chatError, `Could not join #${name}: `, e);
  }
}

/** Loads the page of messages before the oldest shown (the newest page at first). */
async function loadOlder(first = false): Promise<void> {
  if (!room || loadingOlder || (!first && (!historyRead || oldest === null || oldest <= 1))) return;
  const name = room;
  loadingOlder = true;
  ui.messages.setAttribute("aria-busy", "true"); // older messages are not news
  try {
    const page = await client.history(first || oldest === null ? { room: name, limit: PAGE } : { room: name, before: oldest, limit: PAGE });
    if (room !== name) return;
    const height = ui.scroller.scrollHeight;
    const top = ui.scroller.scrollTop;
    const buttonFocused = document.activeElement === ui.older;
    historyRead = true;
    show(page.messages);
    if (!first) ui.scroller.scrollTop = top + (ui.scroller.scrollHeight - height); // keep the view still
    // The button went away under the keyboard's focus: keep it in the history.
    if (buttonFocused && ui.older.hidden) ui.scroller.focus();
  } catch (e) {
    showError(ui.chatError, "Could not load history: ", e);
  } finally {
    loadingOlder = false;
    ui.messages.removeAttribute("aria-busy");
  }
}

// ------------------------------------------------------------------ SDK events

client.on("state", renderState);
client.on("open", () => {
  for (const el of [ui.authError, ui.chatError]) if (el.dataset.transient === "true") el.textContent = "";
  renderSession();
  // A reload with a saved room: the SDK re-joined it; the page fills its view.
  if (client.user && room === null) void enterRoom(localStorage.getItem(ROOM_KEY) ?? "lobby");
});
client.on("signed-out", ({ reason }) => {
  localStorage.removeItem(TOKEN_KEY);
  room = null;
  renderSession();
  ui.authError.textContent = reason === "logout" ? "" : "Your session ended; please sign in again.";
  ui.username.focus();
  // Connected while signed out too (as on a first visit), so that the status says
  // whether the server can be reached before the next sign-in.
  queueMicrotask(() => client.connect());
});
client.on("closed", ({ code, reason }) => {
  ui.chatError.textContent = `Disconnected by the server (${code}${reason ? `: ${reason}` : ""}). Reload the page to connect again.`;
});
client.on("error", (e) => {
  if (e.code === "too_large") {
    ui.chatError.textContent = "A message written before the page was reloaded is too large for this server: it was not sent.";
    return;
  }
  // The server's history no longer continues what this page showed (a database restored
  // from a backup reuses seqs): the page would hide the new messages as seen. Redraw.
  if (e.code !== "history_mismatch" || room === null) return;
  const name = room;
  void enterRoom(name).then(() => {
    if (room === name) ui.chatError.textContent = "This room's history changed on the server; it is shown as it is now.";
  });
});
client.on("message", (m) => {
  if (m.room !== room) return;
  const stick = nearBottom();
  const fresh = !shown.has(m.seq);
  show([m]);
  if (m.nonce) renderPending();
  if (stick) {
    scrollToBottom();
  } else if (fresh && m.user !== client.user?.username) {
    // Reading older messages: say that new ones came, without moving the view.
    unseen++;
    renderUnseen();
  }
});
client.on("outbox", renderPending);
client.on("presence", (p) => {
  if (p.room !== room) return;
  if (p.state === "join") members.add(p.user);
  else members.delete(p.user);
  renderMembers();
});
client.on("joined", (j) => {
  if (j.room !== room) return;
  members = new Set(j.members); // after a reconnect: who is there now
  renderMembers();
});

// ------------------------------------------------------------------ user actions

ui.authForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const mode = (event.submitter as HTMLButtonElement | null)?.value === "signup" ? "signup" : "login";
  ui.authError.textContent = "";
  // The browser's own messages, on the field (the form is `novalidate` so that they come
  // only on submit).
  if (!ui.authForm.reportValidity()) return;
  const params = { username: ui.username.value.trim(), password: ui.password.value };
  for (const b of ui.authForm.querySelectorAll("button")) b.disabled = true;
  try {
    const { token } = mode === "signup" ? await client.signup(params) : await client.login(params);
    localStorage.setItem(TOKEN_KEY, token);
    ui.password.value = "";
    renderSession();
    await enterRoom(localStorage.getItem(ROOM_KEY) ?? "lobby");
    ui.body.focus();
  } catch (e) {
    showError(ui.authError, "", e);
    // Back where the fix is: the name that is taken, the password that is wrong.
    const field = e instanceof SwitchboardError && e.code === "invalid_credentials" ? ui.password : ui.username;
    field.focus();
    field.select();
  } finally {
    for (const b of ui.authForm.querySelectorAll("button")) b.disabled = false;
  }
});

ui.signOut.addEventListener("click", async () => {
  try {
    await client.logout();
  } catch (e) {
    // The client signs out here all the same; say what the server may not know.
    if (e instanceof SwitchboardError && (e.code === "timeout" || e.code === "disconnected")) {
      ui.authError.textContent = "Signed out on this device. The server could not be reached: the session is ended there once this page reconnects.";
    }
  }
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(ROOM_KEY);
  room = null;
  renderSession();
});

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ui.room.reportValidity()) return;
  const name = ui.room.value.trim();
  if (name !== room) void enterRoom(name);
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  // Leading spaces stay (indented code); trailing ones and newlines go.
  const body = ui.body.value.trimEnd();
  if (!room || !body.trim()) return;
  ui.body.value = "";
  ui.body.style.height = "";
  ui.chatError.textContent = "";
  const nonce = newNonce(); // chosen here, to tell afterwards whether the outbox kept it
  client.send({ room, body, nonce }).catch((e: unknown) => {
    // Still in the stored outbox (the client stopped): it goes out after a reload.
    if (client.outbox.some((entry) => entry.nonce === nonce)) return;
    failed.set(nonce, body);
    renderPending();
    ui.chatError.textContent = `Not sent: ${describe(e)}`;
  });
  scrollToBottom();
});

// The limit is in code points, as the server counts (`maxlength` would count UTF-16
// units, and refuse 2,001 emoji that the server accepts): checked on every edit.
ui.body.addEventListener("input", () => {
  const n = codePoints(ui.body.value.trimEnd());
  const tooLong = n > BODY_MAX_CHARS ? `At most ${BODY_MAX_CHARS} characters: this is ${n}.` : "";
  ui.body.setCustomValidity(tooLong);
  ui.body.setAttribute("aria-invalid", String(tooLong !== ""));
  // Said in the page too: the browser's bubble shows only on a send, and goes.
  if (tooLong || ui.chatError.dataset.tooLong === "true") {
    ui.chatError.textContent = tooLong;
    ui.chatError.dataset.tooLong = String(tooLong !== "");
  }
  // The box grows with its text, up to its max-height.
  ui.body.style.height = "auto";
  ui.body.style.height = `${ui.body.scrollHeight + 2}px`;
});

ui.body.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.older.addEventListener("click", () => void loadOlder());
ui.jump.addEventListener("click", () => {
  scrollToBottom();
  ui.body.focus();
});
ui.scroller.addEventListener("scroll", () => {
  if (ui.scroller.scrollTop < 40) void loadOlder();
  if (unseen > 0 && nearBottom()) {
    unseen = 0;
    renderUnseen();
  }
});

// ------------------------------------------------------------------ start

renderState();
renderSession();
if (client.token !== null) {
  // Offline-first: show the saved room and its unsent messages before the server answers.
  void enterRoom(localStorage.getItem(ROOM_KEY) ?? "lobby");
} else {
  ui.username.focus();
}
