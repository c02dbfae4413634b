/**
 * A fleet: one staging host and 8 production hosts in one `pulumi up` (the example stack), then
 * adding and removing one host. `pulumi preview --json` must show changes only for that host's
 * resources and its own entry in staging's authorised keys (`cache-staging-authorize-<host>`,
 * created or deleted): no other production host, and nothing else on staging, is touched.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, changedSteps, resourceName, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const FLEET = 8;
/** Resource operations at once: the hosts share a small machine. */
const PARALLEL = ["--parallel", "8"];

describe(
  `fleet: staging + ${FLEET} production hosts, then one added and one removed`,
  { skip },
  () => {
    let hosts: TestHosts;
    let stack: PulumiStack;
    let stage: TestHost;
    let prods: TestHost[];
    let extra: TestHost;

    const production = (list: TestHost[]) =>
      list.map((p) => ({ host: p.address, hostKey: p.hostKey, name: p.name }));

    /** Non-`same` steps of a preview, by resource name. */
    async function previewChanges(): Promise<Map<string, string>> {
      const preview = await stack.ok(["preview", "--json", ...PARALLEL]);
      const changes = new Map<string, string>();
      for (const step of changedSteps(preview.stdout)) {
        if (step.urn.includes("::pulumi:pulumi:Stack::")) continue; // outputs, not resources
        changes.set(resourceName(step.urn), step.op);
      }
      return changes;
    }

    /** Asserts the changes are exactly `host`'s resources and its key entry on staging (all `op`). */
    function assertOnly(changes: Map<string, string>, host: TestHost, op: "create" | "delete") {
      const prefix = `cache-${host.name}-`;
      const entry = `cache-staging-authorize-${host.name}`;
      const isOwn = (n: string) =>
        n === `cache-${host.name}` || n.startsWith(prefix) || n === entry;
      const own = [...changes].filter(([n]) => isOwn(n));
      const rest = [...changes].filter(([n]) => !isOwn(n));
      assert.ok(own.length >= 5, `expected ${host.name}'s resources, got ${JSON.stringify(own)}`);
      for (const [n, o] of own) assert.equal(o, op, `${n}: expected ${op}, got ${o}`);
      assert.deepEqual(rest, [], `unexpected changes (all: ${JSON.stringify([...changes])})`);
      assert.equal(changes.get(entry), op);
    }

    before(async () => {
      const names = ["stage", ...Array.from({ length: FLEET + 1 }, (_, i) => `prod${i + 1}`)];
      hosts = await startHosts(names.map((name) => ({ name })));
      stage = hosts.byName("stage");
      prods = hosts.hosts.filter((h) => h.name !== "stage").slice(0, FLEET);
      extra = hosts.byName(`prod${FLEET + 1}`);
      stack = new PulumiStack(repoRoot, "fleet");
      await stack.init();
      await stack.setConfigObjects(
        {
          staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
          production: production(prods),
        },
        PROJECT,
      );
      await stack.setConfig("sshKey", stage.privateKey, { secret: true });
    });

    after(async () => {
      await stack?.dispose();
      await hosts?.teardown();
    });

    it(`one pulumi up configures ${FLEET} production hosts and all verify`, async () => {
      const started = process.hrtime.bigint();
      const up = await stack.up(PARALLEL);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      assert.equal(up.code, 0, up.output);
      console.log(
        `# fleet: pulumi up of staging + ${FLEET} production hosts took ${seconds.toFixed(1)} s`,
      );
      const out = await stack.outputs();
      assert.equal(out.verified, true);
      const verifiedHosts = out.hosts as { name: string; verified: boolean }[];
      assert.equal(verifiedHosts.length, FLEET);
      assert.ok(verifiedHosts.every((h) => h.verified));
      const path = await buildOnStaging(stage, "fleet");
      await Promise.all(prods.map((p) => substitute(p, path)));
    });

    it("adding a host: preview shows only its resources and staging's key list; up verifies it", async () => {
      await stack.setConfigObjects({ production: production([...prods, extra]) }, PROJECT);
      const changes = await previewChanges();
      console.log(`# fleet: add ${extra.name}: ${JSON.stringify([...changes])}`);
      assertOnly(changes, extra, "create");

      const up = await stack.up(PARALLEL);
      assert.equal(up.code, 0, up.output);
      const out = await stack.outputs();
      assert.equal(out.verified, true);
      assert.equal((out.hosts as unknown[]).length, FLEET + 1);
      await substitute(extra, await buildOnStaging(stage, "added"));
    });

    it("removing a host: preview shows only its deletion and staging's key list; up revokes it", async () => {
      const removed = prods[3];
      const rootKey = (
        await removed.exec("cut -d' ' -f1,2 /root/.ssh/id_ed25519.pub")
      ).stdout.trim();
      const kept = [...prods.filter((p) => p !== removed), extra];
      await stack.setConfigObjects({ production: production(kept) }, PROJECT);
      const changes = await previewChanges();
      console.log(`# fleet: remove ${removed.name}: ${JSON.stringify([...changes])}`);
      assertOnly(changes, removed, "delete");

      const up = await stack.up(PARALLEL);
      assert.equal(up.code, 0, up.output);
      const keys = (await stage.exec("cat /etc/ssh/nix-ssh-cache/authorized_keys")).stdout;
      assert.ok(!keys.includes(rootKey), `${removed.name}'s key is still authorised on staging`);
      assert.equal(keys.trim().split("\n").length, FLEET);
      const left = await removed.exec("ls /etc/nix/nix-ssh-cache.conf 2>/dev/null || true");
      assert.equal(left.stdout.trim(), "", `${removed.name} still has the nix.conf fragment`);
      assert.equal((await stack.preview(["--expect-no-changes"])).code, 0);
    });
  },
);
