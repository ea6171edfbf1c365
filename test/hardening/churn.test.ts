import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { RawWs } from "../../bench/lib/raw-ws.ts";
import { signedIn, startApp, type TestApp } from "../helpers.ts";

const CYCLES = 300;
let t: TestApp;
beforeAll(async () => (t = await startApp()));
afterAll(() => t.stop());

/** Open file descriptors of this process (server and clients both live here). */
const fds = () => readdirSync("/proc/self/fd").length;

async function settle(baseline: number): Promise<number> {
  // Closed sockets are released as their close handshakes finish; give them a moment.
  for (let i = 0; i < 50 && fds() > baseline; i++) await Bun.sleep(20);
  return fds();
}

test(`${CYCLES} connect, auth, join, close cycles leave no file descriptor or connection behind`, async () => {
  // One signup (one argon2 hash); every cycle then signs in with the token, as a reconnecting client does.
  const { s, token } = await signedIn(t, "churner");
  await s.close();
  const warm = await RawWs.open(t.port);
  warm.destroy();
  await Bun.sleep(50);
  const baseline = fds();
  for (let i = 0; i < CYCLES; i++) {
    const w = await RawWs.open(t.port);
    w.text({ type: "auth", ref: 1, token });
    w.text({ type: "join", ref: 2, room: "churn" });
    expect(await w.reply(2)).toMatchObject({ type: "ok", room: "churn" });
    if (i % 2 === 0) {
      w.frame({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) }); // a polite close
      await w.end();
    } else {
      w.destroy(); // a dropped connection
    }
  }
  expect(await settle(baseline)).toBeLessThanOrEqual(baseline);
  await Bun.sleep(50);
  const m = t.app.metrics;
  expect(m.connectionsOpened - m.connectionsClosed).toBe(0);
  // The room forgot every churned member.
  const probe = await t.connect();
  await probe.request({ type: "auth", token });
  expect(await probe.request({ type: "who", room: "churn" })).toMatchObject({ type: "ok", members: [] });
}, 20_000);
