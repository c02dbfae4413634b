/**
 * The product, end to end: the example stack (Pulumi.yaml + index.ts) on the real Pulumi engine
 * turns test host `stage` into a signed cache for `prod1` (reached as a sudo user) and `prod2`
 * (whose root starts with no SSH key); production then substitutes paths built on staging.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { randomBytes } from "crypto";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const NIX = "nix --extra-experimental-features nix-command";

/** Builds a small unique path on staging (as root, so it is signed at build time). */
async function buildOnStaging(
  stage: TestHost,
  label: string,
): Promise<{ out: string; drv: string }> {
  const nonce = `${label}-${randomBytes(4).toString("hex")}`;
  const expr = `builtins.derivation { name = "e2e-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }`;
  const drv = (await stage.exec(`nix-instantiate -E '${expr}'`)).stdout.trim();
  const out = (await stage.exec(`nix-store --realise ${drv}`)).stdout.trim().split("\n").pop()!;
  return { out, drv };
}

/** Realises `path` on a production host; returns its signatures there. */
async function substitute(host: TestHost, path: string, drv: string): Promise<string> {
  const r = await host.exec(`nix-store --realise ${path}`, { check: false });
  assert.equal(r.code, 0, `${host.name} could not substitute ${path}:\n${r.stderr}`);
  const drvThere = await host.exec(`test -e ${drv} && echo present || echo absent`);
  assert.equal(drvThere.stdout.trim(), "absent", "production must not have had the derivation");
  return (await host.exec(`${NIX} path-info --sigs ${path}`)).stdout;
}

describe("NixSshCache end to end (staging + 2 production hosts)", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prods: TestHost[];

  before(async () => {
    hosts = await startHosts([
      { name: "stage" },
      { name: "prod1", loginUser: "ship" },
      { name: "prod2", rootKey: false },
    ]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1"), hosts.byName("prod2")];
    stack = new PulumiStack(repoRoot, "e2e");
    await stack.init();
    await stack.setConfigObjects(
      {
        // Staging's host key is not pinned for the operator here: a test replaces it below.
        staging: { host: stage.address, cacheHost: stage.fqdn },
        production: prods.map((p) => ({
          host: p.address,
          user: p.user,
          hostKey: p.hostKey,
          name: p.name,
        })),
      },
      PROJECT,
    );
    await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("pulumi up configures everything and production verifies the cache", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const out = await stack.outputs();
    assert.equal(out.verified, true);
    assert.match(String(out.cachePublicKey), /^stage\.test:[A-Za-z0-9+/]{43}=$/);
    assert.equal(out.substituterUrl, "ssh://nix-ssh@stage.test");
    assert.equal(out.stagingHostKey, stage.hostKey);
    const rootKeys = out.productionRootKeys as string[];
    assert.equal(rootKeys.length, 2);
    // prod2's root had no key: one was generated on the host.
    assert.match((await prods[1].exec("cat /root/.ssh/id_ed25519.pub")).stdout, /^ssh-ed25519 /);
    // The private signing key stays on staging, root-only, and out of the state.
    const mode = await stage.exec("stat -c '%a %U:%G' /etc/shipnix/binary/cache-priv-key.pem");
    assert.equal(mode.stdout.trim(), "600 root:root");
    const secret = (await stage.exec("cat /etc/shipnix/binary/cache-priv-key.pem")).stdout.trim();
    const secretBase64 = secret.split(":")[1];
    assert.ok(!(await stack.exportState(true)).includes(secretBase64), "signing key in state");
    assert.ok(!up.output.includes(secretBase64), "signing key in CLI output");
  });

  it("a path built on staging after up is substituted by every production host, signed", async () => {
    const { out, drv } = await buildOnStaging(stage, "after-up");
    for (const prod of prods) {
      const sigs = await substitute(prod, out, drv);
      assert.match(sigs, /stage\.test:/, `${prod.name}: path not signed by staging`);
    }
  });

  it("a second up changes nothing and preview expects no changes", async () => {
    const up = await stack.up(["--expect-no-changes"]);
    assert.equal(up.code, 0, up.output);
    const preview = await stack.preview(["--expect-no-changes"]);
    assert.equal(preview.code, 0, preview.output);
  });

  it("an edited fragment is shown by preview --refresh and restored by up --refresh", async () => {
    const file = "/etc/nix/nix-ssh-cache.conf";
    const before = (await prods[0].exec(`cat ${file}`)).stdout;
    await prods[0].exec(`echo 'extra-substituters = ssh://evil.example' >> ${file}`);
    const preview = await stack.preview(["--refresh", "--expect-no-changes"]);
    assert.notEqual(preview.code, 0, "preview --refresh must show the drift");
    assert.match(preview.output, /prod1-nix-conf/);
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    assert.equal((await prods[0].exec(`cat ${file}`)).stdout, before);
  });

  it("a deleted signing key is regenerated by one up --refresh and production trusts the new one", async () => {
    const oldKey = String((await stack.outputs()).cachePublicKey);
    await stage.exec(
      "rm -f /etc/shipnix/binary/cache-priv-key.pem /etc/shipnix/binary/cache-pub-key.pem",
    );
    const preview = await stack.preview(["--refresh", "--expect-no-changes"]);
    assert.notEqual(preview.code, 0, "preview --refresh must show the missing key");
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    const newKey = String((await stack.outputs()).cachePublicKey);
    assert.notEqual(newKey, oldKey);
    const { out, drv } = await buildOnStaging(stage, "after-key-loss");
    for (const prod of prods) await substitute(prod, out, drv);
  });

  it("a replaced staging host key is re-read and re-pinned by one up --refresh", async () => {
    await stage.exec(
      "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key",
    );
    await stage.stopSshd();
    await stage.startSshd();
    const newHostKey = (
      await stage.exec("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")
    ).stdout.trim();
    // Until production is updated, substitution fails on the pinned key: no silent re-trust.
    const { out, drv } = await buildOnStaging(stage, "after-host-key");
    const refused = await prods[0].exec(`nix-store --realise ${out}`, { check: false });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /Host key verification failed/);

    const preview = await stack.preview(["--refresh", "--expect-no-changes"]);
    assert.notEqual(preview.code, 0, "preview --refresh must show the new host key");
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    assert.equal((await stack.outputs()).stagingHostKey, newHostKey);
    for (const prod of prods) await substitute(prod, out, drv);
  });

  it("destroy removes the configuration and keeps the signing key", async () => {
    const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
    assert.equal(destroy.code, 0, destroy.output);
    for (const prod of prods) {
      const left = await prod.exec(
        "ls /etc/nix/nix-ssh-cache.conf /etc/ssh/ssh_config.d/nix-ssh-cache.conf 2>/dev/null || true",
      );
      assert.equal(left.stdout.trim(), "", `${prod.name} still has managed files`);
      assert.doesNotMatch((await prod.exec("cat /etc/nix/nix.conf")).stdout, /nix-ssh-cache/);
    }
    const sshd = await stage.exec(
      "ls /etc/ssh/sshd_config.d/nix-ssh-cache.conf 2>/dev/null || true",
    );
    assert.equal(sshd.stdout.trim(), "");
    const key = await stage.exec("test -e /etc/shipnix/binary/cache-priv-key.pem && echo kept");
    assert.equal(key.stdout.trim(), "kept");
    assert.equal((await stage.exec("id nix-ssh 2>/dev/null || echo gone")).stdout.trim(), "gone");
  });
});
