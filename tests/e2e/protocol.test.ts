/**
 * `protocol: "ssh-ng"` (staging's serve user is forced to `nix-daemon --stdio`) with substituter
 * URL parameters (`priority`, `compress`): the same URL reaches the NixOS module and, on plain
 * Linux, the included nix.conf; production substitutes a staging-built path through it.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, NIX, substitute } from "./helpers";
import { makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const COMPONENTS = JSON.stringify(path.join(repoRoot, "build", "components"));
const URL = "ssh-ng://nix-ssh@stage.test?compress=true&priority=30";

const PROGRAM = `const pulumi = require("@pulumi/pulumi");
const { NixSshCache } = require(${COMPONENTS});
const cfg = new pulumi.Config();
const hostModel = ({ name, cacheHost, ...connection }) => ({
  connection: { ...connection, privateKey: cfg.requireSecret("sshKey") },
  name,
  cacheHost,
});
const cache = new NixSshCache("cache", {
  staging: hostModel(cfg.requireObject("staging")),
  production: cfg.requireObject("production").map(hostModel),
  protocol: "ssh-ng",
  priority: 30,
  compress: true,
});
module.exports = {
  substituterUrl: cache.substituterUrl,
  productionModule: cache.productionModule,
  stagingModule: cache.stagingModule,
  verified: cache.verified,
};
`;

describe("ssh-ng with substituter URL parameters", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod: TestHost;

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prod = hosts.byName("prod1");
    stack = new PulumiStack(makeProgram("cache-ssh-ng", PROGRAM), "e2e");
    await stack.init();
    await stack.setConfigObjects(
      {
        staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
        production: [{ host: prod.address, hostKey: prod.hostKey, name: "prod1" }],
      },
      "cache-ssh-ng",
    );
    await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  });

  after(async () => {
    const dir = stack?.projectDir;
    await stack?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    await hosts?.teardown();
  });

  it("pulumi up serves with nix-daemon --stdio and production verifies over ssh-ng", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const out = await stack.outputs();
    assert.equal(out.verified, true);
    assert.equal(out.substituterUrl, URL);
    assert.match(
      String(out.productionModule),
      /nix\.settings\.substituters = \[ "ssh-ng:\/\/nix-ssh@stage\.test\?compress=true&priority=30" \];/,
    );
    assert.match(String(out.stagingModule), /nix\.sshServe\.protocol = "ssh-ng";/);
    const sshd = (await stage.exec("cat /etc/ssh/sshd_config.d/nix-ssh-cache.conf")).stdout;
    assert.match(sshd, /^\s*ForceCommand nix-daemon --stdio$/m);
  });

  it("plain Linux: the included nix.conf carries the same URL", async () => {
    const config = (await prod.exec(`${NIX} show-config`)).stdout;
    const substituters = /^substituters = (.*)$/m.exec(config)?.[1].split(" ") ?? [];
    assert.ok(substituters.includes(URL), `substituters: ${substituters.join(" ")}`);
  });

  it("a path built on staging is substituted over ssh-ng", async () => {
    const sigs = await substitute(prod, await buildOnStaging(stage, "ssh-ng"));
    assert.ok(
      sigs.some((s) => s.startsWith("stage.test:")),
      `not signed by staging: ${sigs}`,
    );
  });
});
