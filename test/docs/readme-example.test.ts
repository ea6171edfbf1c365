// The testing example of README.md, verbatim: the README must not lie.
import { expect, test } from "bun:test";
import { startTestServer } from "switchboard/testing";

test("my bot answers", async () => {
  const server = await startTestServer();
  const client = await server.client();
  await client.signup({ username: "ada", password: "correct horse battery" });
  await client.join({ room: "lobby" });
  expect((await client.send({ room: "lobby", body: "hi" })).seq).toBe(1);
  await server.stop();
});
