import { BlockList, isIP } from "node:net";

/**
 * The key an address is counted under by every per-address limit (failed sign-ins,
 * hashes at once, HTTP requests, connections) and shown in logs: an IPv4 address as
 * it is (an IPv4-mapped IPv6 one as IPv4), an IPv6 address as its /64 prefix
 * (`2001:db8:0:1::/64`). One IPv6 host usually has a whole /64 to pick addresses from:
 * counted by whole address, each of its 2^64 addresses had limits of its own, and so
 * did each spelling of one address (`2001:DB8::1`, `2001:db8:0:0::1`). Anything else
 * (Bun's "unknown") is kept as it is.
 *
 * @example
 * addressKey("2001:db8::1"); // "2001:db8:0:0::/64"
 * addressKey("::ffff:192.0.2.7"); // "192.0.2.7"
 */
export function addressKey(address: string): string {
  const family = isIP(address);
  if (family !== 6) return address;
  const h = hextets(address);
  if (h.slice(0, 5).every((x) => x === 0) && h[5] === 0xffff) {
    return `${h[6]! >> 8}.${h[6]! & 255}.${h[7]! >> 8}.${h[7]! & 255}`;
  }
  return `${h.slice(0, 4).map((x) => x.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail as two groups, a zone dropped). */
function hextets(v6: string): number[] {
  let s = v6.toLowerCase();
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  const dotted = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(2).map(Number) as [number, number, number, number];
    s = `${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = s.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return groups.map((g) => parseInt(g, 16));
}

/** An `X-Forwarded-For` hop as an address: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:443`; "" if it is none. */
function hopAddress(hop: string): string {
  if (isIP(hop)) return hop;
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(hop);
  if (bracketed && isIP(bracketed[1]!) === 6) return bracketed[1]!;
  const v4WithPort = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(hop);
  if (v4WithPort && isIP(v4WithPort[1]!) === 4) return v4WithPort[1]!;
  return "";
}

/**
 * The reverse proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`), and the
 * client address that follows from it.
 *
 * Behind a proxy every connection comes from the proxy's address, so the per-address
 * sign-in limit would count all clients together. When the TCP peer is a trusted
 * proxy, the header is read from the right (each proxy appends the address it saw),
 * skipping trusted proxies: the first address that is not one is the client. Anything
 * to its left was written by the client and is ignored, and a peer that is not trusted
 * cannot set the address at all.
 *
 * @example
 * const proxies = TrustedProxies.parse("10.0.0.0/8");
 * proxies.clientAddress("10.0.0.2", "203.0.113.9, 10.0.0.7"); // "203.0.113.9"
 * proxies.clientAddress("198.51.100.4", "203.0.113.9"); // "198.51.100.4" (not a proxy)
 */
export class TrustedProxies {
  private readonly list = new BlockList();

  private constructor(
    /** The entries as configured, for logs. */
    readonly entries: readonly string[],
  ) {}

  /**
   * `*`, or comma-separated addresses and subnets: `127.0.0.1, 10.0.0.0/8, fd00::/8`.
   * Throws an Error naming the first entry that is neither.
   */
  static parse(text: string): TrustedProxies {
    const entries = text
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const proxies = new TrustedProxies(entries);
    for (const entry of entries) {
      if (entry === "*") {
        proxies.list.addSubnet("0.0.0.0", 0, "ipv4");
        proxies.list.addSubnet("::", 0, "ipv6");
        continue;
      }
      const slash = entry.indexOf("/");
      const address = slash < 0 ? entry : entry.slice(0, slash);
      const family = isIP(address);
      if (family === 0) throw new Error(`${JSON.stringify(entry)} is not an IP address or subnet like 10.0.0.0/8`);
      const type = family === 4 ? "ipv4" : "ipv6";
      if (slash < 0) {
        proxies.list.addAddress(address, type);
        continue;
      }
      const bits = entry.slice(slash + 1);
      const max = family === 4 ? 32 : 128;
      if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) {
        throw new Error(`${JSON.stringify(entry)}: the prefix length must be 0 to ${max}`);
      }
      proxies.list.addSubnet(address, Number(bits), type);
    }
    return proxies;
  }

  get size(): number {
    return this.entries.length;
  }

  /** Whether `address` (as Bun or a header gives it) is a trusted proxy. */
  has(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? "ipv4" : "ipv6");
  }

  /** The client's address: `peer`, or from `forwardedFor` when `peer` is a trusted proxy. */
  clientAddress(peer: string, forwardedFor: string | null): string {
    if (this.entries.length === 0 || !forwardedFor || !this.has(peer)) return peer;
    // The nearest hop known to be honest: the peer, then each trusted proxy in turn.
    let nearest = peer;
    const hops = forwardedFor.split(",");
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hopAddress(hops[i]!.trim());
      // Not an address: a trusted proxy would not write that; stop at what is known.
      if (!hop) return nearest;
      if (!this.has(hop)) return hop;
      nearest = hop;
    }
    return nearest;
  }
}
