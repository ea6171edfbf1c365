/**
 * The demo page in a real headless Chromium (Debian's, driven by playwright-core):
 * two people sign up, meet in a room, talk, see each other's presence; one page sends
 * while its socket is blocked, reloads, and its history and unsent message survive.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page, type WebSocketRoute } from "playwright-core";
import { backup } from "../../src/db/backup.ts";
import { startTestServer, type TestServer } from "../../src/testing.ts";
import { pageRoutes } from "../../src/web/routes.ts";

const CHROMIUM = "/usr/bin/chromium";
const OUTPUT = "test-output";
// Skipped (with a message) on a machine without Debian's chromium; never in CI, where
// .ci/run installs it and a missing browser must fail.
const RUN = existsSync(CHROMIUM) || process.env.CI === "true";
if (!RUN) console.warn(`demo page browser tests skipped: ${CHROMIUM} not found (apt-get install -y chromium)`);

let t: TestServer;
let browser: Browser;

beforeAll(async () => {
  if (!RUN) return;
  t = await startTestServer({ routes: pageRoutes(), config: { SEND_BURST: 1000 } });
  // launch() gives the browser a fresh temporary user-data-dir, removed on close.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await t?.stop();
});

async function signUp(page: Page, username: string, url = t.url): Promise<void> {
  await page.goto(url);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill("correct horse battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator("#room-title", { hasText: "#lobby" }).waitFor();
  await page.locator("#status", { hasText: "Online" }).waitFor();
}

/** A fresh browser context and page, signed up as `${prefix}_<random>`. */
async function newUser(prefix: string, options: Parameters<Browser["newContext"]>[0] = {}, url = t.url) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  await signUp(page, `${prefix}_${Math.random().toString(36).slice(2, 6)}`, url);
  return { context, page };
}

/** Joins `room` with the page's form and waits for its title. */
async function joinRoom(page: Page, room: string): Promise<void> {
  await page.getByLabel("Room").fill(room);
  await page.getByRole("button", { name: "Join" }).click();
  await page.locator("#room-title", { hasText: `#${room}` }).waitFor();
}

async function say(page: Page, body: string): Promise<void> {
  await page.getByLabel("Message", { exact: true }).fill(body);
  await page.getByLabel("Message", { exact: true }).press("Enter");
}

const message = (page: Page, body: string) => page.locator("#messages li", { hasText: body });
const member = (page: Page, name: string) => page.locator("#members li", { hasText: name });

test.skipIf(!RUN)(
  "two people chat in the demo page; a reload keeps history and the unsent message, delivered once",
  async () => {
    const contexts: BrowserContext[] = [await browser.newContext(), await browser.newContext()];
    const [ctxA, ctxB] = contexts as [BrowserContext, BrowserContext];
    // B's socket goes through a relay the test can block in both directions.
    let blocked = false;
    await ctxB.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        if (!blocked) server.send(m);
      });
      server.onMessage((m) => {
        if (!blocked) ws.send(m);
      });
    });
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    const suffix = Math.random().toString(36).slice(2, 6);
    const [ada, bob] = [`ada_${suffix}`, `bob_${suffix}`];

    await signUp(a, ada);
    await signUp(b, bob);
    await member(a, bob).waitFor(); // a presence event
    await member(b, ada).waitFor(); // the join reply's members
    expect(await member(b, `${bob} (you)`).count()).toBe(1);

    await say(a, "hello from ada");
    await message(b, "hello from ada").waitFor();
    await say(b, "hi ada, bob here");
    await message(a, "hi ada, bob here").waitFor();
    await message(b, "hi ada, bob here").waitFor();

    // Blocked: the message waits in B's outbox, persisted in localStorage.
    blocked = true;
    await say(b, "sent while blocked");
    await b.locator("#pending li", { hasText: "sent while blocked" }).waitFor();
    const saved = await b.evaluate(() => localStorage.getItem("switchboard.state"));
    expect(JSON.parse(saved!).outbox.map((e: { body: string }) => e.body)).toEqual(["sent while blocked"]);
    expect(await message(a, "sent while blocked").count()).toBe(0);

    blocked = false;
    await b.reload();
    // After the reload: signed in again from the saved token, history back, outbox sent.
    await message(b, "sent while blocked").waitFor();
    await message(a, "sent while blocked").waitFor();
    await message(b, "hello from ada").waitFor();
    await b.locator("#status", { hasText: "Online" }).waitFor();
    await member(b, ada).waitFor();

    // A later message proves nothing else is on its way before it (delivery is in seq order).
    await say(a, "welcome back");
    await message(b, "welcome back").waitFor();
    for (const page of [a, b]) {
      expect(await page.locator("#messages li").allInnerTexts()).toHaveLength(4);
      expect(await message(page, "sent while blocked").count()).toBe(1);
      expect(await page.locator("#pending li").count()).toBe(0);
    }
    const order = (await b.locator("#messages li p").allInnerTexts()).map((s) => s.trim());
    expect(order).toEqual(["hello from ada", "hi ada, bob here", "sent while blocked", "welcome back"]);

    expect(await a.locator("#older").isVisible()).toBe(false); // nothing older than the first message

    mkdirSync(OUTPUT, { recursive: true });
    await a.screenshot({ path: `${OUTPUT}/demo-chat.png`, fullPage: true });
    for (const c of contexts) await c.close();
  },
  30_000,
);

test.skipIf(!RUN)(
  "scroll-back: the newest 50 first, older ones on scrolling to the top or with the button",
  async () => {
    const { client } = await t.signedIn();
    await client.join({ room: "archive" });
    await Promise.all(Array.from({ length: 120 }, (_, i) => client.send({ room: "archive", body: `old message ${i + 1}` })));
    const { context, page } = await newUser("cleo");
    await joinRoom(page, "archive");
    await message(page, "old message 120").waitFor();
    await message(page, "old message 71").waitFor();
    expect(await page.locator("#messages li").count()).toBe(50);
    // Scrolling to the top loads the page before.
    await page.locator("#scroller").evaluate((el) => el.scrollTo(0, 0));
    await message(page, "old message 21").waitFor();
    expect(await page.locator("#messages li").count()).toBe(100);
    // The button loads the rest (the keyboard way); then there is nothing older.
    await page.locator("#scroller").evaluate((el) => el.scrollTo(0, el.scrollHeight));
    await page.getByRole("button", { name: "Load older messages" }).press("Enter");
    await page.locator("#messages li p", { hasText: /^old message 1$/ }).waitFor();
    await page.locator("#older").waitFor({ state: "hidden" });
    const bodies = await page.locator("#messages li p").allInnerTexts();
    expect(bodies).toEqual(Array.from({ length: 120 }, (_, i) => `old message ${i + 1}`));
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "the composer's limit is 4000 code points, as the server counts: 4000 emoji go, 4001 do not",
  async () => {
    const { context, page } = await newUser("dora");
    await joinRoom(page, "emoji");
    const box = page.getByLabel("Message", { exact: true });
    // 4000 code points, 8000 UTF-16 units: a `maxlength` of 4000 would have cut it in half.
    const atLimit = "😀".repeat(4000);
    await box.fill(`${atLimit}😀`);
    await box.press("Enter");
    expect(await box.evaluate((el) => (el as HTMLTextAreaElement).validationMessage)).toBe(
      "At most 4000 characters: this is 4001.",
    );
    expect(await page.locator("#pending li").count()).toBe(0);
    await box.fill(atLimit);
    expect(await box.evaluate((el) => (el as HTMLTextAreaElement).validity.valid)).toBe(true);
    await box.press("Enter");
    await page.locator("#messages li").first().waitFor();
    const shown = await page.locator("#messages li p").allInnerTexts();
    expect(shown.map((t) => t.trim())).toEqual([atLimit]);
    expect(await page.locator("#messages li").count()).toBe(1);
    // Said in the page too, and marked on the box, while it is too long.
    await box.fill(`${atLimit}😀`);
    await expect(page.locator("#chat-error").innerText()).resolves.toBe("At most 4000 characters: this is 4001.");
    expect(await box.getAttribute("aria-invalid")).toBe("true");
    await box.fill("short again");
    expect(await page.locator("#chat-error").isVisible()).toBe(false);
    expect(await box.getAttribute("aria-invalid")).toBe("false");
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "the sign-in form: the browser's own checks, focus back on the field to fix, no console errors",
  async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text() + " @ " + JSON.stringify(m.location()));
    });
    await page.goto(t.url);
    await page.getByRole("button", { name: "Create account" }).click();
    // Empty fields: the browser's message on the field, not the schema's text in the page.
    expect(await page.locator("#auth-error").isVisible()).toBe(false);
    expect(await page.getByLabel("Username").evaluate((el) => (el as HTMLInputElement).validity.valueMissing)).toBe(true);
    const name = `erin_${Math.random().toString(36).slice(2, 6)}`;
    await signUp(page, name);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Username").fill(name);
    await page.getByLabel("Password").fill("not the password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#auth-error", { hasText: "Wrong username or password." }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("password");
    // (A favicon request that 404s was a console error on every load.)
    expect(consoleErrors).toEqual([]);
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "a phone-sized window: a long name and a long room name do not push the page sideways",
  async () => {
    const { context, page } = await newUser("w".repeat(26), { viewport: { width: 375, height: 667 } });
    const room = `r${"x".repeat(63)}`;
    await joinRoom(page, room);
    await say(page, "from a phone");
    await message(page, "from a phone").waitFor();
    const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, window: window.innerWidth }));
    expect(widths.page).toBeLessThanOrEqual(widths.window);
    expect(await page.getByRole("button", { name: "Sign out" }).isVisible()).toBe(true);
    const send = await page.getByRole("button", { name: "Send" }).boundingBox();
    expect(send!.x + send!.width).toBeLessThanOrEqual(375);
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: `${OUTPUT}/demo-phone.png`, fullPage: true });
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "reopened after missing every message of a room: all shown once, and no \"load older\" since seq 1 is shown",
  async () => {
    const { context, page } = await newUser("finn");
    await joinRoom(page, "reopen");
    await page.locator("#empty").waitFor(); // joined, nothing yet: the SDK's place in it is 0
    await page.goto("about:blank");
    // 60 while the page is closed: the SDK recovers all of them from its stored place,
    // while the page's first history page holds only the newest 50 (and says hasMore).
    const { client } = await t.signedIn();
    await client.join({ room: "reopen" });
    await Promise.all(Array.from({ length: 60 }, (_, i) => client.send({ room: "reopen", body: `later ${i + 1}` })));
    await page.goto(t.url);
    await message(page, "later 60").waitFor();
    await page.locator("#messages li p", { hasText: /^later 1$/ }).waitFor();
    expect(await page.locator("#messages li").count()).toBe(60);
    expect(await page.locator("#older").isVisible()).toBe(false);
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "scrolled up to read, new messages from others show a count that jumps to them; at the bottom they just scroll in",
  async () => {
    const { context, page } = await newUser("gus");
    await joinRoom(page, "busy");
    const { client } = await t.signedIn();
    await client.join({ room: "busy" });
    await Promise.all(Array.from({ length: 40 }, (_, i) => client.send({ room: "busy", body: `filler ${i + 1}` })));
    await message(page, "filler 40").waitFor();
    // At the bottom: a new message scrolls into view and no button shows.
    await client.send({ room: "busy", body: "seen at once" });
    await message(page, "seen at once").waitFor();
    expect(await page.locator("#jump").isVisible()).toBe(false);
    // Scrolled up: two messages from someone else, counted, and the view stays put.
    await page.locator("#scroller").evaluate((el) => (el.scrollTop = 0));
    await client.send({ room: "busy", body: "while away 1" });
    await client.send({ room: "busy", body: "while away 2" });
    await message(page, "while away 2").waitFor();
    const jump = page.locator("#jump");
    await expect(jump.innerText()).resolves.toBe("2 new messages ↓");
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: `${OUTPUT}/demo-new-messages.png` });
    expect(await page.locator("#scroller").evaluate((el) => el.scrollTop)).toBe(0);
    await jump.click();
    expect(await jump.isVisible()).toBe(false);
    expect(await page.locator("#scroller").evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight)).toBeLessThan(80);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("body");
    // Scrolling down by hand clears it too.
    await page.locator("#scroller").evaluate((el) => (el.scrollTop = 0));
    await client.send({ room: "busy", body: "one more" });
    await message(page, "one more").waitFor();
    await expect(jump.innerText()).resolves.toBe("1 new message ↓");
    await page.locator("#scroller").evaluate((el) => (el.scrollTop = el.scrollHeight));
    await jump.waitFor({ state: "hidden" });
    // Sending one's own message goes to the bottom, with nothing left to announce.
    await page.locator("#scroller").evaluate((el) => (el.scrollTop = 0));
    await client.send({ room: "busy", body: "and another" });
    await expect(jump.innerText()).resolves.toBe("1 new message ↓");
    await say(page, "my own");
    await message(page, "my own").waitFor();
    expect(await jump.isVisible()).toBe(false);
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "sign out while the connection is down: signed out at once, told the server was not reached, and not signed in again when it is back",
  async () => {
    const context = await browser.newContext();
    // The page's socket goes through a relay that the test can cut, and refuse while `down`.
    let down = false;
    const live = new Set<WebSocketRoute>();
    await context.routeWebSocket(/\/ws$/, (ws) => {
      if (down) {
        void ws.close({ code: 1011, reason: "down" });
        return;
      }
      live.add(ws);
      ws.connectToServer();
    });
    const page = await context.newPage();
    await signUp(page, `hal_${Math.random().toString(36).slice(2, 6)}`);
    await joinRoom(page, "leaving");
    await say(page, "before");
    await message(page, "before").waitFor();

    down = true;
    for (const ws of live) await ws.close({ code: 1006, reason: "cut" }).catch(() => {});
    await page.locator("#status", { hasText: "Reconnecting" }).waitFor();
    await say(page, "queued before the sign-out");
    await page.locator("#pending li", { hasText: "queued before the sign-out" }).waitFor();
    const token = await page.evaluate(() => localStorage.getItem("switchboard.token"));
    await page.getByRole("button", { name: "Sign out" }).click();
    // At once, not after a request timeout.
    await page.locator("#auth").waitFor({ timeout: 2000 });
    await page.locator("#auth-error", { hasText: "Signed out on this device. The server could not be reached" }).waitFor();
    expect(await page.evaluate(() => localStorage.getItem("switchboard.token"))).toBeNull();

    down = false;
    // Connected again while signed out: the status says the server is there, and no one is signed in.
    await page.locator("#status", { hasText: "Online" }).waitFor();
    expect(await page.locator("#chat").isVisible()).toBe(false);
    expect(await page.locator("#me").isVisible()).toBe(false);
    const { client } = await t.signedIn();
    expect((await client.history({ room: "leaving" })).messages.map((m) => m.body)).toEqual(["before"]);
    // And the session the server had not heard the sign-out of was ended on reconnecting.
    expect(await client.auth({ token: token! }).then(() => "valid", (e: { code: string }) => e.code)).toBe("unauthorized");
    await context.close();
  },
  20_000,
);

test.skipIf(!RUN)(
  "a database restored from a backup under an open page: the page redraws the room, and messages that reuse seqs are shown",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "switchboard-demo-"));
    const dbPath = join(dir, "chat.db");
    let first: TestServer | null = await startTestServer({ routes: pageRoutes(), dbPath });
    let second: TestServer | null = null;
    try {
      const { context, page } = await newUser("ivy", {}, first.url);
      await joinRoom(page, "restore");
      for (const i of [1, 2, 3]) {
        await say(page, `m${i}`);
        await message(page, `m${i}`).waitFor();
      }
      backup(dbPath, join(dir, "copy.db"));
      for (const i of [4, 5, 6]) {
        await say(page, `m${i}`);
        await message(page, `m${i}`).waitFor();
      }
      const port = first.port;
      await first.stop();
      first = null;
      await page.locator("#status", { hasText: "Reconnecting" }).waitFor();
      for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) rmSync(f, { force: true });
      copyFileSync(join(dir, "copy.db"), dbPath);
      second = await startTestServer({ routes: pageRoutes(), dbPath, port });
      await page.locator("#chat-error", { hasText: "This room's history changed on the server" }).waitFor();
      // Seq 4 again, with another body: before, the page took it for the m4 it had shown.
      const { client } = await second.signedIn();
      await client.join({ room: "restore" });
      expect(await client.send({ room: "restore", body: "after the restore" })).toMatchObject({ seq: 4 });
      await message(page, "after the restore").waitFor();
      const shown = (await page.locator("#messages li p").allInnerTexts()).map((x) => x.trim());
      expect(shown).toEqual(["m1", "m2", "m3", "after the restore"]);
      await context.close();
    } finally {
      await first?.stop();
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test.skipIf(!RUN)(
  "a message over the server's frame limit: marked not sent with the reason, and the page goes on",
  async () => {
    const small = await startTestServer({ routes: pageRoutes(), config: { MAX_FRAME_BYTES: 4096 } });
    try {
      const { context, page } = await newUser("jo", {}, small.url);
      await joinRoom(page, "frames");
      await say(page, "é".repeat(2500)); // 5,000 bytes of UTF-8: under the 4,000-character limit
      await page.locator("#pending li.failed").waitFor();
      await page.locator("#chat-error", { hasText: "Not sent: The message is too large for this server." }).waitFor();
      await page.locator("#status", { hasText: "Online" }).waitFor();
      await say(page, "next one");
      await message(page, "next one").waitFor();
      // Nothing left to write again after a reload.
      await page.reload();
      await message(page, "next one").waitFor();
      await page.locator("#status", { hasText: "Online" }).waitFor();
      expect(await page.evaluate(() => JSON.parse(localStorage.getItem("switchboard.state")!).outbox)).toEqual([]);
      await context.close();
    } finally {
      await small.stop();
    }
  },
  20_000,
);

test.skipIf(!RUN)(
  "inside another site's frame the page does not start; right-to-left text is laid out as such; leading spaces stay",
  async () => {
    const { context, page } = await newUser("kai");
    await joinRoom(page, "layout");
    await say(page, "    indented");
    await say(page, "שלום עולם 123");
    await message(page, "שלום").waitFor();
    const bodies = page.locator("#messages li p");
    expect(await bodies.first().evaluate((el) => el.textContent)).toBe("    indented");
    expect(await bodies.last().evaluate((el) => getComputedStyle(el).direction)).toBe("rtl");

    const policy = await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute("content");
    expect(policy).toContain("default-src 'self'");
    const framing = await context.newPage();
    await framing.setContent(`<iframe src="${t.url}" width="600" height="400"></iframe>`);
    const frame = framing.frameLocator("iframe");
    await frame.locator("body", { hasText: "does not run inside another site's frame" }).waitFor();
    expect(await frame.locator("#auth-form").count()).toBe(0);
    await context.close();
  },
  20_000,
);
