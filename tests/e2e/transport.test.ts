/**
 * A change of how we reach the hosts is not a change of the hosts: after the operator's SSH key
 * is rotated (`sshKey` set to a second authorised key, the first one removed from the hosts),
 * `pulumi up` logs in to each host at most once, with the new key, runs no step (no script
 * session beyond that one login's proof, managed files untouched) and the next preview is clean.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { exampleStack } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();

/** Files the example stack manages on plain Linux, by host role. */
const MANAGED = {
  stage: [
    "/etc/ssh/sshd_config.d/nix-ssh-cache.conf",
    "/etc/nix/nix-ssh-cache.conf",
    "/etc/ssh/nix-ssh-cache/authorized_keys",
    "/etc/shipnix/binary/cache-priv-key.pem",
  ],
  prod: [
    "/etc/nix/nix-ssh-cache.conf",
    "/etc/ssh/ssh_config.d/nix-ssh-cache.conf",
    "/etc/ssh/nix-ssh-cache/known_hosts",
  ],
};

/** Modification times (ns) and sizes of a host's managed files. */
async function stamps(h: TestHost, files: string[]): Promise<string> {
  return (await h.exec(`stat -c '%n %Y.%y %s' ${files.join(" ")}`)).stdout;
}

/** The sshd log of a test host. */
function sshdLog(h: TestHost): string {
  return fs.readFileSync(path.join(h.stateDir, "var-log", "sshd.log"), "utf8");
}

describe("no re-runs when only the connection changed (operator key rotation)", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let all: TestHost[];
  let keyDir: string;

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }, { name: "prod2" }]);
    all = hosts.hosts;
    const stage = hosts.byName("stage");
    stack = await exampleStack(repoRoot, "e2e", stage, [
      hosts.byName("prod1"),
      hosts.byName("prod2"),
    ]);
    keyDir = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-operator-key-"));
    execFileSync("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "operator-2",
      "-f",
      path.join(keyDir, "id"),
    ]);
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
    if (keyDir) fs.rmSync(keyDir, { recursive: true, force: true });
  });

  it("a new operator key: at most one login per host, no step runs, next preview clean", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const outputsBefore = await stack.outputs();

    // The second key replaces the first on every host: nothing can log in with the old one.
    const publicKey = fs.readFileSync(path.join(keyDir, "id.pub"), "utf8").trim();
    const fingerprint = execFileSync("ssh-keygen", ["-lf", path.join(keyDir, "id.pub")])
      .toString()
      .split(" ")[1];
    for (const h of all) {
      await h.exec(`printf '%s\\n' '${publicKey}' > /root/.ssh/authorized_keys`);
    }
    const before = new Map<string, { log: number; files: string }>();
    for (const h of all) {
      const files = h.name === "stage" ? MANAGED.stage : MANAGED.prod;
      before.set(h.name, { log: sshdLog(h).length, files: await stamps(h, files) });
    }

    await stack.setConfig("sshKey", fs.readFileSync(path.join(keyDir, "id"), "utf8"), {
      secret: true,
    });
    const rotated = await stack.up();
    assert.equal(rotated.code, 0, rotated.output);

    for (const h of all) {
      const was = before.get(h.name)!;
      const log = sshdLog(h).slice(was.log);
      const logins = [...log.matchAll(/Accepted publickey for (\S+) from .* (SHA256:\S+)/g)];
      assert.ok(logins.length <= 1, `${h.name}: ${logins.length} logins:\n${log}`);
      for (const l of logins)
        assert.equal(l[2], fingerprint, `${h.name}: logged in with another key`);
      const sessions = log.match(/Starting session: command/g) ?? [];
      assert.ok(sessions.length <= 1, `${h.name}: ${sessions.length} scripts ran:\n${log}`);
      const files = h.name === "stage" ? MANAGED.stage : MANAGED.prod;
      assert.equal(await stamps(h, files), was.files, `${h.name}: a managed file changed`);
    }
    assert.doesNotMatch(rotated.output, /wrote \/|restarted nix-daemon|reloaded sshd/);
    assert.deepEqual(await stack.outputs(), outputsBefore);

    const preview = await stack.preview(["--expect-no-changes"]);
    assert.equal(preview.code, 0, preview.output);
  });
});
