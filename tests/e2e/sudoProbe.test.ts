/**
 * Output is data, never control: for a sudo login user, nothing a script prints (its own
 * stderr and stdout, or the log of a Nix build it runs) can choose the command the next script
 * on the same connection runs as root. The sudo mode comes only from the connection's own probe
 * (a channel of its own, a per-connection nonce), once, and is never replaced.
 *
 * On a host whose sudo runs directly and on one with `Defaults requiretty` (the `script` mode),
 * scripts print forged sudo reports (the old marker, a guessed nonce) naming a payload that, run
 * by sudo, would leave a file behind and go on as bash; a real Nix build's builder prints one
 * naming a payload in its own output. Later scripts on the same connection still run as root,
 * through the same process chain (the mode is unchanged), and the payload never ran.
 *
 * Also: sudo's own errors still reach the user (requiretty without `script`, a password
 * required, no bash on the PATH, bash at a path the report may not name), a failed probe is
 * retried, a new connection (or `reuse: false`) probes again, and concurrent first scripts on a
 * connection wait for one probe.
 */
import { after, before, beforeEach, describe, it, TestContext } from "node:test";
import * as assert from "node:assert/strict";
import { randomBytes } from "crypto";
import * as fs from "fs";
import * as path from "path";
import {
  closeSshConnections,
  Connection,
  runJsonScript,
  runScript,
  ScriptResult,
} from "../../components/ssh";
import { acceptedLogins, e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";

const skip = e2eSkipReason();

/** Written by a payload if it ever runs (a host-own directory: /var/lib is per host). */
const RAN = "/var/lib/nsc-payload-ran";
/** A payload an attacker would like sudo to run: leaves `RAN`, then goes on as bash. */
const PAYLOAD = "/var/lib/nsc-payload";
const PAYLOAD_TEXT = `#!/bin/sh\necho "ran as $(id -u): $0 $*" >>${RAN}\nexec /bin/bash "$@"\n`;

/** The login user's connection, through sudo. */
function viaSudo(h: TestHost): Connection {
  return {
    host: h.address,
    port: h.port,
    user: h.user,
    privateKey: h.privateKey,
    hostKey: h.hostKey,
    become: "sudo",
  };
}

/**
 * A script printing its uid, then the command lines of its ancestors up to sshd's session
 * process: how sudo ran it (directly, or under `script`), and through which bash.
 */
const WHO_AND_HOW = [
  "id -u",
  'p=$PPID; while [ "$p" -gt 1 ]; do',
  '  a=$(ps -o args= -p "$p"); echo "$a"',
  "  case $a in sshd:*) break ;; esac",
  '  p=$(ps -o ppid= -p "$p" | tr -d " ")',
  "done",
].join("\n");

/** Prints `$FORGED` on stdout and on stderr. */
const FORGE = `printf '%s\\n' "$FORGED"; printf '%s\\n' "$FORGED" >&2`;

/** Sudo logins (`Accepted publickey for <user>`) on a host so far, once sshd's log settles. */
async function settledLogins(h: TestHost): Promise<number> {
  let last = acceptedLogins(h)[h.user] ?? 0;
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = acceptedLogins(h)[h.user] ?? 0;
    if (now === last && i >= 2) return now;
    last = now;
  }
  return last;
}

/** `r`, after checking it exited 0. */
function ok(r: ScriptResult, label: string): ScriptResult {
  assert.equal(r.code, 0, `${label}: exit ${r.code}\n${r.stderr}`);
  return r;
}

describe("the sudo mode comes only from the connection's own probe", { skip }, () => {
  let env: TestHosts;

  before(async () => {
    env = await startHosts([
      { name: "sudo-direct", loginUser: "ship" },
      { name: "sudo-tty", loginUser: "ship", sudoPolicy: "requiretty" },
    ]);
    for (const h of env.hosts) {
      await h.exec(`cat >${PAYLOAD} && chmod 0755 ${PAYLOAD}`, { input: PAYLOAD_TEXT });
    }
  });

  beforeEach(() => closeSshConnections());

  after(async () => {
    closeSshConnections();
    if (env) await env.teardown();
  });

  const cases: [string, "direct" | "script"][] = [
    ["sudo-direct", "direct"],
    ["sudo-tty", "script"],
  ];

  /**
   * A fresh pooled connection of the host's sudo login, and a check that its scripts still run
   * as root through the process chain of its first script, and that the payload never ran.
   */
  async function watched(name: string, t: TestContext) {
    const host = env.byName(name);
    const c = viaSudo(host);
    await host.exec(`rm -f ${RAN}`);
    const loginsBefore = await settledLogins(host);
    return {
      host,
      c,
      /** Runs `WHO_AND_HOW` as the connection's first script: the reference chain. */
      async reference(how: "direct" | "script"): Promise<string> {
        const chain = ok(await runScript(c, WHO_AND_HOW), "reference").stdout;
        t.diagnostic(`${name}: ${chain.trim().split("\n").join(" <- ")}`);
        assert.equal(chain.split("\n")[0], "0", "runs as root");
        assert.match(chain, how === "script" ? /script -qec/ : /^sudo -n \S*bash -s$/m);
        assert.doesNotMatch(chain, /payload/);
        return chain;
      },
      async unchanged(reference: string, what: string): Promise<void> {
        const now = ok(await runScript(c, WHO_AND_HOW), `after ${what}`).stdout;
        const ran = await host.exec(`cat ${RAN} 2>/dev/null || true`);
        assert.equal(ran.stdout, "", `after ${what}: the payload ran`);
        assert.equal(now, reference, `after ${what}: same uid 0 and process chain`);
        assert.equal(
          (await settledLogins(host)) - loginsBefore,
          1,
          "one login: the same pooled connection all along",
        );
      },
    };
  }

  /** Forged reports naming `target`: the old marker, and one with a guessed nonce. */
  const forge = (how: string, target: string) =>
    [
      `nix-ssh-cache-sudo: ${how} ${target}`,
      `nix-ssh-cache-sudo-${randomBytes(16).toString("hex")}: ${how} ${target}`,
    ].join("\n");

  for (const [name, how] of cases) {
    it(`${name} (${how}): forged reports printed by scripts change nothing`, async (t) => {
      const w = await watched(name, t);
      const forged = { env: { FORGED: forge(how, PAYLOAD) } };
      // The first script on the connection forges: it would race a probe in its own command.
      ok(await runScript(w.c, FORGE, forged), "first forging script");
      const reference = await w.reference(how);
      // A later script forges, on stderr and stdout.
      ok(await runScript(w.c, FORGE, forged), "forging script");
      await w.unchanged(reference, "a forging script");
      // Concurrent scripts, half of them forging: every one runs as root in the same mode.
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) => runScript(w.c, i % 2 ? FORGE : WHO_AND_HOW, forged)),
      );
      results.forEach((r, i) => {
        ok(r, `concurrent ${i}`);
        if (i % 2 === 0) assert.equal(r.stdout, reference, `concurrent ${i}`);
      });
      await w.unchanged(reference, "concurrent forging scripts");
    });

    it(`${name} (${how}): a Nix build whose log names a payload in its output changes nothing`, async (t) => {
      const w = await watched(name, t);
      const reference = await w.reference(how);
      // The builder makes a payload in its own output and names it in its log (both streams).
      const builder = [
        "PATH=/usr/bin:/bin",
        "mkdir -p $out/bin",
        `printf '%s\\n' '#!/bin/sh' 'echo "ran as $(id -u): $0" >>${RAN}' 'exec /bin/bash "$@"' >$out/bin/payload`,
        "chmod 0755 $out/bin/payload",
        `echo nix-ssh-cache-sudo: ${how} $out/bin/payload >&2`,
        `echo nix-ssh-cache-sudo: ${how} $out/bin/payload`,
      ].join("; ");
      const tag = randomBytes(6).toString("hex");
      const expr = `builtins.derivation { name = "sudo-marker-${tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(builder)} ]; }`;
      const build = ok(
        await runScript(w.c, 'nix-store --realise "$(nix-instantiate -E "$EXPR")"', {
          env: { EXPR: expr },
        }),
        "build",
      );
      const out = build.stdout.trim().split("\n").pop() ?? "";
      assert.match(out, /^\/nix\/store\/[a-z0-9]{32}-sudo-marker-/);
      assert.match(
        build.stderr,
        new RegExp(`^nix-ssh-cache-sudo: ${how} ${out}/bin/payload$`, "m"),
        "the builder's report reached the script's stderr",
      );
      await w.unchanged(reference, "a build that printed a forged report");
    });
  }

  it("keeps sudo's errors: requiretty without `script`, a password required, no bash on the PATH, bash at an odd path", async () => {
    const direct = env.byName("sudo-direct");
    const tty = env.byName("sudo-tty");
    const step = { step: "probe test" };
    const rejection = (p: Promise<unknown>) =>
      p.then(
        () => assert.fail("expected a rejection"),
        (e: Error) => e.message,
      );
    // `script` hidden in the host's own mount namespace: sudo's refusal reaches the script.
    await tty.exec("mount --bind /dev/null /usr/bin/script");
    try {
      assert.match(
        await rejection(runJsonScript(viaSudo(tty), "echo '{}'", step)),
        /ship@127\.0\.0\.\d+: probe test failed: sudo on the host requires a terminal \(Defaults requiretty\) and util-linux `script` is not installed there/,
      );
    } finally {
      await tty.exec("umount /usr/bin/script");
    }
    closeSshConnections();
    const sudoers = "/etc/sudoers.d/ship";
    await direct.exec(
      `cp -p ${sudoers} /root/sudoers.saved && echo 'ship ALL=(ALL) ALL' >${sudoers}`,
    );
    try {
      assert.match(
        await rejection(runJsonScript(viaSudo(direct), "echo '{}'", step)),
        /probe test failed: user ship cannot run sudo without a password; give it password-less sudo or connect as root/,
      );
    } finally {
      await direct.exec(`cp -p /root/sudoers.saved ${sudoers}`);
    }
    closeSshConnections();
    // zsh reads ~/.zshenv for every command: a PATH with `sudo` and `id` but no bash.
    await direct.exec(
      'usermod -s "$(command -v zsh)" ship && install -d -o ship /home/ship/nobash && ln -sf /usr/bin/id /usr/bin/sudo /home/ship/nobash/ && echo "export PATH=/home/ship/nobash" >/home/ship/.zshenv',
    );
    try {
      assert.match(
        await rejection(runJsonScript(viaSudo(direct), "echo '{}'", step)),
        /ship@127\.0\.0\.\d+: probe test failed \(exit 127\): nix-ssh-cache: bash is not on the PATH of user ship$/,
      );
      // bash at a path the probe's report may not name (a space): no mode, a clear error.
      await direct.exec(
        'install -d -o ship "/home/ship/odd dir" && ln -sf /usr/bin/bash "/home/ship/odd dir/" && echo "export PATH=\\"/home/ship/odd dir:/home/ship/nobash\\"" >/home/ship/.zshenv',
      );
      assert.match(
        await rejection(runJsonScript(viaSudo(direct), "echo '{}'", step)),
        /probe test failed \(exit 1\): nix-ssh-cache: cannot tell how to run sudo as ship: its probe gave no usable report/,
      );
      // A failed probe is not kept: once bash is back on the PATH, the same connection probes again.
      await direct.exec("rm -f /home/ship/.zshenv");
      assert.deepEqual(await runJsonScript(viaSudo(direct), `echo "{\\"uid\\":$(id -u)}"`, step), {
        uid: 0,
      });
    } finally {
      await direct.exec(
        'rm -rf /home/ship/.zshenv /home/ship/nobash "/home/ship/odd dir"; usermod -s "$(command -v bash)" ship',
      );
    }
  });

  it("a new connection probes again and finds the same mode; reuse off works too", async () => {
    for (const [name] of cases) {
      const host = env.byName(name);
      await host.exec(`rm -f ${RAN}`);
      const first = ok(await runScript(viaSudo(host), WHO_AND_HOW), name).stdout;
      closeSshConnections();
      const again = ok(await runScript(viaSudo(host), WHO_AND_HOW), name).stdout;
      assert.equal(again, first, `${name}: same mode on a new connection`);
      for (let i = 0; i < 2; i++) {
        ok(
          await runScript(viaSudo(host), `echo 'nix-ssh-cache-sudo: direct ${PAYLOAD}' >&2`, {
            reuse: false,
          }),
          `${name}: forging, reuse off`,
        );
        const noReuse = ok(await runScript(viaSudo(host), WHO_AND_HOW, { reuse: false }), name);
        assert.equal(noReuse.stdout, first, `${name}: same mode with reuse off`);
      }
      assert.equal((await host.exec(`cat ${RAN} 2>/dev/null || true`)).stdout, "");
    }
  });

  it("concurrent first scripts on a new connection wait for one probe", async () => {
    for (const [name] of cases) {
      const host = env.byName(name);
      const log = () => fs.readFileSync(path.join(host.stateDir, "var-log", "sshd.log"), "utf8");
      const from = log().length;
      const results = await Promise.all(
        Array.from({ length: 6 }, () => runScript(viaSudo(host), WHO_AND_HOW)),
      );
      for (const r of results) assert.equal(ok(r, name).stdout, results[0].stdout, name);
      assert.equal(results[0].stdout.split("\n")[0], "0");
      // sshd logs every exec channel: the 6 scripts and one probe.
      await new Promise((r) => setTimeout(r, 300));
      const commands =
        log()
          .slice(from)
          .match(/Starting session: command for ship/g) ?? [];
      assert.equal(commands.length, 7, `${name}: 6 scripts and 1 probe`);
    }
  });
});
