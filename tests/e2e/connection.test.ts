/**
 * The transport's connection features over real sshd: a host reached only through a bastion
 * (jump host), an encrypted operator key, keys held by a real ssh-agent, dial retries while a
 * host's sshd is down, and the same script results whatever the login shell (sh, bash, zsh,
 * fish) and sudo policy (requiretty, use_pty, neither; a secure_path without Nix).
 */
import { after, before, beforeEach, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import {
  closeSshConnections,
  Connection,
  poolKey,
  ProxyConnection,
  runJsonScript,
  runScript,
  sshPool,
} from "../../components/ssh";
import { remoteScriptText } from "../../components/host";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { encryptedRunnerKey, forwardsTo, Hidden, hideBehindBastion, sshdLog } from "./bastion";

const skip = e2eSkipReason();
const first = Number(process.env.NSC_HOSTS_FIRST_ADDRESS || 2);
/** A Nix-less secure_path: Debian's nix-bin is in /usr/bin (and /bin, merged /usr). */
const NIXLESS_SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin";

/** Connection as the host's login user with the runner key, through sudo for a non-root user. */
function login(h: TestHost, extra: Partial<Connection> = {}): Connection {
  return {
    host: h.address,
    port: h.port,
    user: h.user,
    privateKey: h.privateKey,
    hostKey: h.hostKey,
    become: h.user === "root" ? "none" : "sudo",
    ...extra,
  };
}

function hop(h: TestHost, extra: Partial<ProxyConnection> = {}): ProxyConnection {
  return {
    host: h.address,
    port: h.port,
    user: h.user,
    privateKey: h.privateKey,
    hostKey: h.hostKey,
    ...extra,
  };
}

async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("expected a rejection");
}

describe(
  "connections: bastion, encrypted key, ssh-agent, dial retries, login shells",
  { skip },
  () => {
    let env: TestHosts;
    let jump: TestHost;
    let inner: TestHost;
    let plain: TestHost;
    let hidden: Hidden;
    let tmp: string;

    before(async () => {
      env = await startHosts([
        { name: "jump", loginUser: "hop", nixDaemon: false },
        { name: "inner", loginUser: "ship", nixDaemon: false },
        { name: "plain", loginUser: "ship", nixDaemon: false },
      ]);
      [jump, inner, plain] = ["jump", "inner", "plain"].map((n) => env.byName(n));
      hidden = await hideBehindBastion(inner, jump, `127.0.0.${first + 31}`);
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-conn-"));
    });

    beforeEach(() => closeSshConnections());

    after(async () => {
      closeSshConnections();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
      if (env) await env.teardown();
    });

    const viaJump = (extra: Partial<Connection> = {}, proxy: Partial<ProxyConnection> = {}) =>
      login(inner, { host: hidden.privateName, proxy: hop(jump, proxy), ...extra });

    it("reaches a host only through the bastion, which logs the forwarded channel", async (t) => {
      // Directly, the operator cannot use the host: its name does not resolve here, and its
      // public address refuses the login user.
      assert.match(
        await rejection(
          runScript(login(inner, { host: hidden.privateName, dialErrorLimit: 1 }), "true"),
        ),
        /ship@inner\.internal: cannot connect: .*ENOTFOUND/,
      );
      assert.match(
        await rejection(runScript(login(inner), "true")),
        /ship@127\.0\.0\.\d+: cannot connect: authentication failed for user ship with privateKey/,
      );
      const before = forwardsTo(jump, hidden.privateName);
      const r = await runScript(viaJump(), 'echo "$(id -un) on $(hostname)"');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), "root on inner.test");
      assert.equal(forwardsTo(jump, hidden.privateName) - before, 1, "one direct-tcpip channel");
      for (const line of sshdLog(jump).split("\n")) {
        if (/direct-tcpip|server_request_direct_tcpip/.test(line))
          t.diagnostic(`bastion: ${line.trim()}`);
      }
      const log = sshdLog(inner);
      assert.match(
        log,
        new RegExp(
          `Connection from 127\\.0\\.0\\.1 port \\d+ on ${hidden.privateAddress.replace(/\./g, "\\.")} port 22`,
        ),
      );
      assert.match(log, /Accepted publickey for ship from/);
    });

    it("keeps a proxied and a direct connection apart in the pool, and shares one proxied login", async () => {
      const direct = login(plain);
      const proxied = login(plain, { proxy: hop(jump) });
      assert.notEqual(poolKey(direct), poolKey(proxied));
      const out = await Promise.all([
        runScript(direct, "echo d"),
        runScript(proxied, "echo p1"),
        runScript(proxied, "echo p2"),
      ]);
      assert.deepEqual(
        out.map((r) => r.stdout.trim()),
        ["d", "p1", "p2"],
      );
      assert.equal(sshPool().entries.size, 2);
    });

    it("says when the bastion refuses to forward, and when its host key does not match", async () => {
      const conf = "/etc/ssh/sshd_config.d/50-no-forwarding.conf";
      await jump.exec(`echo 'AllowTcpForwarding no' >${conf} && kill -HUP "$(cat /run/sshd.pid)"`);
      try {
        await new Promise((r) => setTimeout(r, 500));
        assert.match(
          await rejection(runScript(viaJump(), "true")),
          /ship@inner\.internal \(via hop@127\.0\.0\.\d+\): cannot connect: hop@127\.0\.0\.\d+ refused to forward to inner\.internal:22 .*AllowTcpForwarding yes/,
        );
      } finally {
        await jump.exec(`rm -f ${conf} && kill -HUP "$(cat /run/sshd.pid)"`);
        await new Promise((r) => setTimeout(r, 500));
      }
      const wrong =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
      assert.match(
        await rejection(runScript(viaJump({}, { hostKey: wrong }), "true")),
        /proxy hop@127\.0\.0\.\d+ of inner\.internal: cannot connect: the host key does not match the pinned hostKey/,
      );
      assert.equal(sshPool().entries.size, 0);
      // Forwarding works again.
      assert.equal((await runScript(viaJump(), "echo back")).stdout.trim(), "back");
    });

    it("logs in with an encrypted key and its passphrase, and says when the passphrase is missing or wrong", async () => {
      const passphrase = "correct horse battery";
      const encrypted = encryptedRunnerKey(plain, passphrase, tmp);
      assert.match(encrypted, /BEGIN OPENSSH PRIVATE KEY/);
      const ok = await runScript(
        login(plain, { privateKey: encrypted, privateKeyPassword: passphrase }),
        "id -u",
      );
      assert.equal(ok.stdout.trim(), "0");
      // Through the bastion too, the bastion with the same encrypted key.
      const viaEncrypted = viaJump(
        { privateKey: encrypted, privateKeyPassword: passphrase },
        { privateKey: encrypted, privateKeyPassword: passphrase },
      );
      assert.equal((await runScript(viaEncrypted, "hostname")).stdout.trim(), "inner.test");
      const missing = await rejection(runScript(login(plain, { privateKey: encrypted }), "true"));
      assert.match(
        missing,
        /ship@127\.0\.0\.\d+: cannot connect: privateKey is encrypted; set privateKeyPassword/,
      );
      const wrong = await rejection(
        runScript(
          login(plain, { privateKey: encrypted, privateKeyPassword: "wrong passphrase" }),
          "true",
        ),
      );
      assert.match(wrong, /privateKeyPassword does not decrypt privateKey \(wrong passphrase\?\)/);
      for (const m of [missing, wrong]) {
        assert.ok(
          !m.includes(passphrase) && !m.includes('wrong passphrase"'),
          "no secret in errors",
        );
      }
    });

    describe("with a real ssh-agent", () => {
      let agent: ChildProcess | undefined;
      let socket: string;
      const savedSock = process.env.SSH_AUTH_SOCK;

      before(async () => {
        socket = path.join(tmp, "agent.sock");
        agent = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" });
        for (let i = 0; i < 100 && !fs.existsSync(socket); i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        const add = spawnSync("ssh-add", [plain.privateKeyPath], {
          env: { ...process.env, SSH_AUTH_SOCK: socket },
          encoding: "utf8",
        });
        assert.equal(add.status, 0, add.stderr);
      });

      after(() => {
        if (savedSock === undefined) delete process.env.SSH_AUTH_SOCK;
        else process.env.SSH_AUTH_SOCK = savedSock;
        agent?.kill();
      });

      it("logs in with the agent's key: agentSocketPath, or SSH_AUTH_SOCK when no key is given", async () => {
        const noKey = { privateKey: undefined };
        const r = await runScript(login(plain, { ...noKey, agentSocketPath: socket }), "id -un");
        assert.equal(r.stdout.trim(), "root");
        // The bastion hop and the target both from the agent.
        const both = viaJump(
          { ...noKey, agentSocketPath: socket },
          { ...noKey, agentSocketPath: socket },
        );
        assert.equal((await runScript(both, "hostname")).stdout.trim(), "inner.test");
        process.env.SSH_AUTH_SOCK = socket;
        const fromEnv = login(plain, noKey);
        assert.equal((await runScript(fromEnv, "id -un")).stdout.trim(), "root");
        assert.match(poolKey(fromEnv), new RegExp(socket.replace(/[/.]/g, "\\$&")));
        // With a key, SSH_AUTH_SOCK is not used (as in @pulumi/command).
        assert.doesNotMatch(poolKey(login(plain)), /agent\.sock/);
      });

      it("says when the agent socket is not there", async () => {
        const gone = path.join(tmp, "no-agent.sock");
        assert.match(
          await rejection(
            runScript(login(plain, { privateKey: undefined, agentSocketPath: gone }), "true"),
          ),
          /authentication failed for user ship with the ssh-agent at .*no-agent\.sock \(unusable: .*; no socket there: start ssh-agent/,
        );
      });

      it("says when the agent holds no keys", async () => {
        const del = spawnSync("ssh-add", ["-D"], {
          env: { ...process.env, SSH_AUTH_SOCK: socket },
          encoding: "utf8",
        });
        assert.equal(del.status, 0, del.stderr);
        assert.match(
          await rejection(
            runScript(login(plain, { privateKey: undefined, agentSocketPath: socket }), "true"),
          ),
          /ship@127\.0\.0\.\d+: cannot connect: authentication failed for user ship with the ssh-agent at .*agent\.sock \(holds no keys; add one with ssh-add\)/,
        );
      });
    });

    it("retries dialing while sshd is down (dialErrorLimit), and gives up after the limit", async () => {
      await plain.stopSshd();
      try {
        assert.match(
          await rejection(runScript(login(plain, { dialErrorLimit: 2 }), "true")),
          /ECONNREFUSED.*gave up after 2 attempts; raise dialErrorLimit/,
        );
        const waiting = runScript(
          login(plain, { dialErrorLimit: 60, perDialTimeout: 5 }),
          "echo up",
        );
        await new Promise((r) => setTimeout(r, 1500));
        await plain.startSshd();
        assert.equal((await waiting).stdout.trim(), "up");
      } finally {
        await plain.startSshd().catch(() => undefined);
      }
    });

    it("runs scripts the same under sh, bash, zsh and fish, and sudo with requiretty, use_pty or neither", async () => {
      const weird = `it's "quoted" $HOME \\ back\`tick\` ; | & ~ * ?\nsecond line`;
      // A script longer than any terminal line (4096) and than a pipe buffer.
      const long = `# ${"x".repeat(100_000)}`;
      const body = [
        "early_path=$PATH",
        remoteScriptText("lib"),
        long,
        'echo "to stderr" >&2',
        'printf "%s\\n" "$WEIRD"',
        "if [ -t 0 ] || [ -t 1 ] || [ -t 2 ]; then tty=yes; else tty=no; fi",
        'printf \'{"uid":%s,"tty":"%s","nix":%s,"earlyPath":%s,"weird":%s}\\n\' "$(id -u)" "$tty" "$(nsc_json_string "$(command -v nix-store)")" "$(nsc_json_string "$early_path")" "$(nsc_json_string "$WEIRD")"',
      ].join("\n");
      const policies: Record<string, string> = {
        neither: "Defaults !use_pty",
        use_pty: "Defaults use_pty",
        requiretty: "Defaults requiretty\nDefaults !use_pty",
        "requiretty+use_pty": "Defaults requiretty\nDefaults use_pty",
      };
      const seen: string[] = [];
      for (const shell of ["sh", "bash", "zsh", "fish"]) {
        await plain.exec(`usermod -s "$(command -v ${shell})" ship`);
        for (const [policy, lines] of Object.entries(policies)) {
          await plain.exec(
            `printf 'ship ALL=(ALL) NOPASSWD:ALL\\n%s\\nDefaults secure_path="${NIXLESS_SECURE_PATH}"\\n' '${lines}' >/etc/sudoers.d/ship && visudo -cq`,
          );
          closeSshConnections(); // sshd reads the login shell at login
          const label = `${shell} / ${policy}`;
          const raw = await runScript(login(plain), body, { env: { WEIRD: weird } });
          assert.equal(raw.code, 0, `${label}: ${raw.stderr}`);
          assert.equal(raw.stderr, "to stderr\n", `${label}: stderr`);
          const lines2 = raw.stdout.split("\n");
          assert.equal(lines2.slice(0, 2).join("\n"), weird, `${label}: stdout`);
          const result = await runJsonScript(login(plain), body, {
            env: { WEIRD: weird },
            step: "probe",
          });
          assert.deepEqual(
            { ...result, earlyPath: undefined },
            { uid: 0, tty: "no", nix: "/usr/bin/nix-store", earlyPath: undefined, weird },
            label,
          );
          assert.equal(
            result.earlyPath,
            NIXLESS_SECURE_PATH,
            `${label}: sudo's secure_path in force`,
          );
          assert.equal((await runScript(login(plain), "exit 3")).code, 3, `${label}: exit status`);
          seen.push(label);
        }
      }
      assert.equal(seen.length, 16);
      // The check is real: without a terminal, this sudo refuses.
      const refused = await plain.exec("su ship -s /bin/sh -c 'sudo -n true' </dev/null", {
        check: false,
      });
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /you must have a tty/);
      // Root whose own login shell is fish.
      await plain.exec('usermod -s "$(command -v fish)" root');
      closeSshConnections();
      const root = await runScript(
        login(plain, { user: "root", become: "none" }),
        'echo "$0 $(id -u)"',
      );
      assert.equal(root.stdout.trim(), "bash 0");
    });
  },
);
