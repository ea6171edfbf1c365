/**
 * What an operator reads: /metrics in Prometheus text format, JSON log lines that never
 * hold a password or a token, a configurable log level, and /protocol.json.
 */
import Ajv2020 from "ajv/dist/2020";
import { beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { ErrorCode, requestTypes } from "../../src/protocol/index.ts";
import { binarySuite, binaryTmp, emptyFolderWithBinary, Instance } from "./binary.ts";

const { start, connect } = binarySuite();

interface Family {
  type: string;
  help: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

/**
 * A strict reader of the text exposition format (0.0.4): HELP and TYPE once per family
 * and before its samples, each family's samples contiguous, sample names belonging to
 * their family, label values quoted and escaped, values numeric. Throws on a violation.
 */
function parseExposition(text: string): Map<string, Family> {
  expect(text.endsWith("\n")).toBe(true);
  const families = new Map<string, Family>();
  const finished = new Set<string>();
  let current: string | null = null;
  const open = (name: string) => {
    if (current === name) return families.get(name)!;
    if (current) finished.add(current);
    if (finished.has(name)) throw new Error(`family ${name} is not contiguous`);
    current = name;
    if (!families.has(name)) families.set(name, { type: "", help: "", samples: [] });
    return families.get(name)!;
  };
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      const f = open(name);
      if (kind === "TYPE") {
        if (f.type || f.samples.length > 0) throw new Error(`TYPE of ${name} repeated or after samples`);
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) throw new Error(`bad type ${rest}`);
        f.type = rest;
      } else {
        if (f.help) throw new Error(`HELP of ${name} repeated`);
        f.help = rest;
      }
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const [, name, rawLabels = "", rawValue] = sample as unknown as [string, string, string | undefined, string];
    const base: string | null = current && (name === current || (families.get(current)!.type === "histogram" && /_(bucket|sum|count)$/.test(name)))
      ? current
      : name;
    if (base !== current || !name.startsWith(base)) throw new Error(`sample ${name} outside its family (in ${current})`);
    const labels: Record<string, string> = {};
    for (const m of rawLabels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g)) labels[m[1]!] = m[2]!;
    if (rawLabels.replace(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g, "") !== "") throw new Error(`bad labels ${rawLabels}`);
    const value = rawValue === "+Inf" ? Infinity : Number(rawValue);
    if (Number.isNaN(value)) throw new Error(`bad value in ${line}`);
    families.get(base)!.samples.push({ name, labels, value });
  }
  for (const [name, f] of families) if (!f.type || !f.help) throw new Error(`${name} lacks TYPE or HELP`);
  return families;
}

const value = (m: Map<string, Family>, family: string, labels: Record<string, string> = {}, name = family) =>
  m.get(family)?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

async function scrape(inst: Instance): Promise<Map<string, Family>> {
  const res = await fetch(`${inst.url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
  return parseExposition(await res.text());
}

test("/metrics is valid exposition format and its series move with traffic", async () => {
  const inst = await start();
  const before = await scrape(inst);
  // Every request type and error code has a series from the start.
  for (const type of requestTypes) expect(value(before, "switchboard_requests_total", { type })).toBe(0);
  for (const code of ErrorCode.options) expect(value(before, "switchboard_errors_total", { code })).toBe(0);
  expect(value(before, "switchboard_connections")).toBe(0);
  expect(value(before, "switchboard_database_bytes")).toBeGreaterThan(0);
  // The process families of Prometheus' own clients, read from the binary's process.
  const stat = readFileSync(`/proc/${inst.proc.pid}/status`, "utf8");
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(stat)?.[1]);
  expect(value(before, "process_resident_memory_bytes")! / 1024).toBeGreaterThan(rssKb / 2);
  expect(value(before, "process_resident_memory_bytes")! / 1024).toBeLessThan(rssKb * 2);
  const fds = readdirSync(`/proc/${inst.proc.pid}/fd`).length;
  expect(Math.abs(value(before, "process_open_fds")! - fds)).toBeLessThanOrEqual(3);
  expect(value(before, "process_max_fds")).toBeGreaterThan(value(before, "process_open_fds")!);
  expect(value(before, "process_cpu_seconds_total")).toBeGreaterThan(0);
  const started = value(before, "process_start_time_seconds")!;
  expect(started).toBeLessThanOrEqual(Date.now() / 1000 + 1);
  expect(started).toBeGreaterThan(Date.now() / 1000 - 120);

  const s = await connect(inst);
  await s.request({ type: "signup", username: "edsger", password: "goto considered harmful" });
  await s.request({ type: "join", room: "metrics" });
  for (let i = 0; i < 3; i++) await s.request({ type: "send", room: "metrics", body: `b${i}` });
  await s.request({ type: "send", room: "elsewhere", body: "x" }); // not_joined
  await s.request({ type: "nope" }); // unknown_type
  s.sendRaw("{not json");
  await s.next((f) => f.type === "error" && f.code === "bad_request");

  const after = await scrape(inst);
  expect(value(after, "switchboard_connections")).toBe(1);
  expect(value(after, "switchboard_connections_opened_total")).toBe(1);
  expect(value(after, "switchboard_requests_total", { type: "signup" })).toBe(1);
  expect(value(after, "switchboard_requests_total", { type: "join" })).toBe(1);
  expect(value(after, "switchboard_requests_total", { type: "send" })).toBe(4);
  expect(value(after, "switchboard_requests_total", { type: "invalid" })).toBe(2);
  expect(value(after, "switchboard_errors_total", { code: "not_joined" })).toBe(1);
  expect(value(after, "switchboard_errors_total", { code: "unknown_type" })).toBe(1);
  expect(value(after, "switchboard_errors_total", { code: "bad_request" })).toBe(1);
  expect(value(after, "switchboard_messages_stored_total")).toBe(3);
  expect(value(after, "switchboard_commits_total")).toBe(3); // one send at a time: a commit each
  expect(value(after, "switchboard_rooms")).toBe(1);
  expect(value(after, "switchboard_rooms_active")).toBe(1);

  const latency = after.get("switchboard_send_latency_seconds")!;
  expect(latency.type).toBe("histogram");
  const buckets = latency.samples.filter((x) => x.name.endsWith("_bucket"));
  expect(buckets.at(-1)!.labels.le).toBe("+Inf");
  const le = (i: number) => (buckets[i]!.labels.le === "+Inf" ? Infinity : Number(buckets[i]!.labels.le));
  for (let i = 1; i < buckets.length; i++) {
    expect(le(i)).toBeGreaterThan(le(i - 1));
    expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value); // cumulative
  }
  expect(buckets.at(-1)!.value).toBe(3);
  expect(value(after, "switchboard_send_latency_seconds", {}, "switchboard_send_latency_seconds_count")).toBe(3);
  const sum = value(after, "switchboard_send_latency_seconds", {}, "switchboard_send_latency_seconds_sum")!;
  expect(sum).toBeGreaterThan(0);
  expect(sum).toBeLessThan(3); // seconds, not milliseconds

  // The checkpointer thread runs inside the binary: it folds these writes into the
  // database within a few of its 200 ms intervals (no event to await from outside).
  let folded = after;
  for (const until = performance.now() + 3000; !(value(folded, "switchboard_wal_checkpoints_total")! > 0) && performance.now() < until; ) {
    await Bun.sleep(50);
    folded = await scrape(inst);
  }
  expect(value(folded, "switchboard_wal_checkpoints_total")).toBeGreaterThan(0);
  expect(value(folded, "switchboard_wal_checkpointed_frames_total")).toBeGreaterThan(0);
  // A few writes never take the WAL near 64 MiB: nothing to empty.
  expect(value(folded, "switchboard_wal_restarts_total")).toBe(0);

  // A retry of a nonce stores nothing: counted as deduplicated, and as no commit.
  for (let i = 0; i < 2; i++) expect(await s.request({ type: "send", room: "metrics", body: "once", nonce: "n-1" })).toMatchObject({ seq: 4 });
  const retried = await scrape(inst);
  expect(value(retried, "switchboard_messages_stored_total")).toBe(4);
  expect(value(retried, "switchboard_messages_deduplicated_total")).toBe(1);
  expect(value(retried, "switchboard_commits_total")).toBe(4);

  await s.close(1000);
  const closed = await scrape(inst);
  expect(value(closed, "switchboard_connections")).toBe(0);
  expect(value(closed, "switchboard_connections_closed_total", { code: "1000" })).toBe(1);
});

test("logs are one JSON object per line and never hold a password or a token, even at debug level", async () => {
  const inst = await start(undefined, ["--log-level", "debug"]);
  const password = "pw-Zebra-Quartz-91731";
  const wrong = "pw-Wrong-Mango-55102";
  const a = await connect(inst);
  const signup = await a.request({ type: "signup", username: "margaret", password });
  expect(signup.type).toBe("ok");
  const b = await connect(inst);
  const login = await b.request({ type: "login", username: "margaret", password });
  expect(login.type).toBe("ok");
  expect(await b.request({ type: "login", username: "margaret", password: wrong })).toMatchObject({ code: "invalid_credentials" });
  const c = await connect(inst);
  expect(await c.request({ type: "auth", token: login.token })).toMatchObject({ type: "ok" });
  expect(await c.request({ type: "auth", token: `${login.token}x` })).toMatchObject({ code: "unauthorized" });
  await c.request({ type: "join", room: "secrets" });
  expect(await c.request({ type: "send", room: "secrets", body: "hello" })).toMatchObject({ type: "ok" });
  // Secrets inside frames that fail: a too-short signup, a legacy signup, a malformed auth.
  await a.request({ type: "signup", username: "x", password: wrong });
  a.sendRaw({ username: "margaret", password: wrong });
  await a.next((f) => f.type === "error");
  await a.request({ type: "auth", token: { length: { toString: password } } });
  await c.request({ type: "logout", all: true });
  expect(await inst.stop()).toBe(0);

  const secrets = [password, wrong, signup.token as string, login.token as string];
  for (const secret of secrets) {
    expect(secret.length).toBeGreaterThan(10);
    expect(inst.stderr).not.toContain(secret);
  }
  const lines = inst.stderr.trimEnd().split("\n");
  expect(lines.length).toBeGreaterThanOrEqual(3);
  for (const line of lines) {
    const entry = JSON.parse(line) as Record<string, unknown>;
    expect(entry).toMatchObject({ time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/), level: expect.any(String), event: expect.any(String) });
  }
  // What an operator watching for guessing and abuse sees, at info, without the name tried.
  const info = (event: string) => inst.lines.filter((l) => l.event === event && l.level === "info");
  expect(info("signin_failed")).toEqual([expect.objectContaining({ type: "login", address: "127.0.0.1" })]);
  expect(info("auth_refused")).toEqual([expect.objectContaining({ type: "auth", address: "127.0.0.1" })]);
  expect(info("logout")).toEqual([expect.objectContaining({ all: true, revoked: 2 })]);
  expect(info("connection_closed").some((l) => l.code === 4001 && l.reason === "session revoked")).toBe(true);
  expect(inst.stderr).not.toContain("margaret");
});

test("--log-level warn drops info lines", async () => {
  // No `listening` line at this level: find a free port first and wait for /healthz.
  const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = probe.port!;
  await probe.stop(true);
  const dir = emptyFolderWithBinary();
  const proc = Bun.spawn(["./switchboard", "--log-level", "warn", "--port", String(port), "--host", "127.0.0.1"], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "", TMPDIR: binaryTmp() },
    stderr: "pipe",
    stdout: "ignore",
  });
  let healthy = false;
  for (let i = 0; i < 100 && !healthy && proc.exitCode === null; i++) {
    healthy = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
    if (!healthy) await Bun.sleep(20); // nothing to await: the server says nothing at this level
  }
  expect(healthy).toBe(true);
  proc.kill("SIGTERM");
  const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  expect(code).toBe(0);
  expect(stderr).toBe("");
});

describe("/protocol.json", () => {
  type Schema = Record<string, unknown>;
  let doc: Schema;
  // Strict: a keyword a standard validator does not know, or a misplaced one, fails the
  // compile. (Formats such as date-time are annotations here; zod adds a pattern too.)
  const ajv = new Ajv2020({ strict: true, validateFormats: false, allErrors: true });
  const validator = (name?: string) => (name ? ajv.getSchema(`#/$defs/${name}`)! : ajv.getSchema("#")!);
  const valid = (name: string | undefined, frame: unknown) => validator(name)(frame);

  beforeAll(async () => {
    const inst = await start();
    const res = await fetch(`${inst.url}/protocol.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("json");
    doc = (await res.json()) as Schema;
    await inst.stop();
    ajv.addSchema(doc, "#");
  });

  test("one 2020-12 schema that a strict validator compiles, with every request type, reply and event under $defs", () => {
    expect(doc.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
    expect(doc.title).toBe("switchboard.v1");
    expect(ajv.compile(doc)).toBeFunction();
    const defs = doc.$defs as Record<string, Schema>;
    expect(Object.keys(defs).sort()).toEqual(
      [
        ...requestTypes.map((t) => `request.${t}`),
        ...requestTypes.map((t) => `ok.${t}`),
        "request", "error", "reply", "event.message", "event.presence", "event", "legacy.signup",
      ].sort(),
    );
    for (const type of requestTypes) {
      expect((defs[`request.${type}`]!.properties as Record<string, Schema>).type).toMatchObject({ const: type });
      expect(defs[`request.${type}`]!.required).toContain("type");
    }
    expect(((defs.error!.properties as Record<string, Schema>).code as Schema).enum).toEqual(ErrorCode.options);
    // Only the root names the dialect (2020-12 allows $schema only at a resource's root).
    expect(JSON.stringify(defs)).not.toContain("$schema");
  });

  test("sample frames validate against it, and invalid ones do not", () => {
    const requests = [
      { type: "signup", ref: 1, username: "ada_l", password: "eight chars" },
      { type: "send", ref: "c-1", room: "lobby", body: "hi", nonce: "n1" },
      { type: "join", room: "lobby", since: 0 },
      { type: "history", room: "lobby", before: 10, limit: 100 },
      { type: "ping" },
    ];
    for (const frame of requests) {
      expect(valid("request", frame)).toBe(true);
      expect(valid(undefined, frame)).toBe(true);
    }
    const invalid = [
      { type: "send", room: "Lobby", body: "hi" }, // room pattern
      { type: "send", room: "lobby", body: "" }, // too short
      { type: "join", room: "lobby", since: 2.5 }, // not an integer
      { type: "history", room: "lobby", limit: 101 },
      { type: "signup", username: "ada" }, // no password
      { type: "Ping" }, // case-sensitive
    ];
    for (const frame of invalid) {
      expect(valid("request", frame)).toBe(false);
      expect(valid(undefined, frame)).toBe(false);
    }

    const at = "2026-11-28T15:00:00.000Z";
    const message = { type: "message", room: "lobby", seq: 1, user: "ada", body: "hi", at };
    expect(valid("event.message", message)).toBe(true);
    expect(valid("event", { type: "presence", room: "lobby", user: "ada", state: "join" })).toBe(true);
    expect(valid("event", { type: "presence", room: "lobby", user: "ada", state: "away" })).toBe(false);
    // Replies: whole frames, `type` and `ref` included.
    expect(valid("ok.send", { type: "ok", ref: 3, seq: 3, at })).toBe(true);
    expect(valid("ok.send", { type: "ok", ref: 3, seq: 0, at })).toBe(false);
    expect(valid("ok.join", { type: "ok", ref: "j", room: "lobby", seq: 0, members: ["ada"], recovered: true })).toBe(true);
    expect(valid("ok.history", { type: "ok", messages: [{ room: "lobby", seq: 1, user: "ada", body: "hi", at }], hasMore: false })).toBe(true);
    expect(valid("reply", { type: "ok" })).toBe(true);
    expect(valid("reply", { type: "error", ref: 7, code: "not_joined", message: "join first" })).toBe(true);
    expect(valid("reply", { type: "error", ref: 7, code: "no_such_code", message: "?" })).toBe(false);
    expect(valid(undefined, message)).toBe(true);
  });

  // PROTOCOL.md: "Unknown extra fields are ignored": the request schemas are zod's input
  // side, without `additionalProperties: false`, so clients validate as the server accepts.
  test("request schemas allow unknown extra fields, as the server does", () => {
    expect(valid("request", { type: "ping", client: "cli/1.0" })).toBe(true);
  });

  test("the legacy signup form ({username, password}, no type) has its own schema", () => {
    expect(valid("legacy.signup", { username: "ada_l", password: "eight chars" })).toBe(true);
    expect(valid("legacy.signup", { username: "ada_l" })).toBe(false);
    expect(valid("legacy.signup", { username: "a", password: "eight chars" })).toBe(false);
    expect(valid("legacy.signup", { username: "ada_l", password: "short" })).toBe(false);
  });
});

test("throttled: at most one entry per interval, the dropped ones counted in the next", async () => {
  const { throttled } = await import("../../src/log.ts");
  const got: Array<Record<string, unknown> | undefined> = [];
  let now = 0;
  const log = throttled((_event, fields) => got.push(fields), 1000, () => now);
  log("e", { n: 1 });
  now = 999;
  log("e", { n: 2 });
  log("e", { n: 3 });
  expect(got).toEqual([{ n: 1 }]);
  now = 1000;
  log("e", { n: 4 });
  now = 2500;
  log("e", { n: 5 });
  expect(got).toEqual([{ n: 1 }, { n: 4, suppressed: 2 }, { n: 5 }]);
});
