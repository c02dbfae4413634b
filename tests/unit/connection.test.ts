import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  Connection,
  describeConnection,
  poolKey,
  remoteCommand,
  runScript,
  takeSudoMode,
} from "../../components/ssh";
import { validateArgs, type PlainNixSshCacheArgs } from "../../components/validate";
import { FAKE_PRIVATE_KEY, hasCommand, HOST_KEY, withTempDir } from "./fixtures";

const target: Connection = {
  host: "stage.internal",
  port: 22,
  user: "ship",
  privateKey: FAKE_PRIVATE_KEY,
  become: "sudo",
};
const bastion = { host: "bastion.example.com", port: 2222, user: "jump" };

/** An OpenSSH ed25519 key encrypted with `passphrase` (ssh-keygen). */
function encryptedKey(passphrase: string): string {
  return withTempDir((dir) => {
    const file = join(dir, "key");
    const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-f", file]);
    assert.equal(r.status, 0, String(r.stderr));
    return readFileSync(file, "utf8");
  });
}

describe("remoteCommand", () => {
  it("is plain `bash -s` as root", () => {
    assert.equal(remoteCommand({ user: "root", become: "sudo" }), "bash -s");
    assert.equal(remoteCommand({ user: "ship", become: "none" }), "bash -s");
  });

  it("through sudo: one single-quoted sh program without ' or \\ (fish reads those differently)", () => {
    const command = remoteCommand({ user: "ship", become: "sudo" });
    const m = /^exec \/bin\/sh -c '([^']*)'$/.exec(command);
    assert.ok(m, command);
    assert.ok(!m[1].includes("\\"), "no backslash");
    assert.match(m[1], /script -qec/);
  });

  it("once learnt, runs sudo without the probe", () => {
    const ship = { user: "ship", become: "sudo" as const };
    assert.equal(
      remoteCommand(ship, { how: "direct", bash: "/usr/bin/bash" }),
      "exec sudo -n /usr/bin/bash -s",
    );
    const viaScript = remoteCommand(ship, { how: "script", bash: "/usr/bin/bash" });
    assert.match(
      viaScript,
      /^exec \/bin\/sh -c 'SHELL=\/bin\/sh exec script -qec "exec sudo -n \/usr\/bin\/bash -s/,
    );
    assert.doesNotMatch(viaScript, /sudo -n true/);
  });

  it("takes the probe's report out of stderr", () => {
    assert.deepEqual(takeSudoMode("nix-ssh-cache-sudo: script /bin/bash\nwarning\n"), {
      mode: { how: "script", bash: "/bin/bash" },
      stderr: "warning\n",
    });
    assert.deepEqual(
      takeSudoMode("motd\nnix-ssh-cache-sudo: direct /run/current-system/sw/bin/bash\nx\n"),
      {
        mode: { how: "direct", bash: "/run/current-system/sw/bin/bash" },
        stderr: "motd\nx\n",
      },
    );
    assert.deepEqual(takeSudoMode("plain\n"), { stderr: "plain\n" });
  });

  for (const shell of ["sh", "bash", "zsh", "fish"]) {
    it(`hands the same program to /bin/sh under ${shell}`, { skip: !hasCommand(shell) }, () => {
      const command = remoteCommand({ user: "ship", become: "sudo" });
      const program = /^exec \/bin\/sh -c '([^']*)'$/.exec(command)![1];
      // What the login shell passes on: replace `exec /bin/sh -c` by a printer of its argument.
      const probe = command.replace(/^exec \/bin\/sh -c /, "printf %s ");
      const r = spawnSync(shell, ["-c", probe], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, program);
    });
  }
});

describe("connection identity and labels", () => {
  it("names the proxy in messages", () => {
    assert.equal(describeConnection(target), "ship@stage.internal");
    assert.equal(
      describeConnection({ ...target, proxy: bastion }),
      "ship@stage.internal (via jump@bastion.example.com:2222)",
    );
  });

  it("pools by every hop's address, user and credentials, not by dial limits", () => {
    const direct = poolKey(target);
    const viaBastion = poolKey({ ...target, proxy: bastion });
    assert.notEqual(direct, viaBastion);
    assert.notEqual(viaBastion, poolKey({ ...target, proxy: { ...bastion, user: "other" } }));
    assert.notEqual(direct, poolKey({ ...target, privateKeyPassword: "x" }));
    assert.notEqual(direct, poolKey({ ...target, agentSocketPath: "/run/agent.sock" }));
    assert.equal(direct, poolKey({ ...target, dialErrorLimit: 3, perDialTimeout: 1 }));
  });
});

describe("credentials are checked before dialing", () => {
  const unreachable = { ...target, host: "127.0.0.1", port: 1, dialErrorLimit: 1 };

  it(
    "an encrypted key without privateKeyPassword",
    { skip: !hasCommand("ssh-keygen") },
    async () => {
      const key = encryptedKey("pass phrase");
      await assert.rejects(
        runScript({ ...unreachable, privateKey: key }, "true", { reuse: false }),
        /ship@127\.0\.0\.1:1: cannot connect: privateKey is encrypted; set privateKeyPassword/,
      );
      const args: PlainNixSshCacheArgs = {
        staging: { connection: { host: "stage.test", privateKey: key, hostKey: HOST_KEY } },
        production: [
          {
            connection: {
              host: "prod1.test",
              hostKey: HOST_KEY,
              privateKey: key,
              privateKeyPassword: "not-it-8472",
            },
          },
        ],
      };
      assert.throws(
        () => validateArgs(args),
        (e: Error) =>
          /staging\.connection\.privateKey \(<secret>, host "stage\.test"\): cannot be read: it is passphrase-protected: set privateKeyPassword/.test(
            e.message,
          ) &&
          /production\[0\]\.connection\.privateKey \(<secret>, host "prod1\.test"\): cannot be read: privateKeyPassword does not decrypt it/.test(
            e.message,
          ) &&
          !e.message.includes("not-it-8472"),
      );
      validateArgs({
        staging: {
          connection: {
            host: "stage.test",
            privateKey: key,
            privateKeyPassword: "pass phrase",
            hostKey: HOST_KEY,
          },
        },
        production: [
          {
            connection: {
              host: "prod1.test",
              agentSocketPath: "/run/agent.sock",
              hostKey: HOST_KEY,
            },
          },
        ],
      });
    },
  );

  it("no key, no password, no agent", async () => {
    const saved = process.env.SSH_AUTH_SOCK;
    delete process.env.SSH_AUTH_SOCK;
    try {
      await assert.rejects(
        runScript({ ...unreachable, privateKey: undefined }, "true", { reuse: false }),
        /cannot connect: no credentials: set privateKey, password or agentSocketPath/,
      );
    } finally {
      if (saved !== undefined) process.env.SSH_AUTH_SOCK = saved;
    }
  });
});
