import { expect, test } from "bun:test";
import { KeyedCap } from "../../src/ws/connection-caps.ts";

test("KeyedCap: full at the cap, not below it; a remove makes room; a key at 0 is forgotten", () => {
  const cap = new KeyedCap<string>(2);
  expect(cap.full("a")).toBe(false);
  cap.add("a");
  expect(cap.full("a")).toBe(false);
  cap.add("a");
  expect(cap.full("a")).toBe(true);
  expect(cap.full("b")).toBe(false);
  cap.remove("a");
  expect(cap.full("a")).toBe(false);
  expect(cap.count("a")).toBe(1);
  cap.remove("a");
  expect(cap.size).toBe(0);
});

test("KeyedCap 0: never full, and nothing is counted (no entry per connection)", () => {
  const cap = new KeyedCap<number>(0);
  for (let i = 0; i < 1000; i++) cap.add(7);
  expect(cap.full(7)).toBe(false);
  expect(cap.size).toBe(0);
  cap.remove(7);
  expect(cap.size).toBe(0);
});
