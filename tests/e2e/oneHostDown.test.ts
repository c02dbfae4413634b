/**
 * One host down does not hold the rest (issue 11, item 7): each production host is authorised on
 * staging on its own, so with one production host unreachable on the first `up`,
 * `pulumi up --continue-on-error` converges staging and every reachable production host; the
 * missing host joins on a later `up` without touching the others.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, changedSteps, exampleStack, resourceName, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const KEYS_FILE = "/etc/ssh/nix-ssh-cache/authorized_keys";

/** Modification times of a host's files (missing ones listed as such). */
async function stamps(h: TestHost, files: string[]): Promise<string> {
  const r = await h.exec(`stat -c '%n %y' ${files.join(" ")} 2>&1 || true`);
  return r.stdout;
}

describe("one production host down on the first up", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod1: TestHost;
  let prod2: TestHost;

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }, { name: "prod2" }]);
    stage = hosts.byName("stage");
    prod1 = hosts.byName("prod1");
    prod2 = hosts.byName("prod2");
    stack = await exampleStack(repoRoot, "e2e", stage, [prod1, prod2]);
    await prod2.stopSshd();
  });

  after(async () => {
    await prod2?.startSshd().catch(() => undefined);
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("up --continue-on-error: staging and prod1 converge, prod2 fails on its own", async () => {
    const up = await stack.up(["--continue-on-error"]);
    assert.notEqual(up.code, 0, "prod2 is down: up must report a failure");
    assert.match(up.output, new RegExp(`${prod2.address.replace(/\./g, "\\.")}.*cannot connect`));
    // Staging serves, with prod1's key authorised and no entry for prod2.
    const keys = (await stage.exec(`cat ${KEYS_FILE}`)).stdout;
    assert.match(keys, / nix-ssh-cache-entry=client-prod1$/m);
    assert.doesNotMatch(keys, /client-prod2/);
    assert.match(
      (await stage.exec("cat /etc/ssh/sshd_config.d/nix-ssh-cache.conf")).stdout,
      /ForceCommand nix-store --serve/,
    );
    // prod1 is configured and substitutes what staging builds.
    const sigs = await substitute(prod1, await buildOnStaging(stage, "one-down"));
    assert.ok(
      sigs.some((s) => s.startsWith("stage.test:")),
      `not signed by staging: ${sigs}`,
    );
  });

  it("prod2 back: the next up changes only prod2 (and its entry on staging)", async () => {
    await prod2.startSshd();
    const watched = {
      stage: ["/etc/ssh/sshd_config.d/nix-ssh-cache.conf", "/etc/nix/nix-ssh-cache.conf"],
      prod1: [
        "/etc/nix/nix-ssh-cache.conf",
        "/etc/ssh/ssh_config.d/nix-ssh-cache.conf",
        "/etc/ssh/nix-ssh-cache/known_hosts",
      ],
    };
    const before = [await stamps(stage, watched.stage), await stamps(prod1, watched.prod1)];

    const preview = await stack.preview(["--json"]);
    assert.equal(preview.code, 0, preview.output);
    const changed = changedSteps(preview.stdout).map((s) => resourceName(s.urn));
    const others = changed.filter(
      (n) => !n.includes("prod2") && n !== "nix-ssh-cache-e2e" && !/^cache$/.test(n),
    );
    assert.deepEqual(others, [], `changes beyond prod2: ${changed.join(", ")}`);

    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.deepEqual(
      [await stamps(stage, watched.stage), await stamps(prod1, watched.prod1)],
      before,
      "staging's serving config or prod1's files were touched",
    );
    const keys = (await stage.exec(`cat ${KEYS_FILE}`)).stdout;
    assert.match(keys, / nix-ssh-cache-entry=client-prod1$/m);
    assert.match(keys, / nix-ssh-cache-entry=client-prod2$/m);
    const out = await stack.outputs();
    assert.equal(out.verified, true);
    const sigs = await substitute(prod2, await buildOnStaging(stage, "joined"));
    assert.ok(
      sigs.some((s) => s.startsWith("stage.test:")),
      `not signed by staging: ${sigs}`,
    );

    const clean = await stack.preview(["--expect-no-changes"]);
    assert.equal(clean.code, 0, clean.output);
  });
});
