/**
 * Reliability, item 3: security. The private signing key never leaves staging's keyDirectory
 * (not in the state, CLI output with --verbose=9/--debug, Pulumi's files, any host's files);
 * `nix-ssh` on staging can only serve; production refuses foreign signatures and a changed
 * staging host key; managed files are root-owned and not world-writable; `sshd -t` passes.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "child_process";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../../hosts/harness";
import { pulumiSkipReason, PulumiStack } from "../pulumi";
import { buildOnStaging, exampleStack, hostConfig, TEST_TIMEOUT_MS } from "./common";
import { excerpt, reliabilityCase } from "./record";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const ITEM = "security";
const KEY_DIR = "/etc/shipnix/binary";
const SSH = "ssh -o BatchMode=yes -o ConnectTimeout=20";

/** Files under `dir` (outer path) containing `needle`, except `allowed`. */
function filesContaining(dir: string, needle: string, allowed: string[]): string[] {
  const r = spawnSync("grep", ["-rlF", "--devices=skip", "--", needle, dir], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  return r.stdout.split("\n").filter((f) => f !== "" && !allowed.includes(f));
}

describe("reliability: security", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prods: TestHost[];
  let prod1: TestHost;
  let secretBase64 = "";
  let verboseOutput = "";

  before(async () => {
    hosts = await startHosts([
      { name: "stage" },
      { name: "prod1" },
      { name: "prod2", loginUser: "ship" },
    ]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1"), hosts.byName("prod2")];
    prod1 = prods[0];
    stack = await exampleStack("security", stage.privateKey, hostConfig(stage, prods));
    const up = await stack.run([
      "up",
      "--yes",
      "--skip-preview",
      "--verbose=9",
      "--logtostderr",
      "--debug",
    ]);
    assert.equal(up.code, 0, up.output.slice(-4000));
    verboseOutput = up.output;
    const priv = (await stage.exec(`cat ${KEY_DIR}/cache-priv-key.pem`)).stdout.trim();
    secretBase64 = priv.split(":")[1];
    assert.ok(secretBase64.length > 40);
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it(
    "the private signing key never leaves staging's key directory",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      // the 64-byte secret, and its first 32 bytes (the seed) in base64 too
      const needles = [
        secretBase64,
        Buffer.from(secretBase64, "base64").subarray(0, 32).toString("base64").slice(0, 40),
      ];
      await reliabilityCase(
        ITEM,
        "signing key not in `pulumi stack export --show-secrets`",
        "absent",
        async () => {
          const state = await stack.exportState(true);
          for (const n of needles) assert.ok(!state.includes(n), "signing key in the state");
          return `absent from ${state.length} bytes of state`;
        },
      );
      await reliabilityCase(
        ITEM,
        "signing key not in CLI output of up --verbose=9 --logtostderr --debug",
        "absent",
        async () => {
          for (const n of needles)
            assert.ok(!verboseOutput.includes(n), "signing key in CLI output");
          return `absent from ${verboseOutput.length} bytes of output`;
        },
      );
      await reliabilityCase(
        ITEM,
        "signing key not in the Pulumi work dir (backend, PULUMI_HOME incl. logs, config)",
        "no file contains it",
        async () => {
          const found = needles.flatMap((n) => filesContaining(stack.workDir, n, []));
          assert.deepEqual(found, []);
          return `no file under the work dir contains it`;
        },
      );
      await reliabilityCase(
        ITEM,
        "signing key in no host file outside staging's keyDirectory",
        `only ${KEY_DIR}/cache-priv-key.pem`,
        async () => {
          const allowed = [`${stage.stateDir}/etc${KEY_DIR.slice(4)}/cache-priv-key.pem`];
          const found = needles.flatMap((n) => filesContaining(hosts.stateDir, n, allowed));
          assert.deepEqual(found, []);
          return `searched every host's state dir (etc, root, nix, var-lib, var-log, run, tmp): only the key file`;
        },
      );
      await reliabilityCase(
        ITEM,
        "connection private keys only Pulumi secrets",
        'no "PRIVATE KEY" in the non-secret export',
        async () => {
          const state = await stack.exportState(false);
          assert.ok(!state.includes("PRIVATE KEY"));
          assert.ok(!state.includes(stage.privateKey.split("\n")[1]));
          return `no "PRIVATE KEY" in ${state.length} bytes`;
        },
      );
    },
  );

  it("nix-ssh on staging can only serve the store", { timeout: TEST_TIMEOUT_MS }, async () => {
    const to = `nix-ssh@${stage.fqdn}`;
    await reliabilityCase(
      ITEM,
      "nix-ssh: no shell (command ignored, ForceCommand)",
      "the command is not run",
      async () => {
        const r = await prod1.exec(`${SSH} ${to} 'echo SHELL-RAN; id' </dev/null`, {
          check: false,
        });
        assert.doesNotMatch(r.stdout, /SHELL-RAN|uid=/);
        return `exit ${r.code}; stdout ${JSON.stringify(r.stdout.slice(0, 60))}`;
      },
    );
    await reliabilityCase(ITEM, "nix-ssh: no TTY", "PTY allocation refused", async () => {
      const r = await prod1.exec(`timeout 30 ${SSH} -tt ${to} </dev/null`, { check: false });
      assert.match(r.stderr, /PTY allocation request failed/);
      return excerpt(r.stderr.split("\n").find((l) => /PTY/.test(l)) ?? "");
    });
    await reliabilityCase(
      ITEM,
      "nix-ssh: no port forwarding (ssh -W)",
      "channel open refused",
      async () => {
        const r = await prod1.exec(`timeout 30 ${SSH} -W 127.0.0.1:22 ${to} </dev/null`, {
          check: false,
        });
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /administratively prohibited|open failed/);
        return excerpt(r.stderr.split("\n").find((l) => /prohibited|open failed/.test(l)) ?? "");
      },
    );
    await reliabilityCase(
      ITEM,
      "nix-ssh: no agent/TCP/X11 forwarding, no tunnel, no TTY (effective sshd config)",
      "sshd -T for user nix-ssh says no",
      async () => {
        const r = await stage.exec(
          `sshd -T -C user=nix-ssh,host=${prod1.fqdn},addr=${prod1.address}`,
        );
        const want = [
          "allowagentforwarding no",
          "allowtcpforwarding no",
          "x11forwarding no",
          "permittunnel no",
          "permittty no",
        ];
        const lines = r.stdout.split("\n");
        for (const w of want) assert.ok(lines.includes(w), `missing "${w}"`);
        const force = lines.find((l) => l.startsWith("forcecommand ")) ?? "";
        assert.match(force, /nix-store --serve$/);
        return `${want.join(", ")}; ${force}`;
      },
    );
    await reliabilityCase(
      ITEM,
      "nix-ssh: cannot write to staging's store (nix copy --to)",
      "copy fails, path absent on staging",
      async () => {
        const expr = `builtins.derivation { name = "upload-${Date.now()}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo up > $out" ]; }`;
        const out = (await prod1.exec(`nix-build --no-out-link -E '${expr}'`)).stdout
          .trim()
          .split("\n")
          .pop()!;
        const r = await prod1.exec(
          `timeout 120 nix --extra-experimental-features nix-command copy --to ssh://${to} ${out}`,
          { check: false },
        );
        assert.notEqual(r.code, 0, "upload succeeded");
        const there = await stage.exec(
          `nix-store --check-validity ${out} && echo present || echo absent`,
          { check: false },
        );
        assert.equal(there.stdout.trim(), "absent");
        return `exit ${r.code}: ${excerpt(r.stderr.split("\n").filter(Boolean).pop() ?? "", 160)}`;
      },
    );
  });

  it(
    "production refuses a foreign signature and a changed staging host key",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await reliabilityCase(
        ITEM,
        "path on staging signed by another key",
        "production refuses it (not signed by a trusted key)",
        async () => {
          await stage.exec(
            "nix-store --generate-binary-cache-key other.test /tmp/other.sec /tmp/other.pub",
          );
          const nonce = Date.now().toString(36);
          const expr = `builtins.derivation { name = "foreign-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }`;
          const out = (
            await stage.exec(
              `nix-build --store daemon --no-out-link -E '${expr}' --option secret-key-files /tmp/other.sec`,
            )
          ).stdout
            .trim()
            .split("\n")
            .pop()!;
          const sigs = (
            await stage.exec(
              `nix --extra-experimental-features nix-command path-info --sigs ${out}`,
            )
          ).stdout;
          // whichever signs, remove staging's own signature so only the foreign one is left
          if (/stage\.test:/.test(sigs)) {
            await stage.exec(
              `nix-store --delete ${out} >/dev/null 2>&1; nix-build --no-out-link -E '${expr}' --option secret-key-files /tmp/other.sec >/dev/null`,
            );
          }
          const r = await prod1.exec(`nix-store --realise ${out}`, { check: false });
          assert.notEqual(r.code, 0, "production accepted a path signed by another key");
          assert.match(
            r.stderr,
            /not signed by any of the keys|lacks a signature|don't know how to build|no substituter/,
          );
          return excerpt(
            r.stderr.split("\n").filter((l) => /signed|signature|substituter|build/.test(l))[0] ??
              r.stderr,
            200,
          );
        },
      );
      await reliabilityCase(
        ITEM,
        "staging presents another SSH host key",
        "production refuses: Host key verification failed",
        async () => {
          const { out } = await buildOnStaging(stage, "hostkey");
          await stage.exec(
            "mkdir -p /tmp/hk && cp -p /etc/ssh/ssh_host_ed25519_key* /tmp/hk/ && rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key",
          );
          await stage.stopSshd();
          await stage.startSshd();
          try {
            const r = await prod1.exec(`nix-store --realise ${out}`, { check: false });
            assert.notEqual(r.code, 0);
            assert.match(r.stderr, /Host key verification failed/);
            return "Host key verification failed";
          } finally {
            await stage.exec("cp -p /tmp/hk/* /etc/ssh/");
            await stage.stopSshd();
            await stage.startSshd();
          }
        },
      );
    },
  );

  it(
    "key files and managed files: owners, modes, sshd -t",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await reliabilityCase(
        ITEM,
        "signing key files",
        "private 0600 root:root, dir 0755 root:root",
        async () => {
          const r = await stage.exec(
            `stat -c '%n %a %U:%G' ${KEY_DIR} ${KEY_DIR}/cache-priv-key.pem ${KEY_DIR}/cache-pub-key.pem`,
          );
          const lines = r.stdout.trim().split("\n");
          assert.match(lines[1], / 600 root:root$/);
          assert.match(lines[0], / 755 root:root$/);
          return lines.map((l) => l.replace(`${KEY_DIR}/`, "")).join("; ");
        },
      );
      const managed: [TestHost, string][] = [
        [stage, "/etc/ssh/sshd_config.d/nix-ssh-cache.conf"],
        [stage, "/etc/ssh/nix-ssh-cache/authorized_keys"],
        [stage, "/etc/nix/nix-ssh-cache.conf"],
        [stage, "/etc/nix/nix.conf"],
        ...prods.flatMap((p): [TestHost, string][] => [
          [p, "/etc/ssh/nix-ssh-cache/known_hosts"],
          [p, "/etc/ssh/ssh_config.d/nix-ssh-cache.conf"],
          [p, "/etc/nix/nix-ssh-cache.conf"],
          [p, "/etc/nix/nix.conf"],
        ]),
      ];
      await reliabilityCase(
        ITEM,
        "managed sshd/ssh/nix.conf files",
        "root-owned, not group/world writable",
        async () => {
          const seen: string[] = [];
          for (const [h, f] of managed) {
            const r = await h.exec(`stat -c '%a %U:%G' ${f}`);
            const [mode, owner] = r.stdout.trim().split(" ");
            assert.equal(owner, "root:root", `${h.name}:${f} owner ${owner}`);
            assert.equal(parseInt(mode, 8) & 0o022, 0, `${h.name}:${f} mode ${mode}`);
            seen.push(mode);
          }
          return `${managed.length} files, modes ${[...new Set(seen)].join(",")}, all root:root`;
        },
      );
      await reliabilityCase(ITEM, "sshd -t after up", "passes on every host", async () => {
        for (const h of hosts.hosts) await h.exec("sshd -t");
        return "sshd -t exit 0 on stage, prod1, prod2";
      });
    },
  );
});
