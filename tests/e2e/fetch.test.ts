/**
 * The one-session closure fetcher (issue 15): `nix-ssh-cache-fetch`, installed on production by
 * `up`, substitutes a dependency chain from staging in one SSH login (Nix's `ssh://` substituter
 * pays about two round trips per path), with every signature checked by Nix; it refuses an
 * unsigned path, falls back to Nix's own substitution when its fast path fails, and `up --refresh`
 * puts it back when it is removed. With `fetch` in the config, `up` itself fetches a release's
 * closure on production (a `ClosureFetch`), and fetches it again after a refresh found it gone.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { randomBytes } from "crypto";
import {
  acceptedLogins,
  e2eSkipReason,
  loginsSince,
  startHosts,
  TestHost,
  TestHosts,
} from "../hosts/harness";
import { buildOnStaging, exampleStack, NIX, signaturesOf } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const FETCH = "/usr/local/sbin/nix-ssh-cache-fetch";
const CHAIN = 40;

/** Builds a chain of `n` paths on staging (each refers to the one before); returns them, top first. */
async function buildChain(stage: TestHost, n: number): Promise<string[]> {
  const nonce = randomBytes(4).toString("hex");
  const expr =
    `let mk = i: prev: builtins.derivation { name = "chain-${nonce}-\${toString i}"; ` +
    `system = builtins.currentSystem; builder = "/bin/sh"; ` +
    `args = [ "-c" "echo \${toString i} \${prev} > $out" ]; }; ` +
    `go = i: if i == 0 then mk 0 "" else mk i (go (i - 1)); in go ${n - 1}`;
  const drv = (await stage.exec(`nix-instantiate -E '${expr}'`)).stdout.trim();
  const top = (await stage.exec(`nix-store --realise ${drv}`)).stdout.trim();
  const closure = (await stage.exec(`nix-store -qR ${top}`)).stdout.trim().split("\n");
  assert.equal(closure.length, n, `a chain of ${n} paths on staging`);
  return [top, ...closure.filter((p) => p !== top)];
}

/** How many of `paths` are valid on `host`. */
async function validCount(host: TestHost, paths: string[]): Promise<number> {
  const r = await host.exec(`nix-store --check-validity --print-invalid ${paths.join(" ")}`);
  return paths.length - r.stdout.split("\n").filter((l) => l.trim() !== "").length;
}

describe("nix-ssh-cache-fetch: a closure in one SSH session", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod1: TestHost;
  let chain: string[];

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prod1 = hosts.byName("prod1");
    stack = await exampleStack(repoRoot, "e2e", stage, [prod1]);
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    chain = await buildChain(stage, CHAIN);
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("up installs the fetcher on production, root-owned and executable", async () => {
    const st = (await prod1.exec(`stat -c '%U:%G %a %F' ${FETCH}`)).stdout.trim();
    assert.equal(st, "root:root 755 regular file");
  });

  it("fetches a 40-path chain in one login on staging, every path signed by staging", async () => {
    assert.equal(await validCount(prod1, chain), 0, "production starts without the chain");
    const before = acceptedLogins(stage);
    const r = await prod1.exec(`${FETCH} ${chain[0]}`, { check: false });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${CHAIN} paths in the closure, ${CHAIN} to fetch`));
    assert.doesNotMatch(r.stderr, /falling back/);
    assert.equal(loginsSince(before, acceptedLogins(stage), "nix-ssh"), 1, "one SSH session");
    assert.equal(await validCount(prod1, chain), CHAIN);
    for (const p of [chain[0], chain[CHAIN - 1]]) {
      const sigs = await signaturesOf(prod1, p);
      assert.ok(
        sigs.some((s) => s.startsWith("stage.test:")),
        `${p} not signed by staging: ${sigs}`,
      );
    }
  });

  it("a second run finds nothing to fetch", async () => {
    const r = await prod1.exec(`${FETCH} ${chain[0]}`, { check: false });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${CHAIN} paths in the closure, 0 to fetch`));
  });

  it("a path staging did not sign is refused (Nix checks the signature), fast path or not", async () => {
    const unsigned = await buildOnStaging(stage, "unsigned", "--option secret-key-files ''");
    assert.deepEqual(await signaturesOf(stage, unsigned.out), [], "built unsigned on staging");
    const fast = await prod1.exec(`${FETCH} --no-fallback ${unsigned.out}`, { check: false });
    assert.notEqual(fast.code, 0, "an unsigned path must not be added");
    assert.match(fast.stderr, /lacks a (valid )?signature|not signed by any of the keys/);
    assert.match(fast.stderr, /one-session fetch failed/);
    const withFallback = await prod1.exec(`${FETCH} ${unsigned.out}`, { check: false });
    assert.notEqual(withFallback.code, 0, "the fallback does not accept it either");
    assert.match(withFallback.stderr, /falling back to nix-store --realise/);
    assert.equal(await validCount(prod1, [unsigned.out]), 0);
  });

  it("when the fast path fails, it falls back to Nix's substitution and still gets the path", async () => {
    const built = await buildOnStaging(stage, "fallback");
    // A work directory that does not exist: the one-session path fails before any transfer.
    // (Not `/nonexistent`: a test host's / is the machine's, where anything may create it.)
    const missing = `/var/tmp/nsc-no-such-dir-${randomBytes(4).toString("hex")}`;
    const r = await prod1.exec(`${FETCH} --work-dir ${missing} ${built.out}`, { check: false });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /one-session fetch failed: .*; falling back/);
    assert.equal(await validCount(prod1, [built.out]), 1);
    const sigs = await signaturesOf(prod1, built.out);
    assert.ok(
      sigs.some((s) => s.startsWith("stage.test:")),
      `not signed by staging: ${sigs}`,
    );
  });

  it("staging's sshd down: a clear failure, nothing left behind; back up, the same command works", async () => {
    const built = await buildOnStaging(stage, "sshd-down");
    await stage.stopSshd();
    try {
      const r = await prod1.exec(`${FETCH} ${built.out}`, { check: false });
      assert.notEqual(r.code, 0, "nothing can fetch the path while staging is unreachable");
      assert.match(r.stderr, /one-session fetch failed: .*; falling back/);
      assert.match(r.stderr, /Connection refused/);
    } finally {
      await stage.startSshd();
    }
    const left = await prod1.exec("ls -d /var/tmp/nix-ssh-cache-fetch.* 2>/dev/null | wc -l");
    assert.equal(left.stdout.trim(), "0", "no work directory left behind");
    const again = await prod1.exec(`${FETCH} ${built.out}`, { check: false });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await validCount(prod1, [built.out]), 1);
  });

  it("removed or edited out of band, `up --refresh` puts the fetcher back", async () => {
    const original = (await prod1.exec(`sha256sum ${FETCH}`)).stdout.split(" ")[0];
    await prod1.exec(`rm ${FETCH}`);
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    assert.match(up.output, /fetcher/);
    const now = (await prod1.exec(`sha256sum ${FETCH}`)).stdout.split(" ")[0];
    assert.equal(now, original);
    const st = (await prod1.exec(`stat -c '%U:%G %a' ${FETCH}`)).stdout.trim();
    assert.equal(st, "root:root 755");
    const r = await prod1.exec(`${FETCH} --quiet ${chain[0]}`, { check: false });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      (await prod1.exec(`${NIX} path-info ${chain[0]}`)).stdout.trim(),
      chain[0],
      "still valid",
    );
  });

  it("fetch in the config: up fetches the release's closure on production, and again once it is gone", async () => {
    const release = await buildChain(stage, 12);
    await stack.setConfigObjects({ fetch: [release[0]] }, "nix-ssh-cache");
    const before = acceptedLogins(stage);
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal(loginsSince(before, acceptedLogins(stage), "nix-ssh"), 1, "one SSH session");
    const fetched = (await stack.outputs()).fetched as Record<string, unknown>[];
    assert.equal(fetched.length, 1);
    assert.equal(fetched[0].host, "prod1");
    assert.equal(fetched[0].valid, true);
    assert.equal(fetched[0].closure, 12);
    assert.equal(fetched[0].fetched, 12);
    assert.equal(fetched[0].fallback, false);
    assert.ok((fetched[0].bytes as number) > 0);
    assert.equal(await validCount(prod1, release), 12);

    // Unchanged: the next up does not fetch again.
    const again = await stack.preview(["--expect-no-changes"]);
    assert.equal(again.code, 0, again.output);

    // Garbage-collected on production: a refresh sees it, and up fetches it again.
    await prod1.exec(`nix-store --delete ${release[0]}`);
    const repair = await stack.up(["--refresh"]);
    assert.equal(repair.code, 0, repair.output);
    assert.match(repair.output, /release/);
    assert.equal(await validCount(prod1, release), 12);
    const refetched = (await stack.outputs()).fetched as Record<string, unknown>[];
    assert.equal(refetched[0].fetched, 1, "only the missing path");
  });
});
