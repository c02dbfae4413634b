import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";

const skip = e2eSkipReason();

/** Nix wire format: little-endian u64, and strings padded to 8 bytes. */
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
function str(s: string): Buffer {
  return Buffer.concat([u64(s.length), Buffer.from(s), Buffer.alloc((8 - (s.length % 8)) % 8)]);
}

describe("test hosts harness", { skip }, () => {
  let env: TestHosts;
  let knownHosts: string;
  let initPids: number[] = [];
  let tornDown = false;

  before(async () => {
    const t0 = Date.now();
    env = await startHosts([
      { name: "stage" },
      { name: "prod1", loginUser: "ship", rootKey: true },
      { name: "prod2", rootKey: false },
    ]);
    console.log(`# 3 test hosts up in ${Date.now() - t0} ms (state ${env.stateDir})`);
    initPids = env.hosts.map((h) => h.initPid);
    knownHosts = path.join(env.stateDir, "known_hosts");
    fs.writeFileSync(
      knownHosts,
      env.hosts.map((h) => `${h.address} ${h.hostKey}`).join("\n") + "\n",
    );
  });

  after(async () => {
    if (env && !tornDown) await env.teardown();
  });

  function ssh(h: TestHost, command: string) {
    return spawnSync("ssh", [...sshArgs(h), command], { encoding: "utf8", timeout: 30_000 });
  }

  function sshArgs(h: TestHost): string[] {
    return [
      "-i",
      h.privateKeyPath,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      `UserKnownHostsFile=${knownHosts}`,
      "-o",
      "GlobalKnownHostsFile=/dev/null",
      "-o",
      "ConnectTimeout=10",
      "-p",
      String(h.port),
      `${h.user}@${h.address}`,
    ];
  }

  it("ssh with strict host key checking reaches each host, and each host has its own filesystem", async () => {
    for (const h of env.hosts) {
      const r = ssh(h, "echo ok; cat /etc/hostname");
      assert.equal(r.status, 0, `ssh to ${h.name}: ${r.stderr}`);
      assert.equal(r.stdout, `ok\n${h.fqdn}\n`);
    }
    const prod1 = env.byName("prod1");
    const marker = "/root/nsc-marker-prod1";
    await prod1.exec(`echo here > ${marker}`);
    assert.equal(ssh(prod1, `sudo -n cat ${marker}`).stdout, "here\n");
    assert.notEqual(
      ssh(env.byName("stage"), `test -e ${marker}`).status,
      0,
      "marker leaked to stage",
    );
    assert.equal(fs.existsSync(marker), false, "marker leaked to the runner");
  });

  it("the non-root login user gets root with sudo -n", () => {
    const prod1 = env.byName("prod1");
    assert.equal(prod1.user, "ship");
    const r = ssh(prod1, "id -un; sudo -n id -u");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "ship\n0\n");
  });

  it("root key exists on prod1 and not on prod2", async () => {
    const keys =
      "ls /root/.ssh/id_ed25519 /root/.ssh/id_rsa /root/.ssh/id_ecdsa 2>/dev/null || true";
    assert.equal((await env.byName("prod1").exec(keys)).stdout.trim(), "/root/.ssh/id_ed25519");
    assert.equal((await env.byName("prod2").exec(keys)).stdout.trim(), "");
  });

  it("host names resolve inside hosts", async () => {
    const r = await env.byName("prod1").exec("getent hosts stage.test");
    assert.equal(
      r.stdout.trim().split(/\s+/).slice(0, 2).join(" "),
      `${env.byName("stage").address} stage.test`,
    );
  });

  it("nix builds in stage's store, not in prod1's; nix-store --serve works for the non-root user", async () => {
    const stage = env.byName("stage");
    const expr =
      'builtins.derivation { name = "nsc-hello"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo hi > $out" ]; }';
    const built = await stage.exec(`nix-build --no-out-link -E '${expr}'`);
    const out = built.stdout.trim();
    assert.match(out, /^\/nix\/store\/[a-z0-9]{32}-nsc-hello$/);
    assert.equal((await stage.exec(`cat ${out}`)).stdout, "hi\n");
    assert.equal((await env.byName("prod1").exec(`test -e ${out}`, { check: false })).code, 1);
    assert.equal(fs.existsSync(out), false, "store path leaked to the runner");
    // nix-store --serve (what ssh:// substituters speak) as a non-root user goes through
    // prod1's daemon: greet, ask cmdQueryValidPaths for a path built there by root, and for one built on stage.
    const prod1 = env.byName("prod1");
    const own = (
      await prod1.exec(`nix-build --no-out-link -E '${expr.replace("nsc-hello", "nsc-prod1")}'`)
    ).stdout.trim();
    const req = Buffer.concat([
      u64(0x390c9deb),
      u64(0x206),
      u64(1),
      u64(0),
      u64(0),
      u64(2),
      str(own),
      str(out),
    ]);
    const serve = spawnSync("ssh", [...sshArgs(prod1), "nix-store --serve"], {
      input: req,
      timeout: 30_000,
    });
    assert.equal(serve.status, 0, serve.stderr.toString());
    const reply = serve.stdout;
    assert.equal(reply.readUInt32LE(0), 0x5452eecb, "serve greeting");
    assert.equal(Number(reply.readBigUInt64LE(16)), 1, "exactly one valid path");
    assert.equal(reply.subarray(32, 32 + own.length).toString(), own);
  });

  it("sshd and nix-daemon stop and start", async () => {
    const stage = env.byName("stage");
    await stage.stopSshd();
    assert.notEqual(ssh(stage, "true").status, 0);
    await stage.startSshd();
    assert.equal(ssh(stage, "true").status, 0, "same host key after restart");
    await stage.stopNixDaemon();
    await stage.startNixDaemon();
    const r = ssh(env.byName("prod1"), "true"); // unrelated host unaffected
    assert.equal(r.status, 0);
    const pid = (await stage.exec("cat /run/nix-daemon.pid")).stdout.trim();
    assert.equal((await stage.exec(`cat /proc/${pid}/comm`)).stdout.trim(), "nix-daemon");
  });

  it("teardown kills every process it started and removes the state dir", async () => {
    const psLines = () =>
      spawnSync("ps", ["-e", "-o", "pid=,ppid=,args="], { encoding: "utf8" })
        .stdout.split("\n")
        .filter((l) => l.trim());
    // Processes in each host's PID namespace, seen from outside.
    const nsOf = (pid: number) => fs.readlinkSync(`/proc/${pid}/ns/pid`);
    const hostNs = new Set(initPids.map(nsOf));
    const inHosts = () =>
      fs
        .readdirSync("/proc")
        .filter((d) => /^\d+$/.test(d))
        .filter((d) => {
          try {
            return hostNs.has(fs.readlinkSync(`/proc/${d}/ns/pid`));
          } catch {
            return false;
          }
        })
        .map(Number);
    const before = inHosts();
    assert.ok(
      before.length >= 3 + 3 + 2,
      `expected inits, sshds, nix-daemons; got ${before.join(",")}`,
    );
    const t0 = Date.now();
    await env.teardown();
    tornDown = true;
    console.log(`# teardown took ${Date.now() - t0} ms`);
    const ps = psLines();
    const leftovers = ps.filter((l) => before.includes(Number(l.trim().split(/\s+/)[0])));
    assert.deepEqual(leftovers, [], `left running: ${leftovers.join("\n")}`);
    assert.equal(ps.filter((l) => l.includes(env.stateDir)).length, 0);
    assert.equal(fs.existsSync(env.stateDir), false);
  });
});
