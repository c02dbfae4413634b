/**
 * Release pins (issue 23): the store-path pattern and the input checks of `CachePin`, in
 * TypeScript and in `pin.sh` (the host checks every path again, before anything is written).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { STORE_PATH_PATTERN, validatePinArgs } from "../../components/cachePin";
import { NixSshCacheInputError } from "../../components/validate";
import { FAKE_PRIVATE_KEY, HOST_KEY } from "./fixtures";

const REMOTE = join(__dirname, "..", "..", "components", "remote");
const HASH = "0123456789abcdfghijklmnpqrsvwxyz"; // all 32 nix-base32 digits
const GOOD = [
  `/nix/store/${HASH}-nixos-system-web-24.05`,
  `/nix/store/${HASH}-a`,
  `/nix/store/${HASH}-foo+bar_baz?x=1`,
  `/nix/store/${HASH}-${"n".repeat(211)}`,
];
const BAD = [
  `/nix/store/${"e".repeat(32)}-release`, // 'e' is not a nix-base32 digit
  `/nix/store/${HASH.toUpperCase()}-release`,
  `/nix/store/${HASH.slice(1)}-release`, // 31 characters
  `/nix/store/${HASH}`, // no name
  `/nix/store/${HASH}-`,
  `/nix/store/${HASH}-.hidden`,
  `/nix/store/${HASH}-x/../../etc/shadow`,
  `/nix/store/${HASH}-a b`,
  `/nix/store/${HASH}-a\nb`,
  `/nix/store/${HASH}-$(touch /tmp/x)`,
  `/nix/store/${HASH}-a;b`,
  `/nix/store/${HASH}-${"n".repeat(212)}`,
  `/tmp/store/${HASH}-release`,
  `nix/store/${HASH}-release`,
  `/nix/store/../store/${HASH}-release`,
  "",
];

const staging = {
  connection: { host: "stage.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
};

/** The problems `validatePinArgs` reports, or [] when it accepts. */
function problems(args: Record<string, unknown>): string[] {
  try {
    validatePinArgs({ host: staging, ...args } as never);
    return [];
  } catch (e) {
    assert.ok(e instanceof NixSshCacheInputError, String(e));
    return [...e.problems];
  }
}

/** Runs `nsc_pin_valid_path` from pin.sh (the function alone) on each path; the ones accepted. */
function acceptedByShell(paths: string[]): string[] {
  const text = readFileSync(join(REMOTE, "pin.sh"), "utf8");
  const fn = /^nsc_pin_valid_path\(\) \{\n[\s\S]*?\n\}\n/m.exec(text);
  assert.ok(fn, "pin.sh defines nsc_pin_valid_path");
  const script = `${fn[0]}\nfor p in "$@"; do if nsc_pin_valid_path "$p"; then printf '%s\\0' "$p"; fi; done`;
  const out = execFileSync("bash", ["-c", script, "bash", ...paths], { encoding: "utf8" });
  return out.split("\0").filter((p) => p !== "");
}

describe("STORE_PATH_PATTERN and validatePinArgs", () => {
  it("accepts store paths as Nix names them", () => {
    for (const p of GOOD) assert.match(p, STORE_PATH_PATTERN);
    assert.deepEqual(problems({ paths: GOOD, keep: 3, set: "cache" }), []);
  });

  it("refuses anything else, naming the index", () => {
    for (const p of BAD) assert.doesNotMatch(p, STORE_PATH_PATTERN, JSON.stringify(p));
    const found = problems({ paths: BAD });
    assert.equal(found.length, BAD.length, found.join("\n"));
    assert.match(found[0], /^pins\[0\] \(.*\): must be a store path/);
  });

  it("refuses an empty release, a keep out of 1..1000 and a set name that is not a plain word", () => {
    assert.match(problems({ paths: [] }).join(), /needs at least one store path/);
    for (const keep of [0, 1001, 1.5, -1, "3"]) {
      assert.match(problems({ paths: GOOD, keep }).join(), /keepReleases/, String(keep));
    }
    for (const set of ["../x", "a/b", ".hidden", "", "a b"]) {
      assert.match(problems({ paths: GOOD, set }).join(), /pin set/, set);
    }
  });
});

describe("pin.sh checks the paths itself", () => {
  it("nsc_pin_valid_path accepts exactly what STORE_PATH_PATTERN accepts", () => {
    assert.deepEqual(acceptedByShell([...GOOD, ...BAD]), GOOD);
  });

  it("apply with a bad path fails before touching the host (no Nix, no GC root)", () => {
    const body = ["set -euo pipefail", "lib", "pin"]
      .map((n) => (n.startsWith("set") ? n : readFileSync(join(REMOTE, `${n}.sh`), "utf8")))
      .join("\n");
    const r = spawnSync("bash", ["-s"], {
      input: body,
      encoding: "utf8",
      env: {
        PATH: "/usr/bin:/bin",
        ACTION: "apply",
        PIN_SET: "unit",
        KEEP: "2",
        PIN_PATHS: `/nix/store/${HASH}-x/../../../etc`,
      },
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^nix-ssh-cache: '.*' is not a store path .*\(pins\)$/m);
  });
});
