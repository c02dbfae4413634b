/**
 * Rotating the signing key with an overlap (docs/operations.md, "Rotating the signing key"), on the example
 * stack: (a) `signingKey: { generation: 1, previousGenerations: [0] }` then (b)
 * `signingKey: { generation: 1 }`. After each `up`, production substitutes a fresh staging-built
 * path; during the overlap a path signed with the OLD key only still substitutes; paths built
 * before the rotation keep substituting after the old key is retired (staging re-signed them).
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { BuiltPath, buildOnStaging, NIX, signaturesOf, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const OLD_KEY_FILE = "/etc/shipnix/binary/cache-priv-key.pem";
const NEW_KEY_FILE = "/etc/shipnix/binary/cache-priv-key-1.pem";

const keyName = (key: string) => key.split(":")[0];

describe("signing key rotation with an overlap", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod: TestHost;
  let oldKey: string;
  let builtBefore: BuiltPath;

  async function trustedKeys(): Promise<string[]> {
    const config = (await prod.exec(`${NIX} show-config`)).stdout;
    return /^trusted-public-keys = (.*)$/m.exec(config)?.[1].split(" ") ?? [];
  }

  async function coordinatesKeys(): Promise<string[]> {
    const out = await stack.outputs();
    return (out.coordinates as { publicKeys: string[] }).publicKeys;
  }

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prod = hosts.byName("prod1");
    stack = new PulumiStack(repoRoot, "rotation");
    await stack.init();
    await stack.setConfigObjects(
      {
        staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
        production: [{ host: prod.address, hostKey: prod.hostKey, name: "prod1" }],
      },
      PROJECT,
    );
    await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("generation 0: the seed's key", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    oldKey = String((await stack.outputs()).cachePublicKey);
    assert.equal(keyName(oldKey), "stage.test");
    assert.deepEqual(await coordinatesKeys(), [oldKey]);
    // Built before the rotation, substituted only after the old key is retired.
    builtBefore = await buildOnStaging(stage, "before-rotation");
    assert.deepEqual(await signaturesOf(stage, builtBefore.out).then(names), ["stage.test"]);
  });

  it("(a) generation 1 with generation 0 kept: production trusts both, staging signs with both", async () => {
    await stack.setConfigObjects(
      { signingKey: { generation: 1, previousGenerations: [0] } },
      PROJECT,
    );
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const newKey = String((await stack.outputs()).cachePublicKey);
    assert.equal(keyName(newKey), "stage.test-1");
    assert.deepEqual(await coordinatesKeys(), [newKey, oldKey]);
    const trusted = await trustedKeys();
    assert.ok(trusted.includes(newKey) && trusted.includes(oldKey), `trusted: ${trusted}`);
    const mode = await stage.exec(`stat -c '%a %U:%G' ${NEW_KEY_FILE}`);
    assert.equal(mode.stdout.trim(), "600 root:root");

    const fresh = await buildOnStaging(stage, "overlap");
    assert.deepEqual(names(await substitute(prod, fresh)), ["stage.test", "stage.test-1"]);
    // A path signed with the old key only still substitutes during the overlap.
    const oldOnly = await buildOnStaging(
      stage,
      "old-only",
      `--option secret-key-files ${OLD_KEY_FILE}`,
    );
    assert.deepEqual(names(await signaturesOf(stage, oldOnly.out)), ["stage.test"]);
    await substitute(prod, oldOnly);
    // Staging re-signed the paths it had with the new key.
    assert.deepEqual(names(await signaturesOf(stage, builtBefore.out)), [
      "stage.test",
      "stage.test-1",
    ]);
  });

  it("(b) generation 0 retired: only the new key is trusted, older paths still substitute", async () => {
    await stack.setConfigObjects({ signingKey: { generation: 1 } }, PROJECT);
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const newKey = String((await stack.outputs()).cachePublicKey);
    assert.deepEqual(await coordinatesKeys(), [newKey]);
    const trusted = await trustedKeys();
    assert.ok(trusted.includes(newKey) && !trusted.includes(oldKey), `trusted: ${trusted}`);

    const fresh = await buildOnStaging(stage, "after-retire");
    assert.deepEqual(names(await signaturesOf(stage, fresh.out)), ["stage.test-1"]);
    await substitute(prod, fresh);
    // Built before the rotation: substitutes through the signature added in (a).
    await substitute(prod, builtBefore);
    // Signed with the retired key only: refused.
    const oldOnly = await buildOnStaging(
      stage,
      "retired",
      `--option secret-key-files ${OLD_KEY_FILE}`,
    );
    const refused = await prod.exec(`nix-store --realise ${oldOnly.out}`, { check: false });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /is not signed by any of the keys|lacks a signature/);
    // The retired key stays on staging (keys are data), root-only.
    assert.equal((await stage.exec(`stat -c '%a' ${OLD_KEY_FILE}`)).stdout.trim(), "600");
    assert.equal((await stack.preview(["--expect-no-changes"])).code, 0);
  });
});

function names(signatures: string[]): string[] {
  return signatures.map((s) => keyName(s)).sort();
}
