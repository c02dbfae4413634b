import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { base64HostKey, substituterUrl, withUrlParam } from "../../components/render/url";
import { parseCachePublicKey, parsePublicKeyLine } from "../../components/render/publicKey";
import {
  ECDSA_KEY,
  ED25519_KEY,
  HOST_KEY,
  SEED_CACHE_PUBLIC_KEY,
  SEED_ROOT_RSA_KEY,
  SEED_SUBSTITUTER,
} from "./fixtures";

describe("substituterUrl", () => {
  it("renders the seed's URL", () => {
    assert.equal(substituterUrl({ protocol: "ssh", host: "stage.yourapp.com" }), SEED_SUBSTITUTER);
  });

  it("renders ssh-ng, another user, and only the given params in a fixed order", () => {
    assert.equal(
      substituterUrl({
        protocol: "ssh-ng",
        user: "cache",
        host: "stage.test",
        params: { sshKey: "/root/.ssh/x", priority: 30, maxConnections: 1, compress: true },
      }),
      "ssh-ng://cache@stage.test?compress=true&max-connections=1&priority=30&ssh-key=/root/.ssh/x",
    );
    assert.equal(
      substituterUrl({ protocol: "ssh", host: "stage.test", params: { priority: 0 } }),
      "ssh://nix-ssh@stage.test?priority=0",
    );
  });

  it("percent-encodes the pinned host key (+ and =), which Nix 2.8 decodes", () => {
    const b64 = base64HostKey(HOST_KEY);
    assert.equal(Buffer.from(b64, "base64").toString(), HOST_KEY.split(" ").slice(0, 2).join(" "));
    const url = substituterUrl({
      protocol: "ssh",
      host: "stage.test",
      params: { base64SshPublicHostKey: b64 },
    });
    assert.equal(
      url,
      `ssh://nix-ssh@stage.test?base64-ssh-public-host-key=${encodeURIComponent(b64)}`,
    );
    const value = url.split("base64-ssh-public-host-key=")[1];
    assert.doesNotMatch(value, /[+=]/);
    assert.equal(decodeURIComponent(value), b64);
  });

  it("never puts the port in the URL (Nix 2.8 would pass host:port to ssh as a name)", () => {
    assert.equal(
      substituterUrl({ protocol: "ssh", host: "stage.test", port: 2222 }),
      "ssh://nix-ssh@stage.test",
    );
  });

  it("brackets IPv6 addresses", () => {
    assert.equal(substituterUrl({ protocol: "ssh", host: "::1" }), "ssh://nix-ssh@[::1]");
    assert.equal(substituterUrl({ protocol: "ssh", host: "[fd00::2]" }), "ssh://nix-ssh@[fd00::2]");
  });

  it("rejects bad users, hosts and numbers", () => {
    assert.throws(() => substituterUrl({ protocol: "ssh", host: "a b" }));
    assert.throws(() => substituterUrl({ protocol: "ssh", host: "a/b" }));
    assert.throws(() => substituterUrl({ protocol: "ssh", user: "Root!", host: "a" }));
    assert.throws(() =>
      substituterUrl({ protocol: "ssh", host: "a", params: { maxConnections: 0 } }),
    );
    assert.throws(() => substituterUrl({ protocol: "ssh", host: "a", params: { priority: 1.5 } }));
  });
});

describe("parsePublicKeyLine", () => {
  it("parses ed25519, ecdsa and the seed's RSA key", () => {
    assert.deepEqual(parsePublicKeyLine(ED25519_KEY), {
      type: "ssh-ed25519",
      base64: ED25519_KEY.split(" ")[1],
      comment: "root@prod1",
    });
    assert.equal(parsePublicKeyLine(ECDSA_KEY).type, "ecdsa-sha2-nistp256");
    assert.equal(parsePublicKeyLine(SEED_ROOT_RSA_KEY).comment, "ship@yourapp");
    assert.deepEqual(Object.keys(parsePublicKeyLine(ED25519_KEY.replace(" root@prod1", ""))), [
      "type",
      "base64",
    ]);
    assert.equal(parsePublicKeyLine(`${HOST_KEY} extra words `).comment, "root@vm extra words");
  });

  const bad: [string, RegExp][] = [
    ["", /expected/],
    ["ssh-ed25519", /expected/],
    ["ssh-dss AAAAB3NzaC1kc3MAAA==", /unsupported key type/],
    ["ssh-ed25519 not*base64", /base64/],
    [`ssh-rsa ${ED25519_KEY.split(" ")[1]}`, /does not hold a ssh-rsa key.*ssh-ed25519/],
    ["ssh-ed25519 AAAA", /does not hold/],
    [`${ED25519_KEY}\nssh-rsa AAAA`, /single line/],
  ];
  for (const [line, message] of bad) {
    it(`rejects ${JSON.stringify(line.slice(0, 40))}`, () => {
      assert.throws(() => parsePublicKeyLine(line), message);
    });
  }
});

describe("parseCachePublicKey", () => {
  it("parses the seed's cache key and rejects malformed ones", () => {
    assert.deepEqual(parseCachePublicKey(SEED_CACHE_PUBLIC_KEY), {
      name: "stage.yourapp.com",
      base64: "T0xDDpZbMep2GjjzGDpRk32FkZx/+LZ4eKqPyGI2il8=",
    });
    assert.throws(() => parseCachePublicKey("stage.yourapp.com"));
    assert.throws(() => parseCachePublicKey("stage:AAAA"));
    assert.throws(() => parseCachePublicKey("a b:T0xDDpZbMep2GjjzGDpRk32FkZx/+LZ4eKqPyGI2il8="));
  });
});

describe("withUrlParam", () => {
  it("adds a parameter to a URL without a query", () => {
    assert.equal(
      withUrlParam("ssh://nix-ssh@stage.test", "ssh-key", "/etc/nix/nix-ssh-cache/id_ed25519"),
      "ssh://nix-ssh@stage.test?ssh-key=/etc/nix/nix-ssh-cache/id_ed25519",
    );
  });

  it("keeps other parameters and replaces the same one", () => {
    assert.equal(
      withUrlParam("ssh-ng://nix-ssh@stage.test?priority=30&ssh-key=/old", "ssh-key", "/new key"),
      "ssh-ng://nix-ssh@stage.test?priority=30&ssh-key=/new%20key",
    );
  });

  it("refuses a bad parameter name", () => {
    assert.throws(() => withUrlParam("ssh://x@y", "a&b", "1"), /not valid/);
  });
});

describe("withUrlParam and substituterUrl with crafted coordinates", () => {
  it("refuse a URL or host that would break out of nix.conf or name a pattern", () => {
    for (const url of [
      "ssh://nix-ssh@stage.test file:///tmp/x",
      "ssh://nix-ssh@stage.test\nrequire-sigs = false",
      "ssh://nix-ssh@stage.test#",
      "ssh://nix-ssh@$(id)",
    ]) {
      assert.throws(() => withUrlParam(url, "ssh-key", "/k"), /substituter URL/, url);
    }
    for (const host of ["stage.test\nx", "*", "a,b", "a b", "x$y"]) {
      assert.throws(() => substituterUrl({ protocol: "ssh", host }), /host/, host);
    }
  });
});
