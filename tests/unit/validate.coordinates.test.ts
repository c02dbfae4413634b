/**
 * Cache coordinates as CacheClient receives them (finding 7 of issue 21): they may come from
 * another stack through a StackReference, so every field is checked with the rules of direct
 * input before anything is rendered from it.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  LATER,
  NixSshCacheInputError,
  PlainCacheCoordinates,
  validateCacheCoordinates,
} from "../../components/validate";
import { HOST_KEY, SEED_CACHE_PUBLIC_KEY } from "./fixtures";

const CANARY = "/nix/store/0c1vz3ldqc7nr4jisgwlzfnbmcxmnblx-nix-ssh-cache-canary-5f2a";

function good(): PlainCacheCoordinates {
  return {
    substituterUrl: "ssh://nix-ssh@stage.test?compress=true&priority=30",
    publicKeys: [SEED_CACHE_PUBLIC_KEY.replace(/^[^:]+/, "stage.test-1"), SEED_CACHE_PUBLIC_KEY],
    hostName: "stage.test",
    port: 22,
    hostKey: HOST_KEY,
    canaryPath: CANARY,
  };
}

function problemsOf(c: unknown): readonly string[] {
  try {
    validateCacheCoordinates(c as PlainCacheCoordinates);
  } catch (e) {
    assert.ok(e instanceof NixSshCacheInputError, `unexpected error: ${e}`);
    return e.problems;
  }
  return [];
}

const KEY = SEED_CACHE_PUBLIC_KEY.split(":")[1];

/** [what, change, field named]: each crafted value is refused, naming its field. */
const CRAFTED: [string, Partial<Record<keyof PlainCacheCoordinates, unknown>>, string][] = [
  ["a port carrying ssh_config lines", { port: "22\n  ProxyCommand touch /tmp/p" }, "cache.port"],
  ["a port given as a string", { port: "2222" }, "cache.port"],
  ["port 0", { port: 0 }, "cache.port"],
  ["port 65536", { port: 65536 }, "cache.port"],
  ["a fractional port", { port: 22.5 }, "cache.port"],
  [
    "a host name with a line",
    { hostName: "stage.test\n  StrictHostKeyChecking no" },
    "cache.hostName",
  ],
  ["a host pattern", { hostName: "*" }, "cache.hostName"],
  ["a host list", { hostName: "stage.test,evil.test" }, "cache.hostName"],
  ["an empty host name", { hostName: "" }, "cache.hostName"],
  [
    "a host key with a second line",
    { hostKey: `${HOST_KEY}\n@revoked * ${HOST_KEY}` },
    "cache.hostKey",
  ],
  ["a host key that is not one", { hostKey: "ssh-ed25519 AAAA" }, "cache.hostKey"],
  ["no public keys", { publicKeys: [] }, "cache.publicKeys"],
  ["public keys not a list", { publicKeys: SEED_CACHE_PUBLIC_KEY }, "cache.publicKeys"],
  [
    "a public key with a nix.conf line",
    { publicKeys: [`${SEED_CACHE_PUBLIC_KEY}\nrequire-sigs = false`] },
    "cache.publicKeys[0]",
  ],
  ["a public key name with #", { publicKeys: [`a#b:${KEY}`] }, "cache.publicKeys[0]"],
  ["a public key name with $", { publicKeys: [`a$b:${KEY}`] }, "cache.publicKeys[0]"],
  [
    "a public key of 16 bytes",
    { publicKeys: [`a:${Buffer.alloc(16).toString("base64")}`] },
    "cache.publicKeys[0]",
  ],
  [
    "a URL with a second substituter",
    { substituterUrl: "ssh://nix-ssh@stage.test file:///tmp/evil" },
    "cache.substituterUrl",
  ],
  [
    "a URL with a nix.conf line",
    { substituterUrl: "ssh://nix-ssh@stage.test\nrequire-sigs = false" },
    "cache.substituterUrl",
  ],
  ["a URL of another scheme", { substituterUrl: "file:///tmp/evil" }, "cache.substituterUrl"],
  [
    "a URL to another host than hostName",
    { substituterUrl: "ssh://nix-ssh@evil.test" },
    "cache.substituterUrl",
  ],
  [
    "a URL choosing the client's key",
    { substituterUrl: "ssh://nix-ssh@stage.test?ssh-key=/root/.ssh/id_rsa" },
    "cache.substituterUrl",
  ],
  [
    "a URL pinning its own host key",
    { substituterUrl: `ssh://nix-ssh@stage.test?base64-ssh-public-host-key=${KEY}` },
    "cache.substituterUrl",
  ],
  [
    "a URL running a remote program",
    { substituterUrl: "ssh://nix-ssh@stage.test?remote-program=/tmp/x" },
    "cache.substituterUrl",
  ],
  ["a URL with a #", { substituterUrl: "ssh://nix-ssh@stage.test#x" }, "cache.substituterUrl"],
  ["a canary that is not a store path", { canaryPath: "/tmp/x" }, "cache.canaryPath"],
  ["a canary with shell", { canaryPath: `${CANARY}'; touch /tmp/p; '` }, "cache.canaryPath"],
  ["a canary with ..", { canaryPath: `${CANARY}/../../etc/shadow` }, "cache.canaryPath"],
];

describe("validateCacheCoordinates", () => {
  it("accepts what CacheServer exports (ssh://, ssh-ng://, IPv6, a port, rotation keys)", () => {
    assert.deepEqual(problemsOf(good()), []);
    assert.deepEqual(problemsOf({ ...good(), substituterUrl: "ssh-ng://nix-ssh@stage.test" }), []);
    assert.deepEqual(
      problemsOf({ ...good(), hostName: "::1", substituterUrl: "ssh://nix-ssh@[::1]", port: 2222 }),
      [],
    );
    assert.deepEqual(
      problemsOf({
        ...good(),
        hostName: "STAGE.test",
        substituterUrl: "ssh://nix-ssh@stage.test?max-connections=1",
      }),
      [],
    );
  });

  for (const [what, change, field] of CRAFTED) {
    it(`refuses ${what}, naming ${field}`, () => {
      const problems = problemsOf({ ...good(), ...change });
      assert.equal(problems.length, 1, problems.join("\n"));
      assert.ok(problems[0].startsWith(`${field} (`), problems[0]);
    });
  }

  it("lists every crafted field at once", () => {
    const problems = problemsOf({
      ...good(),
      port: "22\nProxyCommand x",
      hostName: "a b",
      publicKeys: ["x"],
    });
    assert.deepEqual(
      problems.map((p) => p.split(" ")[0]),
      ["cache.hostName", "cache.port", "cache.publicKeys[0]"],
    );
  });

  it("skips values not known yet, and refuses a cache that is not an object", () => {
    assert.deepEqual(problemsOf(LATER), []);
    const later = Object.fromEntries(Object.keys(good()).map((k) => [k, LATER]));
    assert.deepEqual(problemsOf(later), []);
    assert.deepEqual(problemsOf({ ...good(), publicKeys: [LATER] }), []);
    assert.match(problemsOf("ssh://nix-ssh@stage.test")[0], /^cache \(/);
  });
});
