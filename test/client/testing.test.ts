import { afterEach, expect, test } from "bun:test";
import { startTestServer, type TestServer } from "../../src/testing.ts";
import { collect } from "./util.ts";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
});

test("two test servers in one process are isolated: own port, own database, own users", async () => {
  const one = await startTestServer();
  const two = await startTestServer();
  servers.push(one, two);
  expect(one.port).not.toBe(two.port);
  expect(one.port).toBeGreaterThan(0);

  const a = await one.signedIn({ username: "same_name" });
  // The same name is free on the other server: its database is separate.
  const b = await two.signedIn({ username: "same_name" });
  await a.client.join({ room: "lobby" });
  await b.client.join({ room: "lobby" });
  const gotB = collect(b.client);
  await a.client.send({ room: "lobby", body: "only on one" });
  await b.client.send({ room: "lobby", body: "only on two" });
  await gotB.waitFor(1);
  expect(gotB.bodies()).toEqual(["only on two"]);
  expect((await a.client.history({ room: "lobby" })).messages.map((m) => m.body)).toEqual(["only on one"]);
  expect((await b.client.history({ room: "lobby" })).messages.map((m) => m.body)).toEqual(["only on two"]);
  // A token of one server means nothing to the other.
  await expect(two.client({ token: a.token })).rejects.toThrow("signed out (unauthorized)");
  expect(await (await fetch(`${one.url}/healthz`)).json()).toEqual({ status: "ok" });
});

test("client() resolves once connected and signed in with the given token; stop() closes it", async () => {
  const s = await startTestServer();
  servers.push(s);
  const { token, username } = await s.signedIn();
  const c = await s.client({ token });
  expect(c.state).toBe("open");
  expect(c.user?.username).toBe(username);
  await s.stop();
  servers.length = 0;
  expect(c.state).toBe("closed");
});

test("restart() keeps an in-memory database and the port; clients reconnect", async () => {
  let s = await startTestServer();
  servers.push(s);
  const { client, token } = await s.signedIn({ backoff: { minMs: 5, maxMs: 20 } });
  await client.join({ room: "lobby" });
  await client.send({ room: "lobby", body: "before" });
  const port = s.port;
  const reopened = client.next("open");
  s = await s.restart();
  servers[0] = s;
  await reopened;
  expect(s.port).toBe(port);
  expect(client.token).toBe(token);
  expect((await client.history({ room: "lobby" })).messages.map((m) => m.body)).toEqual(["before"]);
});

test("restart() resolves once its clients have seen the close: a request made at once waits for the new server, 20 times in 20", async () => {
  let s = await startTestServer();
  servers.push(s);
  const { client } = await s.signedIn({ backoff: { minMs: 5, maxMs: 20 } });
  await client.join({ room: "lobby" });
  for (let i = 0; i < 20; i++) {
    s = await s.restart();
    servers[0] = s;
    expect(client.state).not.toBe("open");
    expect(await client.who({ room: "lobby" })).toEqual({ members: [client.user!.username] });
  }
});
