/**
 * Split stacks: staging and production in two projects on one local backend. The staging stack
 * (CacheServer) exports the cache's coordinates as one object; the production stack (another
 * project, CacheClient) reads them with a StackReference and exports its root key, which the
 * staging stack reads back with a StackReference into `authorizedKeys`. The documented order
 * (docs/integration.md, "Split stacks") converges in three `up`s: production, staging, production.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, substitute } from "./helpers";
import { makeBackendDir, makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const COMPONENTS = JSON.stringify(path.join(repoRoot, "build", "components"));

/** The staging project: a CacheServer authorising the keys production stacks export. */
const STAGING_PROGRAM = `const pulumi = require("@pulumi/pulumi");
const { CacheServer } = require(${COMPONENTS});
const cfg = new pulumi.Config();
module.exports = async () => {
  // Keys of the production stacks that exist and have exported one (none on the first run).
  const authorizedKeys = [];
  for (const name of cfg.getObject("productionStacks") || []) {
    const key = await new pulumi.StackReference(name).getOutputDetails("rootKey");
    if (key.value) authorizedKeys.push(key.value);
  }
  const server = new CacheServer("cache", {
    host: {
      connection: { ...cfg.requireObject("staging"), privateKey: cfg.requireSecret("sshKey") },
      cacheHost: cfg.get("cacheHost"),
    },
    authorizedKeys,
  });
  return { cache: server.coordinates };
};
`;

/** The production project: its identity always; its CacheClient once staging exports a cache. */
const PRODUCTION_PROGRAM = `const pulumi = require("@pulumi/pulumi");
const { CacheClient, ClientIdentity } = require(${COMPONENTS});
const cfg = new pulumi.Config();
module.exports = async () => {
  const host = {
    connection: { ...cfg.requireObject("host"), privateKey: cfg.requireSecret("sshKey") },
  };
  const identity = new ClientIdentity("web-identity", { host });
  const staging = new pulumi.StackReference(cfg.require("stagingStack"));
  const cache = await staging.getOutputDetails("cache");
  if (!cache.value) return { rootKey: identity.publicKey, verified: false };
  const client = new CacheClient("web", { host, identity, cache: staging.requireOutput("cache") });
  return { rootKey: identity.publicKey, verified: client.verified };
};
`;

describe(
  "split stacks: a staging project and a production project on one backend",
  { skip },
  () => {
    let hosts: TestHosts;
    let backendDir: string;
    let staging: PulumiStack;
    let production: PulumiStack;
    let stage: TestHost;
    let prod: TestHost;

    before(async () => {
      hosts = await startHosts([{ name: "stage" }, { name: "web" }]);
      stage = hosts.byName("stage");
      prod = hosts.byName("web");
      backendDir = makeBackendDir();
      staging = new PulumiStack(makeProgram("cache-staging", STAGING_PROGRAM), "stage", {
        backendDir,
      });
      production = new PulumiStack(makeProgram("cache-web", PRODUCTION_PROGRAM), "prod", {
        backendDir,
      });
      await staging.init();
      await production.init();
      // On a local (file) backend, stacks are named organization/<project>/<stack>.
      await staging.setConfigObjects(
        {
          staging: { host: stage.address, hostKey: stage.hostKey },
          cacheHost: stage.fqdn,
          productionStacks: ["organization/cache-web/prod"],
        },
        "cache-staging",
      );
      await staging.setConfig("sshKey", stage.privateKey, { secret: true });
      await production.setConfigObjects(
        { host: { host: prod.address, hostKey: prod.hostKey } },
        "cache-web",
      );
      await production.setConfig("stagingStack", "organization/cache-staging/stage");
      await production.setConfig("sshKey", prod.privateKey, { secret: true });
    });

    after(async () => {
      for (const s of [production, staging]) {
        const dir = s?.projectDir;
        await s?.dispose();
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
      }
      if (backendDir) fs.rmSync(backendDir, { recursive: true, force: true });
      await hosts?.teardown();
    });

    it("1. production up: exports its root key (staging has no cache yet)", async () => {
      const up = await production.up();
      assert.equal(up.code, 0, up.output);
      const out = await production.outputs();
      assert.match(String(out.rootKey), /^ssh-ed25519 /);
      assert.equal(out.verified, false);
    });

    it("2. staging up: authorises that key and exports the cache coordinates", async () => {
      const up = await staging.up();
      assert.equal(up.code, 0, up.output);
      const cache = (await staging.outputs()).cache as Record<string, unknown>;
      assert.equal(cache.substituterUrl, "ssh://nix-ssh@stage.test");
      assert.equal(cache.hostKey, stage.hostKey);
      assert.match(String(cache.canaryPath), /^\/nix\/store\//);
      const rootKey = String((await production.outputs()).rootKey);
      const keys = (await stage.exec("cat /etc/ssh/nix-ssh-cache/authorized_keys")).stdout;
      assert.ok(keys.includes(rootKey.split(" ")[1]), "production's key is not authorised");
    });

    it("3. production up: CacheClient configures the host and verifies the cache", async () => {
      const up = await production.up();
      assert.equal(up.code, 0, up.output);
      assert.equal((await production.outputs()).verified, true);
    });

    it("converged: neither stack has changes; production substitutes a staging-built path", async () => {
      assert.equal((await staging.preview(["--expect-no-changes"])).code, 0);
      assert.equal((await production.preview(["--expect-no-changes"])).code, 0);
      const sigs = await substitute(prod, await buildOnStaging(stage, "split"));
      assert.ok(
        sigs.some((s) => s.startsWith("stage.test:")),
        `not signed by staging: ${sigs}`,
      );
    });
  },
);
