/**
 * The example stack on the real Pulumi engine, with hosts that differ as real servers do:
 * staging reachable for the operator only through a bastion (config `staging.proxy`), its login
 * user's shell fish; a production host whose login user has zsh and sudo with `requiretty` and
 * a `secure_path` without Nix; the operator's key encrypted (secret `sshKeyPassword`). The full
 * flow: up -> a path built on staging after up is substituted on production -> no-op preview ->
 * destroy.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { closeSshConnections, runScript } from "../../components/ssh";
import { encryptedRunnerKey, forwardsTo, Hidden, hideBehindBastion } from "./bastion";
import { buildOnStaging, operatorConnection, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const first = Number(process.env.NSC_HOSTS_FIRST_ADDRESS || 2);
const NIXLESS_SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin";
const PASSPHRASE = "e2e bastion passphrase";

describe(
  "example stack through a bastion, fish/zsh login shells, sudo requiretty, encrypted key",
  { skip },
  () => {
    let hosts: TestHosts;
    let stack: PulumiStack;
    let jump: TestHost;
    let stage: TestHost;
    let prod: TestHost;
    let hidden: Hidden;
    let tmp: string;

    before(async () => {
      hosts = await startHosts([
        { name: "jump", loginUser: "hop", nixDaemon: false },
        { name: "stage", loginUser: "ship", loginShell: "fish" },
        {
          name: "prod1",
          loginUser: "ship",
          loginShell: "zsh",
          sudoPolicy: "requiretty",
          securePath: NIXLESS_SECURE_PATH,
        },
      ]);
      [jump, stage, prod] = ["jump", "stage", "prod1"].map((n) => hosts.byName(n));
      hidden = await hideBehindBastion(stage, jump, `127.0.0.${first + 30}`);
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-bastion-"));
      stack = new PulumiStack(repoRoot, "e2e");
      await stack.init();
      await stack.setConfigObjects(
        {
          staging: {
            host: hidden.privateName,
            cacheHost: stage.fqdn,
            user: stage.user,
            hostKey: stage.hostKey,
            proxy: { host: jump.address, user: jump.user, hostKey: jump.hostKey },
          },
          production: [
            { host: prod.address, user: prod.user, hostKey: prod.hostKey, name: "prod1" },
          ],
        },
        PROJECT,
      );
      await stack.setConfig("sshKey", encryptedRunnerKey(stage, PASSPHRASE, tmp), { secret: true });
      await stack.setConfig("sshKeyPassword", PASSPHRASE, { secret: true });
    });

    after(async () => {
      closeSshConnections();
      await stack?.dispose();
      await hosts?.teardown();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    it("the hosts differ as intended: staging refuses the operator directly, prod1's sudo needs a tty", async () => {
      const direct = await runScript(operatorConnection(stage), "true").then(
        () => "connected",
        (e: Error) => e.message,
      );
      assert.match(direct, /authentication failed for user ship/);
      assert.match((await stage.exec("getent passwd ship")).stdout, /:\/usr\/bin\/fish$/m);
      assert.match((await prod.exec("getent passwd ship")).stdout, /:\/usr\/bin\/zsh$/m);
      const sudo = await prod.exec("su ship -s /bin/sh -c 'sudo -n true' </dev/null", {
        check: false,
      });
      assert.match(sudo.stderr, /you must have a tty/);
    });

    it("pulumi up configures staging through the bastion and production verifies the cache", async () => {
      const before = forwardsTo(jump, hidden.privateName);
      const up = await stack.up();
      assert.equal(up.code, 0, up.output);
      const out = await stack.outputs();
      assert.equal(out.verified, true);
      assert.equal(out.stagingHostKey, stage.hostKey);
      assert.ok(forwardsTo(jump, hidden.privateName) > before, "the bastion forwarded to staging");
      assert.ok(!up.output.includes(PASSPHRASE), "passphrase in CLI output");
      assert.ok(!(await stack.exportState()).includes(PASSPHRASE), "passphrase in plain state");
    });

    it("a path built on staging after up is substituted by production, signed", async () => {
      const built = await buildOnStaging(stage, "bastion");
      const sigs = await substitute(prod, built);
      assert.ok(
        sigs.some((s) => s.startsWith("stage.test:")),
        "not signed by staging",
      );
    });

    it("preview expects no changes", async () => {
      const preview = await stack.preview(["--expect-no-changes"]);
      assert.equal(preview.code, 0, preview.output);
    });

    it("destroy removes the configuration, staging again through the bastion", async () => {
      const before = forwardsTo(jump, hidden.privateName);
      const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
      assert.equal(destroy.code, 0, destroy.output);
      assert.ok(forwardsTo(jump, hidden.privateName) > before, "the bastion forwarded to staging");
      const left = await prod.exec(
        "ls /etc/nix/nix-ssh-cache.conf /etc/ssh/ssh_config.d/nix-ssh-cache.conf 2>/dev/null || true",
      );
      assert.equal(left.stdout.trim(), "");
      const sshd = await stage.exec(
        "ls /etc/ssh/sshd_config.d/nix-ssh-cache.conf 2>/dev/null || true",
      );
      assert.equal(sshd.stdout.trim(), "");
    });
  },
);
