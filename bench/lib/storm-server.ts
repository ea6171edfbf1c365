/**
 * Switchboard for the presence bench (bench/presence.ts): the real server
 * (`switchboard/testing`, in-memory database) with a stand-in for argon2, so that
 * thousands of distinct users can sign up in a moment. Prints {"port":N}.
 */
import { startTestServer } from "../../src/testing.ts";

const t = await startTestServer({
  hasher: { hash: async (p) => `plain:${p}`, verify: async (h, p) => h === `plain:${p}` },
  config: { SIGNIN_FAILS_PER_ADDRESS: 1_000_000 },
});
process.stdout.write(JSON.stringify({ port: t.port }) + "\n");
process.on("SIGTERM", () => void t.stop().then(() => process.exit(0)));
