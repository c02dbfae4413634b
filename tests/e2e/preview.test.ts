/**
 * A preview a reviewer can read: after one setting changes (`protocol: ssh-ng`), the example
 * stack's `pulumi preview --diff` shows the changed `ForceCommand` line of staging's sshd drop-in
 * as a text diff, holds no base64 blob and no script body, names resources and ids by role, and
 * stays short.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { e2eSkipReason, startHosts, TestHosts } from "../hosts/harness";
import { previewAfterProtocolChange } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();

/**
 * Lines of the same preview before issue 12 (commit fe1030e), measured with the same procedure
 * ({@link previewAfterProtocolChange} on that checkout): 16 resources to update, every managed
 * file as `FILE_CONTENT_B64`.
 */
const BEFORE_LINES = 340;

describe("a readable preview after protocol: ssh-ng", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack | undefined;
  let preview = "";

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }, { name: "prod2" }]);
    ({ stack, preview } = await previewAfterProtocolChange(hosts, repoRoot));
    console.log(`preview --diff: ${preview.split("\n").length} lines\n${preview}`);
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("shows the ForceCommand line of the sshd drop-in as a text diff", () => {
    assert.match(preview, /^\s*-\s+ForceCommand nix-store --serve\s*$/m);
    assert.match(preview, /^\s*\+\s+ForceCommand nix-daemon --stdio\s*$/m);
    assert.match(preview, /cache-staging-sshd-config/);
  });

  it("holds no base64 blob and no script body", () => {
    const blob = /[A-Za-z0-9+/]{120,}={0,2}/.exec(preview);
    assert.equal(blob, null, `base64 blob in preview: ${blob?.[0].slice(0, 60)}...`);
    assert.doesNotMatch(preview, /FILE_CONTENT_B64/);
    assert.doesNotMatch(preview, /nsc_require_env|set -euo pipefail/);
  });

  it("names ids by role and host, and leaves out steps for another OS", () => {
    assert.doesNotMatch(preview, /\[id=[^\]]*\/[a-z0-9]{8}\]/, "timestamped ids");
    assert.doesNotMatch(preview, /nixos-rebuild/, "NixOS-only steps on plain Linux hosts");
  });

  it("is at most a third of the length before this change", () => {
    const lines = preview.split("\n").length;
    assert.ok(lines * 3 <= BEFORE_LINES, `${lines} lines; before: ${BEFORE_LINES}`);
  });
});
