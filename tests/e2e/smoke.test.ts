/**
 * Smoke tests of the foundation: the real Pulumi CLI and engine, a local file backend, real sshd
 * on test hosts. One host step writes a file on one host over SSH (host key pinned); a second
 * test proves the dynamic provider's `read` runs on refresh and sees drift.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHosts } from "../hosts/harness";
import { makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();

const MARKER = "/root/nsc-smoke-marker";

function program(): string {
  const hostStep = JSON.stringify(path.join(repoRoot, "build", "components", "hostStep.js"));
  return `
const pulumi = require("@pulumi/pulumi");
const { HostStep } = require(${hostStep});
const cfg = new pulumi.Config();
const script = [
  'case "$ACTION" in',
  '  apply) printf "%s\\\\n" "$CONTENT" > "$MARKER.tmp" && mv "$MARKER.tmp" "$MARKER"; echo "{\\\\"exists\\\\":true}" ;;',
  '  read) if [ -e "$MARKER" ]; then echo "{\\\\"exists\\\\":true}"; else echo "{\\\\"exists\\\\":false}"; fi ;;',
  '  remove) rm -f "$MARKER"; echo "{\\\\"exists\\\\":false}" ;;',
  'esac',
].join("\\n");
const marker = new HostStep("marker", {
  connection: {
    host: cfg.require("host"),
    port: 22,
    user: "root",
    privateKey: cfg.requireSecret("sshKey"),
    hostKey: cfg.require("hostKey"),
    become: "none",
  },
  step: "smoke marker",
  script,
  env: { MARKER: ${JSON.stringify(MARKER)}, CONTENT: "written by pulumi" },
  readable: true,
  removable: true,
  driftKeys: ["exists"],
  timeoutSeconds: 60,
});
exports.result = marker.result;
`;
}

describe("smoke: real Pulumi engine against a test host", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;

  before(async () => {
    hosts = await startHosts([
      { name: "alpha", nixDaemon: false },
      { name: "beta", nixDaemon: false },
    ]);
    const alpha = hosts.byName("alpha");
    stack = new PulumiStack(makeProgram("smoke", program()));
    await stack.init();
    await stack.setConfig("host", alpha.address);
    await stack.setConfig("hostKey", alpha.hostKey);
    await stack.setConfig("sshKey", alpha.privateKey, { secret: true });
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  const markerOn = async (name: string) =>
    (await hosts.byName(name).exec(`cat ${MARKER} 2>/dev/null || true`)).stdout.trim();

  it("up writes the file on that host only; preview then shows no changes", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal(await markerOn("alpha"), "written by pulumi");
    assert.equal(await markerOn("beta"), "");

    const preview = await stack.preview(["--expect-no-changes"]);
    assert.equal(preview.code, 0, preview.output);

    const state = await stack.exportState();
    assert.ok(!state.includes("PRIVATE KEY"), "the connection key must be a secret in the state");
  });

  it("refresh calls the dynamic provider's read: a deleted file is drift, up repairs it", async () => {
    await hosts.byName("alpha").exec(`rm -f ${MARKER}`);
    const refresh = await stack.run(["refresh", "--yes", "--skip-preview"]);
    assert.equal(refresh.code, 0, refresh.output);
    const drifted = await stack.preview(["--expect-no-changes"]);
    assert.notEqual(drifted.code, 0, "preview after a drifted refresh must show a change");
    assert.match(drifted.output, /marker/);

    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal(await markerOn("alpha"), "written by pulumi");
    const clean = await stack.preview(["--expect-no-changes"]);
    assert.equal(clean.code, 0, clean.output);
  });

  it("a wrong pinned host key is refused before anything runs", async () => {
    await stack.setConfig("hostKey", hosts.byName("beta").hostKey);
    await hosts.byName("alpha").exec(`rm -f ${MARKER}`);
    const up = await stack.run(["up", "--yes", "--skip-preview", "--refresh"]);
    assert.notEqual(up.code, 0);
    assert.match(up.output, /host key does not match the pinned hostKey/);
    assert.equal(await markerOn("alpha"), "");
    await stack.setConfig("hostKey", hosts.byName("alpha").hostKey);
  });

  it("destroy removes the file", async () => {
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
    assert.equal(destroy.code, 0, destroy.output);
    assert.equal(await markerOn("alpha"), "");
  });
});
