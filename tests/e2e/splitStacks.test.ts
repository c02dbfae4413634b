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
import { SERVE_USER_EFFECTIVE } from "../unit/fixtures";

const skip = e2eSkipReason() ?? pulumiSkipReason();
/** Where the crafted ProxyCommand would leave its mark on production (a host-own directory). */
const MARKER = "/var/lib/nix-ssh-cache-crafted-proxycommand-ran";
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

/**
 * A project that exports crafted coordinates (as a compromised or careless stack could): the
 * real staging's, with a port, a host name and a cache key that carry configuration lines (the
 * review's port gave root a ProxyCommand and StrictHostKeyChecking no on NixOS).
 */
const CRAFTED_PROGRAM = `const pulumi = require("@pulumi/pulumi");
const cfg = new pulumi.Config();
module.exports = async () => {
  const real = (await new pulumi.StackReference(cfg.require("stagingStack")).getOutputDetails("cache")).value;
  const marker = cfg.require("marker");
  return {
    cache: {
      ...real,
      port: real.port + "\\n  ProxyCommand sh -c 'touch " + marker + "'\\n  StrictHostKeyChecking no",
      hostName: real.hostName + "\\n  StrictHostKeyChecking no",
      publicKeys: [real.publicKeys[0] + "\\nrequire-sigs = false"],
    },
  };
};
`;

/**
 * Production's files the client writes (not the fetcher in /usr/local/sbin: its bytes are
 * checked by fetch.test.ts).
 */
const PRODUCTION_FILES = [
  "/etc/ssh/ssh_config.d/nix-ssh-cache.conf",
  "/etc/ssh/nix-ssh-cache/known_hosts",
  "/etc/nix/nix-ssh-cache.conf",
];

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
    let crafted: PulumiStack;
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
      crafted = new PulumiStack(makeProgram("cache-crafted", CRAFTED_PROGRAM), "crafted", {
        backendDir,
      });
      await staging.init();
      await production.init();
      await crafted.init();
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
      await crafted.setConfig("stagingStack", "organization/cache-staging/stage");
      await crafted.setConfig("marker", MARKER);
    });

    after(async () => {
      for (const s of [crafted, production, staging]) {
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
      // the serve user is confined (the drop-in's Match block), root is not affected
      const nixSsh = await stage.exec("sshd -T -C user=nix-ssh,host=web.test,addr=127.0.0.1");
      for (const line of SERVE_USER_EFFECTIVE) {
        assert.match(nixSsh.stdout, new RegExp(`^${line}$`, "m"), `nix-ssh: ${line}`);
      }
      const root = await stage.exec("sshd -T -C user=root,host=web.test,addr=127.0.0.1");
      assert.match(root.stdout, /^disableforwarding no$/m);
      assert.match(root.stdout, /^forcecommand none$/m);
    });

    it("3. production up: CacheClient configures the host and verifies the cache", async () => {
      const up = await production.up();
      assert.equal(up.code, 0, up.output);
      assert.equal((await production.outputs()).verified, true);
      // root's ssh checks staging against the pinned key only, never asks
      const toStaging = (await prod.exec("ssh -G stage.test")).stdout;
      assert.match(toStaging, /^stricthostkeychecking true$/m);
      assert.match(toStaging, /^userknownhostsfile \/etc\/ssh\/nix-ssh-cache\/known_hosts$/m);
      assert.match(toStaging, /^batchmode yes$/m);
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

    it("crafted coordinates from another stack: up fails naming the fields, production unchanged", async (t) => {
      const files = () =>
        prod.exec(
          PRODUCTION_FILES.map((f) => `echo "== ${f}"; cat ${f} 2>&1 || echo "(absent)"`).join(
            "; ",
          ),
        );
      const before = (await files()).stdout;
      const up0 = await crafted.up();
      assert.equal(up0.code, 0, up0.output);
      await production.setConfig("stagingStack", "organization/cache-crafted/crafted");
      const up = await production.up();
      assert.notEqual(up.code, 0, up.output);
      const line = up.output.split("\n").find((l) => l.includes("invalid input"));
      t.diagnostic(line?.trim() ?? "(no invalid-input line)");
      for (const field of ["cache.port (", "cache.hostName (", "cache.publicKeys[0] ("]) {
        assert.ok(up.output.includes(field), `${field} not named:\n${up.output}`);
      }
      // nothing changed on production, and the crafted ProxyCommand never ran
      assert.equal((await files()).stdout, before);
      assert.equal((await prod.exec(`test -e ${MARKER}`, { check: false })).code, 1);
      const toStaging = (await prod.exec("ssh -G stage.test")).stdout;
      assert.match(toStaging, /^stricthostkeychecking true$/m);
      assert.doesNotMatch(toStaging, /proxycommand/);
      // back to the real staging: nothing to change (the failed up stored nothing crafted)
      await production.setConfig("stagingStack", "organization/cache-staging/stage");
      assert.equal((await production.preview(["--expect-no-changes"])).code, 0);
    });
  },
);
