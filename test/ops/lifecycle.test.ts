/**
 * The binary's life: first start in an empty folder, restart, online backup, and the
 * graceful stop (1001 to clients, queued sends answered, WAL truncated, exit 0 in 2 s).
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { existsSync, readdirSync, readlinkSync, realpathSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { TestSocket, type Frame } from "../helpers.ts";
import { binarySuite, binaryTmp, emptyFolderWithBinary, Instance, runOnce } from "./binary.ts";

const PASSWORD = "correct horse battery staple";
const { start, connect } = binarySuite();
const walBytes = (db: string) => (existsSync(`${db}-wal`) ? statSync(`${db}-wal`).size : 0);

test("copied alone into an empty folder it creates ./data, migrates, serves, and keeps accounts across a restart", async () => {
  const dir = emptyFolderWithBinary();
  expect(readdirSync(dir)).toEqual(["switchboard"]);
  const first = await start(dir);
  expect(await first.waitFor("listening")).toMatchObject({
    db: "./data/switchboard.db",
    file: join(realpathSync(dir), "data/switchboard.db"),
    sync: "NORMAL",
    maxConnections: expect.any(Number),
    migrated: ["0000_accounts", "0001_rooms"],
  });
  expect(existsSync(join(dir, "data/switchboard.db"))).toBe(true);
  expect(await (await fetch(`${first.url}/healthz`)).json()).toEqual({ status: "ok" });

  // signup hashes with argon2: the native module must load from inside the binary.
  const a = await connect(first);
  const signup = await a.request({ type: "signup", username: "ada", password: PASSWORD });
  expect(signup).toMatchObject({ type: "ok", user: { id: 1, username: "ada" } });
  expect(readdirSync(binaryTmp()).some((f) => f.endsWith(".node"))).toBe(true);
  await a.request({ type: "join", room: "lobby" });
  expect(await a.request({ type: "send", room: "lobby", body: "before restart" })).toMatchObject({ type: "ok", seq: 1 });
  first.signal("SIGTERM");
  expect(await first.exited).toBe(0);

  const second = await start(dir);
  expect((await second.waitFor("listening")).migrated).toBeUndefined(); // nothing new to apply
  const b = await connect(second);
  expect(await b.request({ type: "login", username: "ada", password: PASSWORD })).toMatchObject({
    type: "ok",
    user: { id: 1, username: "ada" },
  });
  expect(await b.request({ type: "login", username: "ada", password: "not the password" })).toMatchObject({
    type: "error",
    code: "invalid_credentials",
  });
  const c = await connect(second);
  expect(await c.request({ type: "auth", token: signup.token })).toMatchObject({ type: "ok", user: { username: "ada" } });
  const history = await c.request({ type: "history", room: "lobby" });
  expect(history).toMatchObject({ type: "ok", hasMore: false, messages: [{ seq: 1, user: "ada", body: "before restart" }] });
});

test("backup while serving writes a copy that opens and holds the data; it refuses to overwrite", async () => {
  const dir = emptyFolderWithBinary();
  const inst = await start(dir);
  const s = await connect(inst);
  await s.request({ type: "signup", username: "grace", password: PASSWORD });
  await s.request({ type: "join", room: "ops" });
  for (let i = 1; i <= 3; i++) await s.request({ type: "send", room: "ops", body: `m${i}` });

  const made = await runOnce(dir, ["backup", "snap.db"]);
  expect(made).toMatchObject({ code: 0, stderr: "" });
  expect(made.stdout).toMatch(/^backed up \.\/data\/switchboard\.db to snap\.db \(\d+ bytes\)\n$/);
  // Still serving, and still writing, after the backup.
  expect(await s.request({ type: "send", room: "ops", body: "after" })).toMatchObject({ type: "ok", seq: 4 });

  const copy = new Database(join(dir, "snap.db"), { readonly: true });
  try {
    expect(copy.query("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" });
    expect(copy.query("SELECT username FROM users").all()).toEqual([{ username: "grace" }]);
    expect(copy.query("SELECT body FROM messages ORDER BY seq").all()).toEqual([{ body: "m1" }, { body: "m2" }, { body: "m3" }]);
  } finally {
    copy.close();
  }

  const again = await runOnce(dir, ["backup", "snap.db"]);
  expect(again.code).toBe(1);
  expect(again.stderr).toBe("switchboard: snap.db exists; choose a new file\n");
  const nowhere = await runOnce(dir, ["backup", "no/such/folder/snap.db"]);
  expect(nowhere).toEqual({ code: 1, stdout: "", stderr: "switchboard: no folder no/such/folder for no/such/folder/snap.db; create it first\n" });
});

test("a backup killed midway leaves snap.db.partial, never a snap.db cut short; the next one says so, and once it is gone succeeds", async () => {
  const dir = emptyFolderWithBinary();
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
  // 200 MB to copy: long enough to be caught writing.
  const db = new Database(join(dir, "data/switchboard.db"));
  db.run("CREATE TABLE filler (b BLOB)");
  db.run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) INSERT INTO filler SELECT zeroblob(1000000) FROM c");
  db.close();
  const partial = join(dir, "snap.db.partial");
  const proc = Bun.spawn(["./switchboard", "backup", "snap.db"], { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TMPDIR: binaryTmp() } });
  for (let i = 0; !(existsSync(partial) && statSync(partial).size > 0); i++) {
    if (i === 2000) throw new Error("the backup never started writing");
    await Bun.sleep(2); // nothing to await: the command prints only when done
  }
  proc.kill("SIGKILL"); // as a power loss would, or a signal: it cannot clean up
  await proc.exited;
  expect(existsSync(join(dir, "snap.db"))).toBe(false);
  expect(existsSync(partial)).toBe(true);

  const refused = await runOnce(dir, ["backup", "snap.db"]);
  expect(refused).toEqual({ code: 1, stdout: "", stderr: "switchboard: snap.db.partial exists, left by a backup that did not finish: delete it first\n" });
  rmSync(partial);
  const made = await runOnce(dir, ["backup", "snap.db"]);
  expect(made.code).toBe(0);
  expect(readdirSync(dir).sort()).toEqual(["data", "snap.db", "switchboard"]);
  const copy = new Database(join(dir, "snap.db"), { readonly: true });
  try {
    expect(copy.query("SELECT count(*) AS n FROM filler").get()).toEqual({ n: 200 });
  } finally {
    copy.close();
  }
});

test("a log reader that goes away (EPIPE on stderr) loses the log lines, not the server", async () => {
  const dir = emptyFolderWithBinary();
  const proc = Bun.spawn(["./switchboard", "--port", "0", "--host", "127.0.0.1"], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TMPDIR: binaryTmp() },
    stdout: "ignore",
    stderr: "pipe",
  });
  try {
    const reader = proc.stderr.getReader();
    let text = "";
    while (!text.includes('"listening"')) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`exited before listening: ${text}`);
      text += new TextDecoder().decode(value);
    }
    const port = Number(/"url":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(text)?.[1]);
    await reader.cancel(); // the pipe's reading end closes: the next log line fails with EPIPE
    const s = await TestSocket.open(`ws://127.0.0.1:${port}/ws`);
    // A refused sign-in is logged at info: the write fails, and used to end the process.
    await s.request({ type: "signup", username: "pipe", password: PASSWORD });
    expect(await s.request({ type: "login", username: "pipe", password: "wrong password!" })).toMatchObject({ code: "invalid_credentials" });
    expect(await s.request({ type: "ping" })).toMatchObject({ type: "ok" });
    expect(proc.exitCode).toBeNull();
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  } finally {
    proc.kill("SIGKILL");
  }
});

test("SIGTERM: queued sends get their ok, clients get 1001, the WAL is truncated, exit 0 within 2 s", async () => {
  const dir = emptyFolderWithBinary();
  const inst = await start(dir, ["--send-burst", "1000", "--send-rate", "1000"]);
  const sender = await connect(inst);
  await sender.request({ type: "signup", username: "linus", password: PASSWORD });
  await sender.request({ type: "join", room: "busy" });
  const idle = await connect(inst); // never signs in

  const replies: Array<Promise<Frame>> = [];
  for (let i = 0; i < 200; i++) replies.push(sender.request({ type: "send", room: "busy", body: `n${i}` }));
  await replies[0]; // the server is committing; most of the rest are on the wire or queued
  const signalledAt = performance.now();
  inst.signal("SIGTERM");

  const [senderClose, idleClose, code] = await Promise.all([sender.closed, idle.closed, inst.exited]);
  const elapsed = performance.now() - signalledAt;
  expect(senderClose.code).toBe(1001);
  expect(idleClose.code).toBe(1001);
  expect(code).toBe(0);
  expect(elapsed).toBeLessThan(2000);
  expect(inst.lines.map((l) => l.event)).toEqual(["listening", "shutting_down", "stopped"]);

  // Every reply that came is an ok, in seq order from 1; nothing committed went unanswered.
  expect(sender.frames.filter((f) => f.type === "error")).toEqual([]);
  const answered = sender.frames.filter((f) => f.type === "ok" && typeof f.at === "string");
  expect(answered.map((f) => f.seq)).toEqual(answered.map((_, i) => i + 1));
  expect(answered.length).toBeGreaterThan(0);
  const events = sender.frames.filter((f) => f.type === "message");
  expect(events.length).toBe(answered.length);

  const db = join(dir, "data/switchboard.db");
  expect(walBytes(db)).toBe(0);
  const check = new Database(db, { readonly: true });
  try {
    expect(check.query("SELECT count(*) AS n FROM messages").get()).toEqual({ n: answered.length });
  } finally {
    check.close();
  }
});

test("SIGHUP (a closing terminal) stops as gracefully as SIGTERM: clients get 1001, exit 0, the WAL truncated", async () => {
  const dir = emptyFolderWithBinary();
  const inst = await start(dir);
  const s = await connect(inst);
  await s.request({ type: "signup", username: "hanna", password: PASSWORD });
  inst.signal("SIGHUP");
  const [closed, code] = await Promise.all([s.closed, inst.exited]);
  expect(closed.code).toBe(1001);
  expect(code).toBe(0);
  expect(inst.lines.find((l) => l.event === "shutting_down")).toMatchObject({ signal: "SIGHUP" });
  expect(inst.lines.at(-1)?.event).toBe("stopped");
  expect(walBytes(join(dir, "data/switchboard.db"))).toBe(0);
});

/**
 * Runs `./switchboard args` in `dir` while another connection holds the database's write
 * lock (the start waits at its write probe, for up to busy_timeout, 5 s), sends SIGTERM
 * once it has the database open, then lets the lock go.
 */
async function signalledWhileStarting(dir: string, args: string[]): Promise<Instance> {
  const db = join(dir, "data/switchboard.db");
  const writer = new Database(db);
  writer.run("BEGIN IMMEDIATE");
  writer.run("PRAGMA user_version = 0");
  const inst = Instance.spawn(dir, args);
  try {
    // Once it has the database open, every module has loaded: it is starting.
    const fds = `/proc/${inst.proc.pid}/fd`;
    const opened = () =>
      readdirSync(fds).some((fd) => {
        try {
          return readlinkSync(join(fds, fd)) === realpathSync(db);
        } catch {
          return false; // closed meanwhile
        }
      });
    for (let i = 0; !opened(); i++) {
      if (i === 1000) throw new Error(`never opened the database:\n${inst.stderr}`);
      await Bun.sleep(5); // nothing to await: the process says nothing until it listens
    }
    inst.signal("SIGTERM");
    // migrate ends at the signal, while the lock is still held.
    if (args[0] === "migrate") expect(await inst.exited).toBe(143);
  } finally {
    writer.run("ROLLBACK");
    writer.close();
  }
  return inst;
}

test("a stop signal sent while serve starts is held until it listens, then stops it gracefully (exit 0); migrate it ends at once", async () => {
  const dir = emptyFolderWithBinary();
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
  const serving = await signalledWhileStarting(dir, []);
  expect(await serving.exited).toBe(0);
  expect(serving.lines.map((l) => l.event)).toEqual(["listening", "shutting_down", "stopped"]);
  expect(serving.lines[1]).toMatchObject({ signal: "SIGTERM" });
  // The other side: a command that does not serve keeps the default action (a long backup can be interrupted).
  const migrating = await signalledWhileStarting(dir, ["migrate"]);
  expect(migrating.stderr).toBe("");
});

/** A reader in another connection holding a snapshot makes wal_checkpoint(TRUNCATE) wait. */
async function slowShutdown(): Promise<{ inst: Instance; reader: Database; db: string }> {
  const dir = emptyFolderWithBinary();
  const inst = await start(dir);
  const s = await connect(inst);
  await s.request({ type: "signup", username: "barbara", password: PASSWORD });
  const db = join(dir, "data/switchboard.db");
  const reader = new Database(db);
  reader.run("BEGIN");
  reader.query("SELECT count(*) FROM users").get();
  inst.signal("SIGTERM");
  await inst.waitFor("checkpoint_waiting");
  return { inst, reader, db };
}

test("a slow shutdown (a reader blocks the checkpoint) still finishes once the reader lets go: exit 0, WAL truncated", async () => {
  const { inst, reader, db } = await slowShutdown();
  reader.run("COMMIT");
  reader.close();
  expect(await inst.exited).toBe(0);
  expect(inst.lines.at(-1)?.event).toBe("stopped");
  expect(walBytes(db)).toBe(0);
});

test("a second signal during a slow shutdown exits at once", async () => {
  const { inst, reader } = await slowShutdown();
  const at = performance.now();
  inst.signal("SIGINT");
  expect(await inst.exited).toBe(1);
  expect(performance.now() - at).toBeLessThan(500);
  expect(inst.lines.at(-1)).toMatchObject({ event: "forced_exit", level: "warn", signal: "SIGINT" });
  reader.close();
});

test("a reader that never lets go does not hold the stop past the 2 s deadline", async () => {
  const { inst, reader } = await slowShutdown();
  const at = performance.now();
  expect(await inst.exited).toBe(0);
  expect(performance.now() - at).toBeLessThan(2000);
  expect(inst.lines.map((l) => l.event).slice(-2)).toEqual(["checkpoint_incomplete", "stopped"]);
  reader.close();
});
