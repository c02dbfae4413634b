import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  Connection,
  describeConnection,
  needsSudo,
  parseSudoProbe,
  poolKey,
  remoteCommand,
  runScript,
  sudoProbeCommand,
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

const NONCE = "0123456789abcdef0123456789abcdef";

/** The absolute path of a command on this machine's PATH. */
function whichOf(name: string): string {
  const r = spawnSync("sh", ["-c", 'command -v "$1"', "sh", name], { encoding: "utf8" });
  assert.equal(r.status, 0, `${name} not found`);
  return r.stdout.trim();
}

/** The single-quoted sh program of a command `exec /bin/sh -c '...'`. */
function shProgram(command: string): string {
  const m = /^exec \/bin\/sh -c '([^']*)'$/.exec(command);
  assert.ok(m, command);
  assert.ok(!m[1].includes("\\"), "no backslash");
  return m[1];
}

describe("remoteCommand", () => {
  it("is plain `bash -s` as root", () => {
    assert.equal(remoteCommand({ user: "root", become: "sudo" }), "bash -s");
    assert.equal(remoteCommand({ user: "ship", become: "none" }), "bash -s");
    assert.equal(needsSudo({ user: "root", become: "sudo" }), false);
    assert.equal(needsSudo({ user: "ship", become: "none" }), false);
    assert.equal(needsSudo({ user: "ship", become: "sudo" }), true);
  });

  it("through sudo: the connection's probed mode, never a probe in the script's own command", () => {
    const ship = { user: "ship", become: "sudo" as const };
    assert.equal(
      remoteCommand(ship, { how: "direct", bash: "/usr/bin/bash" }),
      "exec sudo -n /usr/bin/bash -s",
    );
    const viaScript = remoteCommand(ship, { how: "script", bash: "/usr/bin/bash" });
    assert.match(
      shProgram(viaScript),
      /^SHELL=\/bin\/sh exec script -qec "exec sudo -n \/usr\/bin\/bash -s <&3 >&4 2>&5"/,
    );
    for (const command of [viaScript, remoteCommand(ship, { how: "direct", bash: "/bin/bash" })]) {
      assert.doesNotMatch(command, /sudo -n true|nix-ssh-cache-sudo|command -v/);
    }
  });

  it("through sudo: refuses to run without a probed mode, or with a bash path that is not plain", () => {
    const ship = { user: "ship", become: "sudo" as const };
    assert.throws(
      () => remoteCommand(ship),
      /user ship: sudo needs the mode its connection's probe found/,
    );
    for (const bash of ["bash", "/bin/bash; id", "/bin/ba sh", "/bin/$(id)", "/bin/b'"]) {
      assert.throws(
        () => remoteCommand(ship, { how: "direct", bash }),
        /sudo needs the mode/,
        bash,
      );
    }
  });
});

describe("the sudo probe", () => {
  it("is one single-quoted sh program without ' or \\ (fish reads those differently) that only reports", () => {
    const program = shProgram(sudoProbeCommand(NONCE));
    assert.match(program, /sudo -n true/);
    assert.match(program, new RegExp(`echo "nix-ssh-cache-sudo-${NONCE}: \\$h \\$b"`));
    // It runs no script: nothing reads stdin, no `bash -s`, no `exec sudo`.
    assert.doesNotMatch(program, /-s\b|exec sudo|exec script|<&3/);
  });

  it("takes only a nonce of 16-64 hex digits", () => {
    for (const bad of [
      "",
      "abc",
      "0123456789ABCDEF",
      `${NONCE}'`,
      "g".repeat(16),
      "0".repeat(65),
    ]) {
      assert.throws(() => sudoProbeCommand(bad), /nonce/, bad);
    }
  });

  it("reads exactly one report with its own nonce, whatever the login shell printed around it", () => {
    const report = (rest: string) => `nix-ssh-cache-sudo-${NONCE}: ${rest}`;
    assert.deepEqual(parseSudoProbe(`${report("script /bin/bash")}\n`, NONCE), {
      how: "script",
      bash: "/bin/bash",
    });
    assert.deepEqual(
      parseSudoProbe(`motd\n${report("direct /run/current-system/sw/bin/bash")}\nbye\n`, NONCE),
      { how: "direct", bash: "/run/current-system/sw/bin/bash" },
    );
  });

  it("ignores forged or doubtful reports: the old marker, another nonce, two reports, odd paths", () => {
    const payload = "/nix/store/0000000000000000000000000000000-x/bin/payload";
    const forged = [
      `nix-ssh-cache-sudo: direct ${payload}\n`,
      `nix-ssh-cache-sudo-${"f".repeat(32)}: direct ${payload}\n`,
      `nix-ssh-cache-sudo-${NONCE}: direct /bin/bash\nnix-ssh-cache-sudo-${NONCE}: direct ${payload}\n`,
      `nix-ssh-cache-sudo-${NONCE}: direct /bin/bash; ${payload}\n`,
      `nix-ssh-cache-sudo-${NONCE}: direct bin/bash\n`,
      `nix-ssh-cache-sudo-${NONCE}: root /bin/bash\n`,
      ` nix-ssh-cache-sudo-${NONCE}: direct /bin/bash\n`,
      "plain\n",
      "",
    ];
    for (const stdout of forged) assert.equal(parseSudoProbe(stdout, NONCE), undefined, stdout);
  });

  it(
    "reports direct when sudo -n works, script when it needs a terminal and script exists, else direct",
    { skip: !hasCommand("bash") },
    () => {
      const program = shProgram(sudoProbeCommand(NONCE));
      withTempDir((dir) => {
        const bin = join(dir, "bin");
        mkdirSync(bin);
        const tool = (name: string, body: string) =>
          writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
        for (const name of ["bash", "id"]) symlinkSync(whichOf(name), join(bin, name));
        const run = () =>
          spawnSync("/bin/sh", ["-c", program], {
            encoding: "utf8",
            env: { PATH: bin },
            input: "echo STDIN-RAN\n",
          });
        tool("sudo", "exit 0");
        let r = run();
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(parseSudoProbe(r.stdout, NONCE), {
          how: "direct",
          bash: join(bin, "bash"),
        });
        assert.doesNotMatch(r.stdout, /STDIN-RAN/);
        tool("sudo", 'echo "sudo: sorry, you must have a tty to run sudo" >&2; exit 1');
        r = run();
        assert.deepEqual(parseSudoProbe(r.stdout, NONCE)?.how, "direct", "no script: direct");
        tool("script", "exit 0");
        r = run();
        assert.deepEqual(parseSudoProbe(r.stdout, NONCE), {
          how: "script",
          bash: join(bin, "bash"),
        });
        unlinkSync(join(bin, "bash"));
        r = run();
        assert.equal(r.status, 127);
        assert.equal(parseSudoProbe(r.stdout, NONCE), undefined);
        assert.match(r.stderr, /^nix-ssh-cache: bash is not on the PATH of user /);
      });
    },
  );

  for (const shell of ["sh", "bash", "zsh", "fish"]) {
    it(`hands the same programs to /bin/sh under ${shell}`, { skip: !hasCommand(shell) }, () => {
      const ship = { user: "ship", become: "sudo" as const };
      for (const command of [
        sudoProbeCommand(NONCE),
        remoteCommand(ship, { how: "script", bash: "/usr/bin/bash" }),
      ]) {
        const program = shProgram(command);
        // What the login shell passes on: replace `exec /bin/sh -c` by a printer of its argument.
        const printed = command.replace(/^exec \/bin\/sh -c /, "printf %s ");
        const r = spawnSync(shell, ["-c", printed], { encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, program);
      }
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
