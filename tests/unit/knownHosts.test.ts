/**
 * The operator's known_hosts as `ssh` reads them (hashed names, `[host]:port`, comma lists,
 * wildcards, negation, `@revoked`, `@cert-authority`), checked against OpenSSH's own
 * `ssh-keygen -H` / `-F` / `-l` where they are installed.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  expectedHostKey,
  fingerprint,
  hostFieldMatches,
  knownHostsName,
  lookupKnownHosts,
} from "../../components/knownHosts";
import { ECDSA_KEY, ED25519_KEY, hasCommand, HOST_KEY, withTempDir } from "./fixtures";

const KEY = HOST_KEY.split(" ").slice(0, 2).join(" ");
const OTHER = ED25519_KEY.split(" ").slice(0, 2).join(" ");
const ECDSA = ECDSA_KEY.split(" ").slice(0, 2).join(" ");
const noSsh = !hasCommand("ssh-keygen");

/** Writes `lines` as a known_hosts file in `dir`; returns its path. */
function knownHosts(dir: string, lines: string[], name = "known_hosts"): string {
  const file = join(dir, name);
  writeFileSync(file, lines.join("\n") + "\n");
  return file;
}

describe("known_hosts names and patterns", () => {
  it("looks up [host]:port for a port other than 22, in lower case", () => {
    assert.equal(knownHostsName("Stage.Test", 22), "stage.test");
    assert.equal(knownHostsName("stage.test", 2222), "[stage.test]:2222");
    assert.equal(knownHostsName("[fd00::3]", 22), "fd00::3");
    assert.equal(knownHostsName("::1", 2200), "[::1]:2200");
  });

  it("matches comma lists and wildcards; a matching negation excludes the line", () => {
    assert.ok(hostFieldMatches("a.test,stage.test", "stage.test"));
    assert.ok(hostFieldMatches("*.test", "stage.test"));
    assert.ok(hostFieldMatches("stage.tes?", "stage.test"));
    assert.ok(hostFieldMatches("STAGE.test", "stage.test"));
    assert.ok(!hostFieldMatches("*.test,!stage.test", "stage.test"));
    assert.ok(!hostFieldMatches("!stage.test", "stage.test"));
    assert.ok(hostFieldMatches("*.test,!prod.test", "stage.test"));
    assert.ok(!hostFieldMatches("stage.test", "[stage.test]:2222"));
    assert.ok(hostFieldMatches("[stage.test]:2222", "[stage.test]:2222"));
    assert.ok(hostFieldMatches("[*.test]:*", "[stage.test]:2222"));
    assert.ok(!hostFieldMatches("stage.test.evil", "stage.test"));
    assert.ok(!hostFieldMatches("stage.test", "stage.test.evil"));
    // regular-expression characters are plain characters
    assert.ok(!hostFieldMatches("stage.test", "stageXtest"));
  });

  it("matches hashed names as ssh-keygen -H writes them, and only those", { skip: noSsh }, () => {
    withTempDir((dir) => {
      const file = knownHosts(dir, [
        `stage.test ${KEY}`,
        `[prod.test]:2222 ${OTHER}`,
        `*.wild.test ${ECDSA}`,
      ]);
      const r = spawnSync("ssh-keygen", ["-H", "-f", file]);
      assert.equal(r.status, 0, String(r.stderr));
      const hashed = readFileSync(file, "utf8");
      assert.match(hashed, /^\|1\|/m);
      assert.ok(!hashed.includes("stage.test"), "ssh-keygen -H did not hash the names");
      const keys = (host: string, port: number) =>
        lookupKnownHosts(host, port, [file]).keys.map((k) => k.key);
      assert.deepEqual(keys("stage.test", 22), [KEY]);
      assert.deepEqual(keys("STAGE.test", 22), [KEY]);
      assert.deepEqual(keys("stage.test", 2222), []);
      assert.deepEqual(keys("prod.test", 2222), [OTHER]);
      assert.deepEqual(keys("prod.test", 22), []);
      assert.deepEqual(keys("a.wild.test", 22), [ECDSA], "ssh-keygen -H keeps wildcards");
    });
  });

  it(
    "finds what ssh-keygen -F finds, for plain, negated, port and wildcard lines",
    {
      skip: noSsh,
    },
    () => {
      withTempDir((dir) => {
        const file = knownHosts(dir, [
          "# a comment",
          "",
          `stage.test,10.0.0.2 ${KEY}`,
          `*.test,!evil.test ${OTHER}`,
          `[prod.test]:2222 ${ECDSA}`,
          `garbage`,
        ]);
        for (const name of [
          "stage.test",
          "10.0.0.2",
          "evil.test",
          "x.test",
          "[prod.test]:2222",
          "prod.test",
          "nothing",
        ]) {
          const ours = new Set(
            lookupKnownHosts(
              name.replace(/^\[(.*)\]:\d+$/, "$1"),
              /:(\d+)$/.test(name) ? Number(name.split(":").pop()) : 22,
              [file],
            ).keys.map((k) => k.key),
          );
          const r = spawnSync("ssh-keygen", ["-F", name, "-f", file]);
          const theirs = new Set(
            String(r.stdout)
              .split("\n")
              .filter((l) => l && !l.startsWith("#"))
              .map((l) => l.split(/\s+/).slice(1, 3).join(" ")),
          );
          assert.deepEqual(ours, theirs, `lookup of ${name}`);
        }
      });
    },
  );
});

describe("the key a host must present", () => {
  it("is hostKey when given, else the preferred key type of known_hosts, with its file", () => {
    withTempDir((dir) => {
      const file = knownHosts(dir, [`stage.test ${ECDSA}`, `stage.test ${KEY}`]);
      assert.deepEqual(expectedHostKey("stage.test", 22, `${OTHER} root@x`, [file]), {
        key: OTHER,
        source: "hostKey",
      });
      assert.deepEqual(expectedHostKey("stage.test", 22, undefined, [file]), {
        key: KEY,
        source: file,
      });
    });
  });

  it("is none when no file names the host: the problem names the files", () => {
    withTempDir((dir) => {
      const file = knownHosts(dir, [`other.test ${KEY}`]);
      const missing = join(dir, "missing");
      const problem = expectedHostKey("stage.test", 2222, undefined, [file, missing]);
      assert.equal(typeof problem, "string");
      assert.match(String(problem), /no key for \[stage\.test\]:2222 in .*known_hosts, .*missing/);
    });
  });

  it("refuses an @revoked key, given as hostKey or listed for the host", () => {
    withTempDir((dir) => {
      const file = knownHosts(dir, [
        `@revoked * ${KEY}`,
        `stage.test ${KEY}`,
        `prod.test ${KEY}`,
        `prod.test ${OTHER}`,
      ]);
      const lookup = lookupKnownHosts("stage.test", 22, [file]);
      assert.deepEqual(lookup.keys, []);
      assert.equal(lookup.revoked[0].source, `${file}:1`);
      assert.match(
        String(expectedHostKey("stage.test", 22, undefined, [file])),
        /its only keys there are @revoked/,
      );
      assert.match(
        String(expectedHostKey("stage.test", 22, KEY, [file])),
        new RegExp(`hostKey SHA256:\\S+ \\(ED25519\\) is marked @revoked at ${file}:1`),
      );
      // another key of the host is still good
      assert.deepEqual(expectedHostKey("prod.test", 22, undefined, [file]), {
        key: OTHER,
        source: file,
      });
    });
  });

  it("ignores @cert-authority lines (not supported by ssh2) with a note", () => {
    withTempDir((dir) => {
      const file = knownHosts(dir, [`@cert-authority *.test ${KEY}`]);
      const lookup = lookupKnownHosts("stage.test", 22, [file]);
      assert.deepEqual(lookup.keys, []);
      assert.match(lookup.notes[0], /@cert-authority ignored/);
      assert.match(
        String(expectedHostKey("stage.test", 22, undefined, [file])),
        /@cert-authority ignored/,
      );
    });
  });
});

describe("fingerprints", () => {
  it(
    "are what ssh-keygen -l prints: SHA256, base64 without padding, and the type",
    { skip: noSsh },
    () => {
      withTempDir((dir) => {
        for (const key of [HOST_KEY, ED25519_KEY, ECDSA_KEY]) {
          const file = join(dir, "k.pub");
          writeFileSync(file, key + "\n");
          const r = spawnSync("ssh-keygen", ["-l", "-E", "sha256", "-f", file]);
          assert.equal(r.status, 0, String(r.stderr));
          // "256 SHA256:xxxx comment (ED25519)"
          const [, theirs] = String(r.stdout).trim().split(/\s+/);
          const type = String(r.stdout).trim().split(/\s+/).pop();
          assert.equal(fingerprint(key), `${theirs} ${type}`);
          assert.equal(fingerprint(Buffer.from(key.split(" ")[1], "base64")), `${theirs} ${type}`);
        }
      });
    },
  );
});
