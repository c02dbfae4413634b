/**
 * The pure parts of the bench's network section: Toxiproxy toxics per profile, the Nix version
 * rule for max-connections, bash `times` parsing, ratios to the raw stream.
 */
import { strict as assert } from "assert";
import { describe, it } from "node:test";
import { parseTimes } from "../../bench/lib";
import { maxConnectionsWorks, nixVersionOf } from "../../bench/network";
import { vsRaw } from "../../bench/networkReport";
import { PROFILES, toxicsOf } from "../../bench/toxiproxy";

describe("bench network profiles", () => {
  const byId = (id: string) => PROFILES.find((p) => p.id === id)!;

  it("cross-region: 40 ms each way and 12500 KB/s (100 Mbit/s) each way", () => {
    const toxics = toxicsOf(byId("cross"));
    assert.deepEqual(
      toxics.map((t) => [t.type, t.stream, t.attributes]),
      [
        ["latency", "upstream", { latency: 40, jitter: 0 }],
        ["bandwidth", "upstream", { rate: 12500 }],
        ["latency", "downstream", { latency: 40, jitter: 0 }],
        ["bandwidth", "downstream", { rate: 12500 }],
      ],
    );
  });

  it("LAN: sub-millisecond latency as jitter with a mean of RTT/2 each way", () => {
    const lat = toxicsOf(byId("lan")).filter((t) => t.type === "latency");
    assert.equal(lat.length, 2);
    for (const t of lat) {
      assert.equal(t.attributes.latency, 0);
      // Toxiproxy draws a whole number in [-j, j) ms; the mean of the positive part is (j-1)/4.
      assert.equal((t.attributes.jitter - 1) / 4, 0.25);
    }
  });

  it("loopback: no toxics and no proxy", () => {
    assert.deepEqual(toxicsOf(byId("loopback")), []);
    assert.equal(byId("loopback").proxied, false);
  });
});

describe("max-connections rule", () => {
  it("is on only from Nix 2.32", () => {
    assert.equal(maxConnectionsWorks(nixVersionOf("nix-store (Nix) 2.8.0")), false);
    assert.equal(maxConnectionsWorks(nixVersionOf("nix-store (Nix) 2.31.2")), false);
    assert.equal(maxConnectionsWorks(nixVersionOf("nix-store (Nix) 2.32.0")), true);
    assert.equal(maxConnectionsWorks(nixVersionOf("nix-store (Nix) 3.0")), true);
    assert.equal(maxConnectionsWorks(nixVersionOf("garbage")), false);
  });
});

describe("bench helpers", () => {
  it("parseTimes sums the children's user and system time", () => {
    assert.equal(parseTimes("0m0.010s 0m0.002s\n1m2.500s 0m0.500s\n"), 63);
    assert.equal(parseTimes(""), undefined);
  });

  it("vsRaw is raw time / mode time, only for successful runs", () => {
    const run = (seconds: number, ok = true) => ({
      round: 1,
      seconds,
      ok,
      timedOut: false,
      connections: 1,
    });
    assert.equal(vsRaw({ raw: run(2), ssh: run(8) }, "ssh"), 0.25);
    assert.equal(vsRaw({ raw: run(2), ssh: run(8, false) }, "ssh"), undefined);
  });
});
