import { describe, expect, test } from "bun:test";
import { addressKey, TrustedProxies } from "../../src/ws/client-address.ts";

describe("TrustedProxies.clientAddress", () => {
  const proxies = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8, fd00::/8");

  test("a peer that is not a trusted proxy is the client, whatever its header says", () => {
    expect(proxies.clientAddress("198.51.100.4", "203.0.113.9")).toBe("198.51.100.4");
    expect(proxies.clientAddress("11.0.0.1", "203.0.113.9")).toBe("11.0.0.1"); // just outside 10.0.0.0/8
  });

  test("behind a trusted proxy, the rightmost address that is not a trusted proxy", () => {
    expect(proxies.clientAddress("127.0.0.1", "203.0.113.9")).toBe("203.0.113.9");
    expect(proxies.clientAddress("10.255.255.255", "203.0.113.9")).toBe("203.0.113.9"); // the subnet's last address
    // Two proxies: the inner one appended the outer one's address.
    expect(proxies.clientAddress("127.0.0.1", "203.0.113.9, 10.0.0.7")).toBe("203.0.113.9");
    // What the client wrote itself (left of the first untrusted hop) is ignored.
    expect(proxies.clientAddress("127.0.0.1", "1.1.1.1, 203.0.113.9")).toBe("203.0.113.9");
    expect(proxies.clientAddress("fd12::1", "2001:db8::5")).toBe("2001:db8::5");
  });

  test("several X-Forwarded-For headers arrive joined with commas; spaces and ports are allowed", () => {
    expect(proxies.clientAddress("127.0.0.1", "1.1.1.1,203.0.113.9 ,  10.0.0.7")).toBe("203.0.113.9");
    expect(proxies.clientAddress("127.0.0.1", "203.0.113.9:51234")).toBe("203.0.113.9");
    expect(proxies.clientAddress("127.0.0.1", "[2001:db8::5]:443")).toBe("2001:db8::5");
  });

  test("no header, an empty one, or a chain of trusted proxies only: the nearest known hop", () => {
    expect(proxies.clientAddress("127.0.0.1", null)).toBe("127.0.0.1");
    expect(proxies.clientAddress("127.0.0.1", "")).toBe("127.0.0.1");
    expect(proxies.clientAddress("127.0.0.1", "10.0.0.9, 10.0.0.7")).toBe("10.0.0.9");
  });

  test("a hop that is not an address stops the walk at the last trusted hop", () => {
    expect(proxies.clientAddress("127.0.0.1", "unknown")).toBe("127.0.0.1");
    expect(proxies.clientAddress("127.0.0.1", "203.0.113.9, garbage, 10.0.0.7")).toBe("10.0.0.7");
    expect(proxies.clientAddress("127.0.0.1", "203.0.113.9, , 10.0.0.7")).toBe("10.0.0.7");
  });

  test("an IPv4 peer in IPv6 form matches its IPv4 entry", () => {
    expect(proxies.clientAddress("::ffff:127.0.0.1", "203.0.113.9")).toBe("203.0.113.9");
  });

  test("with no trusted proxies the header is never read", () => {
    const none = TrustedProxies.parse("");
    expect(none.size).toBe(0);
    expect(none.clientAddress("127.0.0.1", "203.0.113.9")).toBe("127.0.0.1");
  });

  test("* trusts every peer", () => {
    const any = TrustedProxies.parse("*");
    expect(any.clientAddress("198.51.100.4", "203.0.113.9")).toBe("203.0.113.9");
    expect(any.clientAddress("2001:db8::1", "203.0.113.9")).toBe("203.0.113.9");
  });
});

describe("TrustedProxies.parse", () => {
  test("prefix lengths up to 32 for IPv4 and 128 for IPv6; one more is refused", () => {
    expect(TrustedProxies.parse("10.0.0.1/32").has("10.0.0.1")).toBe(true);
    expect(TrustedProxies.parse("10.0.0.1/32").has("10.0.0.2")).toBe(false);
    expect(TrustedProxies.parse("0.0.0.0/0").has("203.0.113.9")).toBe(true);
    expect(TrustedProxies.parse("2001:db8::1/128").has("2001:db8::1")).toBe(true);
    expect(() => TrustedProxies.parse("10.0.0.0/33")).toThrow("prefix length must be 0 to 32");
    expect(() => TrustedProxies.parse("2001:db8::/129")).toThrow("prefix length must be 0 to 128");
  });

  test("an entry that is neither an address nor a subnet is refused, by name", () => {
    expect(() => TrustedProxies.parse("127.0.0.1, proxy.internal")).toThrow('"proxy.internal" is not an IP address');
    expect(() => TrustedProxies.parse("10.0.0.0/8x")).toThrow("prefix length");
    expect(() => TrustedProxies.parse("10.0.0.0/")).toThrow("prefix length");
  });
});

describe("addressKey", () => {
  test("IPv4 stays as it is; an IPv4-mapped IPv6 address is its IPv4", () => {
    expect(addressKey("203.0.113.9")).toBe("203.0.113.9");
    expect(addressKey("::ffff:203.0.113.9")).toBe("203.0.113.9");
    expect(addressKey("::FFFF:cb00:7109")).toBe("203.0.113.9");
  });

  test("IPv6 is its /64, however it is spelled; the next /64 is another key", () => {
    const key = "2001:db8:0:1::/64";
    for (const a of ["2001:db8:0:1::1", "2001:DB8:0:1:ffff:ffff:ffff:ffff", "2001:0db8:0000:0001:0:0:0:2", "2001:db8:0:1::1%eth0", "2001:db8:0:1::10.0.0.1"]) {
      expect(addressKey(a)).toBe(key);
    }
    expect(addressKey("2001:db8:0:2::1")).toBe("2001:db8:0:2::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    expect(addressKey("fe80::1")).toBe("fe80:0:0:0::/64");
  });

  test("what is not an address is kept as it is", () => {
    expect(addressKey("unknown")).toBe("unknown");
    expect(addressKey("")).toBe("");
  });
});
