/**
 * Reliability, item 4: destroy. `pulumi destroy` removes production's configuration before
 * staging's (the engine deletes in reverse dependency order), keeps the signing key by default
 * (`removeSigningKeyOnDestroy: true` deletes it), and leaves /etc/nix, /etc/ssh, /etc/passwd,
 * /etc/group, /etc/shadow and root's known_hosts as they were before the first up. The one
 * intended difference: a root SSH key generated on a production host that had none is kept.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../../hosts/harness";
import { pulumiSkipReason, PulumiStack } from "../pulumi";
import { exampleStack, hostConfig, PROJECT, snapshotDiff, TEST_TIMEOUT_MS } from "./common";
import { reliabilityCase } from "./record";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const ITEM = "destroy";
const KEY = "/etc/shipnix/binary/cache-priv-key.pem";

/** Contents and attributes of what the component may touch (excluding the signing key dir). */
async function configState(h: TestHost): Promise<string> {
  const r = await h.exec(
    `{ find /etc/nix /etc/ssh /root/.ssh/known_hosts /var/lib/nix-ssh-cache -xdev -printf '%p %y %m %U:%G\\n' 2>/dev/null || true; } | LC_ALL=C sort
     for f in $(find /etc/nix /etc/ssh -xdev -type f | LC_ALL=C sort) /etc/passwd /etc/group /etc/shadow /root/.ssh/known_hosts; do
       [ -f "$f" ] && echo "$f $(sha256sum < "$f" | cut -c1-16)"
     done; true`,
  );
  return r.stdout;
}

/** Resource names in the order the CLI reports them deleted. */
function deleteOrder(output: string): string[] {
  const names: string[] = [];
  for (const line of output.split("\n")) {
    const m = /^\s*-\s+\S+\s+(\S+)\s+deleted\b/.exec(line);
    if (m) names.push(m[1]);
  }
  return names;
}

describe("reliability: destroy", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prods: TestHost[];
  const before0 = new Map<string, string>();

  before(async () => {
    hosts = await startHosts([
      { name: "stage" },
      { name: "prod1", loginUser: "ship" },
      { name: "prod2", rootKey: false },
    ]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1"), hosts.byName("prod2")];
    for (const h of hosts.hosts) before0.set(h.name, await configState(h));
    stack = await exampleStack("destroy", stage.privateKey, hostConfig(stage, prods));
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it(
    "destroy: production first, signing key kept, hosts as before",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const up = await stack.up();
      assert.equal(up.code, 0, up.output.slice(-4000));
      const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
      assert.equal(destroy.code, 0, destroy.output.slice(-4000));
      const order = deleteOrder(destroy.output);

      await reliabilityCase(
        ITEM,
        "delete order",
        "every production configuration step deleted before any staging configuration step",
        async () => {
          const prodSteps = order.filter((n) =>
            /^cache-prod\d-(known-hosts|ssh-config|nix-conf|verify)$/.test(n),
          );
          const stagingSteps = order.filter((n) =>
            /^cache-staging-(authorized-keys|sshd|nix-conf|serve-user|signing-key|canary)$/.test(n),
          );
          assert.ok(prodSteps.length >= 6, `production steps deleted: ${prodSteps.join(", ")}`);
          assert.ok(stagingSteps.length >= 4, `staging steps deleted: ${stagingSteps.join(", ")}`);
          const lastProd = Math.max(...prodSteps.map((n) => order.indexOf(n)));
          const firstStaging = Math.min(...stagingSteps.map((n) => order.indexOf(n)));
          assert.ok(lastProd < firstStaging, `delete order: ${order.join(", ")}`);
          return `${order.length} deletes; last production step #${lastProd + 1}, first staging step #${firstStaging + 1}: ${order.slice(0, 6).join(", ")}, …`;
        },
      );

      await reliabilityCase(
        ITEM,
        "signing key kept by default",
        `${KEY} still on staging`,
        async () => {
          const r = await stage.exec(`stat -c '%a %U:%G' ${KEY}`);
          assert.equal(r.stdout.trim(), "600 root:root");
          return `${KEY} kept (${r.stdout.trim()})`;
        },
      );

      for (const h of hosts.hosts) {
        await reliabilityCase(
          ITEM,
          `${h.fqdn}: /etc/nix, /etc/ssh, passwd, group, shadow, known_hosts as before the first up`,
          "identical contents, modes and owners (the signing key directory on staging excepted)",
          async () => {
            const now = await configState(h);
            const was = before0.get(h.name)!;
            assert.equal(now === was, true, `${h.name} differs:\n${snapshotDiff(was, now)}`);
            return `${now.split("\n").length - 1} entries identical`;
          },
        );
      }

      await reliabilityCase(
        ITEM,
        "prod2.test: root key generated by up (root had none) is kept",
        "the one intended difference: /root/.ssh/id_ed25519 stays (data of the host)",
        async () => {
          const r = await prods[1].exec("cat /root/.ssh/id_ed25519.pub");
          assert.match(r.stdout, /^ssh-ed25519 .*-nix-ssh-cache$/m);
          return `kept: ${r.stdout.trim().split(" ").slice(-1)[0]}`;
        },
      );
    },
  );

  it(
    "removeSigningKeyOnDestroy: true deletes the signing key",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await stack.setConfigObjects({ removeSigningKeyOnDestroy: true }, PROJECT);
      const up = await stack.up();
      assert.equal(up.code, 0, up.output.slice(-4000));
      await reliabilityCase(
        ITEM,
        "removeSigningKeyOnDestroy: true",
        `destroy deletes ${KEY} and its public key`,
        async () => {
          const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
          assert.equal(destroy.code, 0, destroy.output.slice(-4000));
          const r = await stage.exec("ls -A /etc/shipnix/binary 2>&1 || true");
          assert.match(r.stdout, /No such file|^$/);
          return `after destroy: ls /etc/shipnix/binary -> ${r.stdout.trim() || "(empty)"}`;
        },
      );
    },
  );
});
