import { afterEach, expect, test } from "bun:test";
import { signedIn, startApp, type TestApp } from "../helpers.ts";

let t: TestApp;
afterEach(() => t?.stop());

test("signup, join, send, receive own message", async () => {
  t = await startApp();
  const { s, name } = await signedIn(t);
  expect(await s.request({ type: "join", room: "lobby" })).toMatchObject({ type: "ok", room: "lobby", seq: 0, members: [name] });
  const ok = await s.request({ type: "send", room: "lobby", body: "hello" });
  expect(ok).toMatchObject({ type: "ok", seq: 1 });
  const [m] = await s.messages("lobby", 1);
  expect(m).toEqual({ type: "message", room: "lobby", seq: 1, user: name, body: "hello", at: ok.at });
});
