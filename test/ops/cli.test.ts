/** The binary's command line: help, version, a flag per setting, one-line errors, migrate. */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { settings } from "../../src/config.ts";
import { binaryTmp, cleanup, emptyFolderWithBinary, ensureBinary, Instance, ROOT, runOnce } from "./binary.ts";

beforeAll(() => {
  ensureBinary();
});
afterAll(cleanup);

const flag = (name: string) => `--${name.toLowerCase().replaceAll("_", "-")}`;

test("--help lists a flag and the variable of every setting, and the subcommands", async () => {
  const { code, stdout, stderr } = await runOnce(emptyFolderWithBinary(), ["--help"]);
  expect(code).toBe(0);
  expect(stderr).toBe("");
  for (const name of Object.keys(settings)) expect(stdout).toMatch(new RegExp(`^ +${flag(name)} +${name} `, "m"));
  for (const cmd of ["serve", "migrate", "backup FILE", "--version"]) expect(stdout).toContain(cmd);
  // Where settings come from, and what relative paths are relative to.
  expect(stdout).toContain(".env, .env.local and .env.$NODE_ENV read from the working\ndirectory");
  expect(stdout).toContain("relative paths, DB_PATH's ./data included, are from the working directory");
});

test("--version prints the package version", async () => {
  expect(await runOnce(emptyFolderWithBinary(), ["--version"])).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
});

test("a bunfig.toml in the working directory is not loaded (its preload would run code); a .env is read", async () => {
  const dir = emptyFolderWithBinary();
  await Bun.write(join(dir, "hook.ts"), `require("node:fs").writeFileSync(${JSON.stringify(join(dir, "ran"))}, "");`);
  await Bun.write(join(dir, "bunfig.toml"), 'preload = ["./hook.ts"]\n');
  expect(await runOnce(dir, ["--version"])).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
  expect(existsSync(join(dir, "ran"))).toBe(false);
  // The documented other side: settings from a .env file do apply.
  await Bun.write(join(dir, ".env"), "PORT=eighty\n");
  const bad = await runOnce(dir, ["migrate"]);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toContain("PORT");
});

test.each<{ args: string[]; env: Record<string, string>; setting: string }>([
  { args: [], env: { PORT: "eighty" }, setting: "PORT" },
  { args: ["--port", "70000"], env: {}, setting: "PORT" },
  { args: ["--db-sync=SOMETIMES"], env: {}, setting: "DB_SYNC" },
  { args: [], env: { LOG_LEVEL: "verbose" }, setting: "LOG_LEVEL" },
  { args: ["--send-rate", "-1"], env: {}, setting: "SEND_RATE" },
  { args: ["--allowed-origins", "example.com"], env: {}, setting: "ALLOWED_ORIGINS" },
  { args: ["--max-frame-bytes"], env: {}, setting: "--max-frame-bytes" },
  { args: ["--colour", "red"], env: {}, setting: "--colour" },
])("a bad setting ($setting) prints one line naming it and exits 1, without a stack trace", async ({ args, env, setting }) => {
  const dir = emptyFolderWithBinary();
  const { code, stdout, stderr } = await runOnce(dir, args, { env });
  expect(code).toBe(1);
  expect(stdout).toBe("");
  expect(stderr).toMatch(new RegExp(`^switchboard: [^\\n]*${setting}[: ][^\\n]*\\n$`));
  expect(readdirSync(dir)).toEqual(["switchboard"]); // nothing created
});

test("a port in use and an unopenable database are one-line errors naming the setting", async () => {
  const busy = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  try {
    const dir = emptyFolderWithBinary();
    const inUse = await runOnce(dir, ["--port", String(busy.port), "--host", "127.0.0.1"]);
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toMatch(/^switchboard: PORT: cannot listen on 127\.0\.0\.1:\d+: [^\n]* \(EADDRINUSE: the port is in use\)\n$/);
    // Found before the database: no data/ folder, no new database, no lock.
    expect(readdirSync(dir)).toEqual(["switchboard"]);
  } finally {
    busy.stop(true);
  }
  // An address the machine does not have (TEST-NET-1), or a name that cannot resolve (.invalid): the host's fault, not the port's.
  for (const host of ["192.0.2.1", "name.invalid", "not_a_host"]) {
    const hostDir = emptyFolderWithBinary();
    const badHost = await runOnce(hostDir, ["--port", "0", "--host", host]);
    expect(badHost.code).toBe(1);
    expect(badHost.stderr).toMatch(new RegExp(`^switchboard: HOST: cannot listen on ${host.replaceAll(".", "\\.")}:0: [^\n]* \\(.*(not an address|does not resolve).*\\)\n$`));
    expect(readdirSync(hostDir)).toEqual(["switchboard"]);
  }
  // Held by another Switchboard (Bun's production mode would share the port with SO_REUSEPORT).
  const first = await Instance.start(emptyFolderWithBinary());
  try {
    const second = await runOnce(emptyFolderWithBinary(), ["--port", String(first.port), "--host", "127.0.0.1"]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^switchboard: PORT: cannot listen on 127\.0\.0\.1:\d+: [^\n]*\n$/);
  } finally {
    await first.stop();
  }
  // A privileged port, for a user that may not bind one (where the kernel says ports below 1024 are privileged).
  if (Number(readFileSync("/proc/sys/net/ipv4/ip_unprivileged_port_start", "utf8")) > 80) {
    const privileged = await runBound(emptyFolderWithBinary(), ["--port", "80", "--host", "127.0.0.1"], []);
    expect(privileged.code).toBe(1);
    expect(privileged.stderr).toMatch(/^switchboard: PORT: cannot listen on 127\.0\.0\.1:80: [^\n]* \(EACCES: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE\)\n$/);
  }
  const noDb = await runOnce(emptyFolderWithBinary(), ["migrate", "--db-path", "/proc/no/such/dir/x.db"]);
  expect(noDb.code).toBe(1);
  expect(noDb.stderr).toMatch(/^switchboard: DB_PATH: cannot open \/proc\/no\/such\/dir\/x\.db: [^\n]*\n$/);
});

const root = process.getuid?.() === 0;

/**
 * Runs the binary in `dir` as a user that file modes bind: root opens whatever a mode
 * says, so as root it runs as nobody, with the folders on the way and `shared` opened
 * to everyone (0777) and what is left as it is owned by root.
 */
async function runBound(dir: string, args: string[], shared: string[]): Promise<{ code: number; stderr: string }> {
  if (root) for (const d of [dirname(dir), dir, join(dir, "data"), ...shared]) if (existsSync(d)) chmodSync(d, 0o777);
  const proc = Bun.spawn([...(root ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []), "./switchboard", ...args], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  return { code, stderr };
}

test("a database file the process may read but not write is a one-line error at start (it opened, then failed every write)", async () => {
  const dir = emptyFolderWithBinary();
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
  const db = join(dir, "data/switchboard.db");
  chmodSync(db, 0o444);
  const { code, stderr } = await runBound(dir, ["migrate"], [`${db}.lock`]);
  expect(code).toBe(1);
  expect(stderr).toBe(
    "switchboard: DB_PATH: cannot open ./data/switchboard.db: attempt to write a readonly database (this user must be able to write the file, its folder, and any -wal and -shm beside it)\n",
  );
  // The other side: writable again, it opens.
  chmodSync(db, 0o644);
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
});

test("a lock file or a database file this user cannot open is named, with what to fix (as after a `migrate` run as root)", async () => {
  const dir = emptyFolderWithBinary();
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
  const db = join(dir, "data/switchboard.db");
  const lock = `${db}.lock`;
  // The lock: the database is open to this user, the lock file is not.
  chmodSync(lock, root ? 0o600 : 0o000);
  if (!root) chmodSync(db, 0o600);
  const locked = await runBound(dir, ["migrate"], [db]);
  expect(locked.code).toBe(1);
  expect(locked.stderr).toMatch(
    /^switchboard: DB_PATH: cannot open \/[^\n]*\/data\/switchboard\.db\.lock, the lock beside the database: unable to open database file \(this user must be able to read and write it\)\n$/,
  );
  // The database: the lock file is open to this user, the database is not.
  chmodSync(lock, 0o600);
  chmodSync(db, root ? 0o600 : 0o000);
  const closed = await runBound(dir, ["migrate"], [lock]);
  expect(closed.code).toBe(1);
  expect(closed.stderr).toBe(
    "switchboard: DB_PATH: cannot open ./data/switchboard.db: unable to open database file (this user must be able to read and write the file and its folder)\n",
  );
  // The other side: both open to this user, it starts.
  chmodSync(db, 0o600);
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
});

test("what the binary creates is its owner's only under umask 022: folders 0700, database, -wal, -shm, .lock and backups 0600", async () => {
  const dir = emptyFolderWithBinary();
  const sh = (cmd: string) => Bun.spawn(["sh", "-c", `umask 022 && ${cmd}`], { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } }).exited;
  expect(await sh("./switchboard migrate --db-path ./a/b/chat.db")).toBe(0);
  const mode = (p: string) => statSync(join(dir, p)).mode & 0o777;
  expect([mode("a"), mode("a/b")]).toEqual([0o700, 0o700]);
  expect([mode("a/b/chat.db"), mode("a/b/chat.db.lock")]).toEqual([0o600, 0o600]);
  expect(await sh("./switchboard backup ./copy.db --db-path ./a/b/chat.db")).toBe(0);
  expect(mode("copy.db")).toBe(0o600);
});

test("without a writable TMPDIR, serve says so in one line; migrate needs no TMPDIR", async () => {
  const dir = emptyFolderWithBinary();
  const env = { TMPDIR: join(dir, "missing") };
  const serve = await runOnce(dir, ["--port", "0"], { env });
  expect(serve.code).toBe(1);
  expect(serve.stderr).toMatch(/^switchboard: cannot load the argon2 native module: TMPDIR \([^)]*missing\) must exist, be writable and allow executing files \(not noexec\)\n$/);
  expect((await runOnce(dir, ["migrate"], { env })).code).toBe(0);
});

test("migrate creates and migrates the database, is idempotent, and the embedded migrations match migrations/", async () => {
  const dir = emptyFolderWithBinary();
  const onDisk = readdirSync(join(ROOT, "migrations")).filter((f) => f.endsWith(".sql"));
  const tags = onDisk.map((f) => f.replace(/\.sql$/, "")).sort();
  expect(await runOnce(dir, ["migrate"])).toEqual({ code: 0, stdout: `migrated ./data/switchboard.db: applied ${tags.join(", ")}\n`, stderr: "" });
  expect(await runOnce(dir, ["migrate"])).toEqual({ code: 0, stdout: "migrated ./data/switchboard.db: up to date\n", stderr: "" });
  const file = join(dir, "data/switchboard.db");
  expect(existsSync(`${file}-wal`)).toBe(false);
  const db = new Database(file, { readonly: true });
  try {
    expect(db.query("SELECT count(*) AS n FROM __drizzle_migrations").get()).toEqual({ n: onDisk.length });
    const tables = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((t) => t.name);
    expect(tables).toEqual(expect.arrayContaining(["users", "sessions", "rooms", "messages"]));
  } finally {
    db.close();
  }
});

test("a database migrated by a newer version is refused by migrate and serve, in one line, and left as it was", async () => {
  const dir = emptyFolderWithBinary();
  expect((await runOnce(dir, ["migrate"])).code).toBe(0);
  const file = join(dir, "data/switchboard.db");
  const db = new Database(file);
  db.run("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('from-the-future', 4102444800000)");
  db.close();
  for (const args of [["migrate"], []]) {
    const r = await runOnce(dir, args);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^switchboard: DB_PATH: cannot open \.\/data\/switchboard\.db: the database was migrated by a newer Switchboard \(its latest migration is from 2100-01-01T00:00:00\.000Z[^\n]*restore a backup[^\n]*\n$/);
  }
  const after = new Database(file, { readonly: true });
  expect(after.query("SELECT count(*) AS n FROM __drizzle_migrations").get()).toEqual({ n: readdirSync(join(ROOT, "migrations")).filter((f) => f.endsWith(".sql")).length + 1 });
  after.close();
});

test("one server per database: a second serve or migrate on it exits 1 in one line; after the stop it may", async () => {
  const dir = emptyFolderWithBinary();
  const first = await Instance.start(dir);
  const inUse = /^switchboard: DB_PATH: \.\/data\/switchboard\.db is in use by another switchboard [^\n]*stop it first\n$/;
  try {
    const second = await runOnce(dir, ["--port", "0"]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(inUse);
    const migrate = await runOnce(dir, ["migrate"]);
    expect(migrate.code).toBe(1);
    expect(migrate.stderr).toMatch(inUse);
    // A backup is fine while it serves.
    expect((await runOnce(dir, ["backup", "copy.db"])).code).toBe(0);
  } finally {
    await first.stop();
  }
  expect(await runOnce(dir, ["migrate"])).toMatchObject({ code: 0, stderr: "" });
});

test("one lock per database file, whatever the name: a symlink to it (even made before the file) is the same database", async () => {
  const dir = emptyFolderWithBinary();
  mkdirSync(join(dir, "data"));
  // Dangling until the first server creates the file through it.
  symlinkSync("real.db", join(dir, "data/alias.db"));
  const first = await Instance.start(dir, ["--db-path", "data/alias.db"]);
  try {
    expect(existsSync(join(dir, "data/real.db"))).toBe(true);
    // The lock is named after the real file, and no journal file sits beside it.
    expect(readdirSync(join(dir, "data")).filter((f) => f.includes(".lock")).sort()).toEqual(["real.db.lock"]);
    const second = await runOnce(dir, ["--port", "0", "--db-path", "data/real.db"]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^switchboard: DB_PATH: data\/real\.db is in use by another switchboard [^\n]*real\.db\.lock\)?: stop it first\n$/);
  } finally {
    expect(await first.stop()).toBe(0);
  }
});

test("a DB_PATH that is not a database leaves nothing beside it", async () => {
  const dir = emptyFolderWithBinary();
  writeFileSync(join(dir, "notes.txt"), "not a database, but long enough to have a header's worth of bytes in it ".repeat(4));
  const r = await runOnce(dir, ["migrate", "--db-path", "notes.txt"]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/^switchboard: DB_PATH: cannot open notes\.txt: [^\n]*\n$/);
  expect(readdirSync(dir).sort()).toEqual(["notes.txt", "switchboard"]);
});

test("flags mirror settings: --db-path takes effect over the default", async () => {
  const dir = emptyFolderWithBinary();
  const inst = await Instance.start(dir, ["--db-path", "elsewhere/chat.db"]);
  try {
    expect((await inst.waitFor("listening")).db).toBe("elsewhere/chat.db");
    expect(existsSync(join(dir, "elsewhere/chat.db"))).toBe(true);
    expect(existsSync(join(dir, "data"))).toBe(false);
  } finally {
    expect(await inst.stop()).toBe(0);
  }
});

test("the listening line's url is a URL for an IPv6 host too (in brackets)", async () => {
  const dir = emptyFolderWithBinary();
  const proc = Bun.spawn(["./switchboard", "--host", "::1", "--port", "0", "--db-path", ":memory:"], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "", TMPDIR: binaryTmp() },
    stderr: "pipe",
  });
  try {
    let text = "";
    for await (const chunk of proc.stderr) {
      text += new TextDecoder().decode(chunk);
      if (text.includes("\n")) break;
    }
    const url = String(JSON.parse(text.split("\n")[0]!).url);
    expect(url).toMatch(/^http:\/\/\[::1\]:\d+$/);
    expect(await (await fetch(`${url}/healthz`)).json()).toEqual({ status: "ok" });
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
  }
});

test("unknown subcommand and stray arguments are one-line errors", async () => {
  const dir = emptyFolderWithBinary();
  expect(await runOnce(dir, ["serv"])).toEqual({ code: 1, stdout: "", stderr: 'switchboard: unknown command "serv" (see --help)\n' });
  expect(await runOnce(dir, ["backup"])).toEqual({ code: 1, stdout: "", stderr: "switchboard: usage: switchboard backup FILE\n" });
  expect(await runOnce(dir, ["migrate", "now"])).toEqual({ code: 1, stdout: "", stderr: "switchboard: migrate takes no arguments (got now)\n" });
  expect(await runOnce(dir, ["serve", "now"])).toEqual({ code: 1, stdout: "", stderr: "switchboard: serve takes no arguments (got now)\n" });
});
