/**
 * The host matrix: the example stack on the real Pulumi engine against test hosts that differ as
 * real servers do (harness flavours, tests/hosts/flavours/). Two stacks, run side by side, their
 * hosts started in parallel:
 *
 * - "fleet": a staging without pid files and with Nix only in the installer's profile, and one
 *   production host per client-side flavour: today's; no pid files + Nix in the profile; its own
 *   substituters and trusted key (kept, still used); nix.conf a symlink to a read-only file; root's
 *   ~/.ssh/config turning host-key checking off. The last two fail the first `up` naming what to
 *   fix, changing nothing there; once an administrator fixes them, everything converges.
 * - "conflict": a staging whose nix.conf already signs with another key (and whose sshd has its
 *   own PidFile, and a second, SFTP-only sshd with its own config and port runs beside it): `up`
 *   fails naming the file and line, staging unchanged; fixed, it converges, reloading only the sshd
 *   that reads /etc/ssh/sshd_config (the SFTP one keeps its PID, start time and listening socket,
 *   and still serves).
 * - "sd-debian", "sd-ubuntu", "sd-nixos": hosts whose PID 1 is systemd, each flavour once as
 *   staging and once as production: Debian's ssh.service + nix-daemon.service, Ubuntu's
 *   socket-activated ssh.socket, NixOS-style sshd.service (no ExecReload) + nix-daemon.socket. The
 *   steps take systemd's reload and restart branches; no unit may fail (`is-system-running`).
 *
 * Each runs the full flow: up -> a path built on staging after up is substituted on production
 * (signature checked) -> no-op preview -> tamper + `up --refresh` -> destroy. The time of each
 * host's steps (from the engine's event log) and of each stack's flow are printed as `# matrix`.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, NIX, signaturesOf, substitute } from "./helpers";
import { CliResult, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const FIRST = Number(process.env.NSC_HOSTS_FIRST_ADDRESS || 2);
const FRAGMENT = "/etc/nix/nix-ssh-cache.conf";
const MANAGED = "/var/lib/managed-config/nix.conf";

/** One row of the matrix report. */
interface Row {
  flavour: string;
  host: string;
  stack: string;
  ok: boolean;
  /**
   * Seconds between the host's first step starting and its last step's outputs in the `up` that
   * converged it (waits for staging included).
   */
  hostSeconds?: number;
}
const rows: Row[] = [
  ["no-pidfiles (staging)", "stage", "fleet"],
  ["nix-in-profile (staging)", "stage", "fleet"],
  ["today", "today", "fleet"],
  ["no-pidfiles (production)", "nopid", "fleet"],
  ["nix-in-profile (production)", "nopid", "fleet"],
  ["own-substituters", "ownsubs", "fleet"],
  ["nixconf-symlink-ro", "symlink", "fleet"],
  ["root-ssh-config-override", "sshcfg", "fleet"],
  ["signing-key-conflict", "stage2", "conflict"],
  ["sshd-custom-pidfile", "stage2", "conflict"],
  ["second-sshd", "stage2", "conflict"],
  ["today (production)", "prod", "conflict"],
  ["systemd-debian (staging)", "sdstage1", "sd-debian"],
  ["systemd-ubuntu (production)", "sdprod1", "sd-debian"],
  ["systemd-ubuntu (staging)", "sdstage2", "sd-ubuntu"],
  ["systemd-nixos (production)", "sdprod2", "sd-ubuntu"],
  ["systemd-nixos (staging)", "sdstage3", "sd-nixos"],
  ["systemd-debian (production)", "sdprod3", "sd-nixos"],
].map(([flavour, host, stack]) => ({ flavour, host, stack, ok: false }));

/** Marks the rows of `stack` passed, with each host's step time (keys: "staging" or the name). */
function passed(stack: string, perHost: Record<string, number>): void {
  for (const row of rows.filter((r) => r.stack === stack)) {
    row.ok = true;
    row.hostSeconds = perHost[row.host.includes("stage") ? "staging" : row.host];
  }
}
const stackSeconds: Record<string, number> = {};

/**
 * `pulumi up --json` (engine events, one JSON object a line); returns the result and each host's
 * step time: seconds between its first step starting and its last step's outputs (resources are
 * named `cache-staging-*` and `cache-<production name>-*`).
 */
async function upTimed(
  stack: PulumiStack,
  extra: string[] = [],
): Promise<{ r: CliResult; perHost: Record<string, number> }> {
  const r = await stack.up([...extra, "--json"]);
  const first: Record<string, number> = {};
  const last: Record<string, number> = {};
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    let ev: {
      timestamp?: number;
      resourcePreEvent?: { metadata: { urn: string; op: string } };
      resOutputsEvent?: { metadata: { urn: string; op: string } };
    };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      continue;
    }
    const meta = ev.resourcePreEvent?.metadata ?? ev.resOutputsEvent?.metadata;
    if (!meta || meta.op === "same" || ev.timestamp === undefined) continue;
    const m = /::cache-([a-z0-9]+)-/.exec(meta.urn);
    if (!m) continue;
    first[m[1]] = Math.min(first[m[1]] ?? Infinity, ev.timestamp);
    last[m[1]] = Math.max(last[m[1]] ?? 0, ev.timestamp);
  }
  const perHost: Record<string, number> = {};
  for (const h of Object.keys(first)) perHost[h] = last[h] - first[h];
  return { r, perHost };
}

/** Config of the example stack for a staging host and production hosts. */
async function configure(stack: PulumiStack, stage: TestHost, prods: TestHost[]): Promise<void> {
  await stack.init();
  await stack.setConfigObjects(
    {
      staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
      production: prods.map((p) => ({ host: p.address, hostKey: p.hostKey, name: p.name })),
    },
    PROJECT,
  );
  await stack.setConfig("sshKey", stage.privateKey, { secret: true });
}

/** What staging's configuration is made of (files, users), to compare before and after. */
function stagingSnapshot(h: TestHost): Promise<string> {
  return h
    .exec(
      `{ find /etc/ssh /etc/nix /etc/shipnix /var/lib/nix-ssh-cache -printf '%p %m %s\\n' 2>/dev/null | sort
         sha256sum /etc/nix/nix.conf /etc/ssh/sshd_config /etc/passwd
         sshd -T -C user=nix-ssh,host=x,addr=127.0.0.1 | grep ^forcecommand; } || true`,
    )
    .then((r) => r.stdout);
}

/**
 * The SFTP-only sshd of flavour second-sshd: "PID START_TIME SOCKETS" (start time in clock ticks
 * since boot, /proc/PID/stat field 22; the inodes of its sockets). A reload of it (SIGHUP: sshd
 * re-executes itself) would change its sockets; a restart its PID and start time.
 */
async function sftpSshdState(h: TestHost): Promise<string> {
  const r = await h.exec(
    `pid=$(cat /run/sshd-sftp.pid) && echo "$pid $(awk '{print $22}' /proc/$pid/stat) $(find /proc/$pid/fd -lname 'socket:*' -printf '%l ' | sort)"`,
  );
  return r.stdout.trim();
}

/**
 * A new SSH connection from outside to `h`'s sshd on `port`, its host key pinned: `sftp` (batch
 * `pwd`) or `ssh` (command `true`). Fails the test unless it succeeds; returns its stdout.
 */
function connects(h: TestHost, port: number, tool: "ssh" | "sftp"): string {
  const known = path.join(path.dirname(h.privateKeyPath), `known_hosts_${h.name}_${port}`);
  const name = port === 22 ? h.address : `[${h.address}]:${port}`;
  fs.writeFileSync(known, `${name} ${h.hostKey}\n`);
  const common = [
    "-i",
    h.privateKeyPath,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${known}`,
    "-o",
    "BatchMode=yes",
  ];
  const args =
    tool === "sftp"
      ? [...common, "-P", String(port), "-b", "-", `root@${h.address}`]
      : [...common, "-p", String(port), `root@${h.address}`, "true"];
  const r = spawnSync(tool, args, { input: "pwd\n", encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, `${tool} to ${h.name}:${port} failed: ${r.stderr}`);
  return r.stdout;
}

/** The systemd stacks: staging's flavour, production's flavour, their host names. */
const SYSTEMD_STACKS = [
  {
    stack: "sd-debian",
    stage: "sdstage1",
    stageFlavour: "systemd-debian",
    prod: "sdprod1",
    prodFlavour: "systemd-ubuntu",
  },
  {
    stack: "sd-ubuntu",
    stage: "sdstage2",
    stageFlavour: "systemd-ubuntu",
    prod: "sdprod2",
    prodFlavour: "systemd-nixos",
  },
  {
    stack: "sd-nixos",
    stage: "sdstage3",
    stageFlavour: "systemd-nixos",
    prod: "sdprod3",
    prodFlavour: "systemd-debian",
  },
] as const;

/** systemd's state on a host: "running" when every unit started and none failed. */
async function systemdState(h: TestHost): Promise<string> {
  const r = await h.exec("systemctl is-system-running; systemctl --failed --no-legend --plain", {
    check: false,
  });
  return r.stdout.trim();
}

// the stacks run two at a time (their own hosts, stacks and backends); steps within one stack
// run in order
describe(
  "host matrix: the full flow on hosts that differ as real servers do",
  { skip, concurrency: 2 },
  () => {
    let fleetHosts: TestHosts;
    let conflictHosts: TestHosts;
    let systemdHosts: TestHosts;
    let fleet: PulumiStack;
    let conflict: PulumiStack;
    const sdStacks: Record<string, PulumiStack> = {};
    const t0: Record<string, number> = {};
    // a file in the machine's /tmp: booting systemd in a host must not reach it (systemd-tmpfiles'
    // `D /tmp` empties /tmp at boot; the host's /tmp is its own, the machine's root read-only)
    let machineMarker = "";

    before(async () => {
      machineMarker = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-matrix-marker-"));
      const started = Date.now();
      [fleetHosts, conflictHosts, systemdHosts] = await Promise.all([
        startHosts(
          [
            { name: "stage", flavours: ["no-pidfiles", "nix-in-profile"] },
            { name: "today" },
            { name: "nopid", flavours: ["no-pidfiles", "nix-in-profile"] },
            { name: "ownsubs", flavours: ["own-substituters"] },
            { name: "symlink", flavours: ["nixconf-symlink-ro"] },
            { name: "sshcfg", flavours: ["root-ssh-config-override"] },
          ],
          { firstAddress: FIRST },
        ),
        startHosts(
          [
            {
              name: "stage2",
              flavours: ["sshd-custom-pidfile", "signing-key-conflict", "second-sshd"],
            },
            { name: "prod" },
          ],
          { firstAddress: FIRST + 6 },
        ),
        startHosts(
          SYSTEMD_STACKS.flatMap((s) => [
            { name: s.stage, flavours: [s.stageFlavour] },
            { name: s.prod, flavours: [s.prodFlavour] },
          ]),
          { firstAddress: FIRST + 8 },
        ),
      ]);
      console.log(
        `# matrix: 14 flavoured hosts (6 with systemd as PID 1) up in ${Date.now() - started} ms`,
      );
      fleet = new PulumiStack(repoRoot, "fleet");
      conflict = new PulumiStack(repoRoot, "conflict");
      const f = fleetHosts.hosts;
      const c = conflictHosts.hosts;
      for (const s of SYSTEMD_STACKS) sdStacks[s.stack] = new PulumiStack(repoRoot, s.stack);
      await Promise.all([
        configure(fleet, f[0], f.slice(1)),
        configure(conflict, c[0], c.slice(1)),
        ...SYSTEMD_STACKS.map((s) =>
          configure(sdStacks[s.stack], systemdHosts.byName(s.stage), [systemdHosts.byName(s.prod)]),
        ),
      ]);
    });

    after(async () => {
      await Promise.all([fleet, conflict, ...Object.values(sdStacks)].map((st) => st?.dispose()));
      await Promise.all([
        fleetHosts?.teardown(),
        conflictHosts?.teardown(),
        systemdHosts?.teardown(),
      ]);
      // teardown throws when a PID or a cgroup of a host is left; the machine's /tmp is intact
      assert.ok(machineMarker && fs.existsSync(machineMarker), `${machineMarker} is gone`);
      fs.rmSync(machineMarker, { recursive: true, force: true });
      console.log(
        "# matrix | flavour | host | stack | result | host steps in the converging up (s)",
      );
      for (const row of rows) {
        console.log(
          `# matrix | ${row.flavour} | ${row.host} | ${row.stack} | ${row.ok ? "pass" : "FAIL"} | ${row.hostSeconds ?? "-"}`,
        );
      }
      for (const [s, secs] of Object.entries(stackSeconds)) {
        console.log(`# matrix | stack ${s}: full flow ${secs.toFixed(1)} s`);
      }
    });

    describe(
      "stack fleet: staging without pid files, Nix in the profile; five production flavours",
      { concurrency: 1 },
      () => {
        const host = (n: string) => fleetHosts.byName(n);
        const prods = () => ["today", "nopid", "ownsubs", "symlink", "sshcfg"].map(host);
        let converged: Record<string, number> = {};

        it("first up converges what it can and names what blocks the others, changing nothing there", async () => {
          t0.fleet = Date.now();
          const { r, perHost } = await upTimed(fleet, ["--continue-on-error"]);
          converged = perHost; // the hosts that converge here; the others in the next up
          assert.notEqual(
            r.code,
            0,
            "the read-only nix.conf and root's ssh config must fail the first up",
          );
          assert.match(
            r.output,
            /\/etc\/nix\/nix\.conf is a symlink to \/var\/lib\/managed-config\/nix\.conf, which is not writable[\s\S]*!include \/etc\/nix\/nix-ssh-cache\.conf/,
          );
          assert.match(
            r.output,
            /stricthostkeychecking 'false' for stage\.test[\s\S]*\/root\/\.ssh\/config line 2/,
          );
          const sym = host("symlink");
          assert.equal((await sym.exec("readlink /etc/nix/nix.conf")).stdout.trim(), MANAGED);
          assert.equal(
            (await sym.exec(`ls ${FRAGMENT} 2>/dev/null || echo absent`)).stdout.trim(),
            "absent",
          );
          // the other production hosts converged in the same up
          for (const p of ["today", "nopid", "ownsubs"].map(host)) {
            const conf = await p.exec(`${NIX} show-config | grep ^substituters`);
            assert.match(conf.stdout, /ssh:\/\/nix-ssh@stage\.test/, `${p.name} not configured`);
          }
        });

        it("once the administrator fixes both hosts, up converges every host", async () => {
          // the tool managing the read-only nix.conf adds the line the error named
          await host("symlink").exec(
            `mount -o remount,rw,bind /var/lib/managed-config && echo '!include ${FRAGMENT}' >>${MANAGED} && mount -o remount,ro,bind /var/lib/managed-config`,
          );
          // a Host block for staging before root's `Host *`, as the error said
          await host("sshcfg").exec(
            `{ printf 'Host stage.test\\n  StrictHostKeyChecking yes\\n  UserKnownHostsFile /etc/ssh/nix-ssh-cache/known_hosts\\n\\n'; cat /root/.ssh/config; } >/root/.ssh/config.new && mv /root/.ssh/config.new /root/.ssh/config`,
          );
          const { r, perHost } = await upTimed(fleet);
          assert.equal(r.code, 0, r.output);
          converged = { ...converged, ...perHost };
          assert.equal((await fleet.outputs()).verified, true);
        });

        it("a path built on staging after up is substituted by every production host, signed", async () => {
          const built = await buildOnStaging(host("stage"), "matrix");
          for (const p of prods()) {
            const sigs = await substitute(p, built);
            assert.ok(
              sigs.some((s) => s.startsWith("stage.test:")),
              `${p.name}: not signed by staging`,
            );
          }
          // staging serves with the Nix in its profile; its sshd and daemon were found without pid files
          const force = await host("stage").exec(
            "sshd -T -C user=nix-ssh,host=x,addr=127.0.0.1 | grep ^forcecommand",
          );
          assert.equal(
            force.stdout.trim(),
            "forcecommand /nix/var/nix/profiles/default/bin/nix-store --serve",
          );
        });

        it("the host's own substituter and trusted key are kept and still used", async () => {
          const p = host("ownsubs");
          const conf = (await p.exec(`${NIX} show-config`)).stdout;
          assert.match(
            conf,
            /^substituters = .*file:\/\/\/var\/lib\/own-cache.*ssh:\/\/nix-ssh@stage\.test|^substituters = .*ssh:\/\/nix-ssh@stage\.test.*file:\/\/\/var\/lib\/own-cache/m,
          );
          assert.match(
            conf,
            /^trusted-public-keys = .*own-cache-1:.*stage\.test:|^trusted-public-keys = .*stage\.test:.*own-cache-1:/m,
          );
          // a path in the host's own cache, signed by its own key, is substituted from there
          const expr = `builtins.derivation { name = "own-${Date.now()}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo own > $out" ]; }`;
          const out = (await p.exec(`nix-build --no-out-link -E '${expr}'`)).stdout
            .trim()
            .split("\n")
            .pop()!;
          await p.exec(
            `${NIX} store sign --key-file /var/lib/own-cache-key/secret ${out} && ${NIX} copy --to file:///var/lib/own-cache ${out} && nix-store --delete ${out}`,
          );
          await p.exec(`nix-store --realise ${out}`);
          assert.ok((await signaturesOf(p, out)).some((s) => s.startsWith("own-cache-1:")));
        });

        it("the symlinked nix.conf is still a symlink; its target keeps its mode (no 0777 file)", async () => {
          const p = host("symlink");
          assert.equal((await p.exec("readlink /etc/nix/nix.conf")).stdout.trim(), MANAGED);
          assert.equal((await p.exec(`stat -c '%a %U' ${MANAGED}`)).stdout.trim(), "644 root");
        });

        it("a second up changes nothing and preview expects no changes", async () => {
          const up = await fleet.up(["--expect-no-changes"]);
          assert.equal(up.code, 0, up.output);
          const preview = await fleet.preview(["--expect-no-changes"]);
          assert.equal(preview.code, 0, preview.output);
        });

        it("tampering is shown by preview --refresh and repaired by up --refresh", async () => {
          await host("nopid").exec(`echo 'extra-substituters = ssh://evil.example' >>${FRAGMENT}`);
          await host("stage").exec("rm -f /etc/ssh/sshd_config.d/nix-ssh-cache.conf");
          const preview = await fleet.preview(["--refresh", "--expect-no-changes"]);
          assert.notEqual(preview.code, 0, "preview --refresh must show the drift");
          const up = await fleet.up(["--refresh"]);
          assert.equal(up.code, 0, up.output);
          assert.doesNotMatch((await host("nopid").exec(`cat ${FRAGMENT}`)).stdout, /evil/);
          const built = await buildOnStaging(host("stage"), "after-tamper");
          for (const p of prods()) await substitute(p, built);
        });

        it("destroy removes the configuration, keeps the symlink and services running", async () => {
          const destroy = await fleet.run(["destroy", "--yes", "--skip-preview"]);
          assert.equal(destroy.code, 0, destroy.output);
          for (const p of prods()) {
            const left = await p.exec(
              `ls ${FRAGMENT} /etc/ssh/ssh_config.d/nix-ssh-cache.conf 2>/dev/null || true`,
            );
            assert.equal(left.stdout.trim(), "", `${p.name} still has managed files`);
            assert.notEqual(
              (await p.exec("bash /run/nsc/host-services.sh nix-daemon-pid")).stdout.trim(),
              "",
            );
          }
          assert.equal(
            (await host("symlink").exec("readlink /etc/nix/nix.conf")).stdout.trim(),
            MANAGED,
          );
          // the read-only target keeps the administrator's line (a missing !include is ignored)
          const managed = (await host("symlink").exec(`cat ${MANAGED}`)).stdout;
          assert.match(managed, /^!include \/etc\/nix\/nix-ssh-cache\.conf$/m);
          assert.notEqual(
            (await host("stage").exec("bash /run/nsc/host-services.sh sshd-pid")).stdout.trim(),
            "",
          );
          stackSeconds.fleet = (Date.now() - t0.fleet) / 1000;
          passed("fleet", converged);
        });
      },
    );

    describe(
      "stack conflict: staging already signing with another key, sshd with its own PidFile",
      { concurrency: 1 },
      () => {
        const stage = () => conflictHosts.byName("stage2");
        const prod = () => conflictHosts.byName("prod");
        let converged: Record<string, number> = {};
        let sftpBefore = "";

        it("up fails naming the file and line, before anything on staging changes", async () => {
          t0.conflict = Date.now();
          sftpBefore = await sftpSshdState(stage());
          assert.match(connects(stage(), 2222, "sftp"), /Remote working directory: \/root/);
          const before = await stagingSnapshot(stage());
          const up = await conflict.up();
          assert.notEqual(up.code, 0);
          assert.match(
            up.output,
            /\/etc\/nix\/nix\.conf:\d+ \('secret-key-files = \/etc\/nix\/old-cache\/secret'\) already sets secret-key-files[\s\S]*Remove that line[\s\S]*Nothing was changed/,
          );
          assert.equal(
            await stagingSnapshot(stage()),
            before,
            "staging changed although up failed",
          );
        });

        it("without the conflicting line, up converges", async () => {
          await stage().exec(
            "sed -i '/^secret-key-files = \\/etc\\/nix\\/old-cache\\/secret$/d' /etc/nix/nix.conf",
          );
          const { r, perHost } = await upTimed(conflict);
          assert.equal(r.code, 0, r.output);
          converged = perHost;
        });

        it("only the sshd that reads /etc/ssh/sshd_config was reloaded; the SFTP-only one is untouched and serves", async () => {
          // same PID, start time and listening socket: neither restarted nor re-executed (SIGHUP)
          assert.equal(await sftpSshdState(stage()), sftpBefore);
          assert.match(connects(stage(), 2222, "sftp"), /Remote working directory: \/root/);
          // nix-ssh's Match block is in force in the main sshd, not in the SFTP one's configuration
          const main = await stage().exec(
            "sshd -T -C user=nix-ssh,host=x,addr=127.0.0.1 | grep ^forcecommand",
          );
          assert.match(main.stdout, /nix-store --serve/);
          const sftp = await stage().exec(
            "sshd -T -f /etc/ssh/sshd_config_sftp -C user=nix-ssh,host=x,addr=127.0.0.1 | grep ^forcecommand",
          );
          assert.equal(sftp.stdout.trim(), "forcecommand internal-sftp");
        });

        it("a path built on staging after up is substituted on production, signed", async () => {
          const built = await buildOnStaging(stage(), "conflict");
          const sigs = await substitute(prod(), built);
          assert.ok(sigs.some((s) => s.startsWith("stage2.test:")));
          assert.ok(!sigs.some((s) => s.startsWith("old-cache-1:")), "signed with the removed key");
        });

        it("no-op preview, tamper + up --refresh, destroy", async () => {
          const preview = await conflict.preview(["--expect-no-changes"]);
          assert.equal(preview.code, 0, preview.output);
          await stage().exec("rm -f /etc/ssh/sshd_config.d/nix-ssh-cache.conf");
          const up = await conflict.up(["--refresh"]);
          assert.equal(up.code, 0, up.output);
          await substitute(prod(), await buildOnStaging(stage(), "conflict-tamper"));
          const destroy = await conflict.run(["destroy", "--yes", "--skip-preview"]);
          assert.equal(destroy.code, 0, destroy.output);
          assert.equal(
            (
              await stage().exec(
                "ls /etc/ssh/sshd_config.d/nix-ssh-cache.conf 2>/dev/null || echo gone",
              )
            ).stdout.trim(),
            "gone",
          );
          stackSeconds.conflict = (Date.now() - t0.conflict) / 1000;
          passed("conflict", converged);
        });
      },
    );

    for (const sd of SYSTEMD_STACKS) {
      describe(
        `stack ${sd.stack}: systemd as PID 1, staging ${sd.stageFlavour}, production ${sd.prodFlavour}`,
        { concurrency: 1 },
        () => {
          const stage = () => systemdHosts.byName(sd.stage);
          const prod = () => systemdHosts.byName(sd.prod);
          const stack = () => sdStacks[sd.stack];
          let converged: Record<string, number> = {};

          it("up converges through systemd's reload and restart, no unit fails", async () => {
            t0[sd.stack] = Date.now();
            const { r, perHost } = await upTimed(stack());
            assert.equal(r.code, 0, r.output);
            converged = perHost;
            assert.equal((await stack().outputs()).verified, true);
            for (const h of [stage(), prod()]) assert.equal(await systemdState(h), "running");
          });

          it("a path built on staging after up is substituted on production, signed", async () => {
            const sigs = await substitute(prod(), await buildOnStaging(stage(), sd.stack));
            assert.ok(sigs.some((x) => x.startsWith(`${sd.stage}.test:`)));
          });

          it("no-op preview, tamper + up --refresh, destroy; services still run under systemd", async () => {
            const preview = await stack().preview(["--expect-no-changes"]);
            assert.equal(preview.code, 0, preview.output);
            await stage().exec("rm -f /etc/ssh/sshd_config.d/nix-ssh-cache.conf");
            await prod().exec(`echo 'extra-substituters = ssh://evil.example' >>${FRAGMENT}`);
            const up = await stack().up(["--refresh"]);
            assert.equal(up.code, 0, up.output);
            assert.doesNotMatch((await prod().exec(`cat ${FRAGMENT}`)).stdout, /evil/);
            await substitute(prod(), await buildOnStaging(stage(), `${sd.stack}-tamper`));
            const destroy = await stack().run(["destroy", "--yes", "--skip-preview"]);
            assert.equal(destroy.code, 0, destroy.output);
            const left = await stage().exec(
              "ls /etc/ssh/sshd_config.d/nix-ssh-cache.conf 2>/dev/null || echo gone",
            );
            assert.equal(left.stdout.trim(), "gone");
            for (const h of [stage(), prod()]) {
              assert.equal(await systemdState(h), "running", `${h.name}: a unit failed`);
              assert.equal(
                (await h.exec(`ls ${FRAGMENT} 2>/dev/null || echo gone`)).stdout.trim(),
                "gone",
              );
            }
            // both sshds still serve new connections
            for (const h of [stage(), prod()]) connects(h, 22, "ssh");
            stackSeconds[sd.stack] = (Date.now() - t0[sd.stack]) / 1000;
            passed(sd.stack, converged);
          });
        },
      );
    }
  },
);
