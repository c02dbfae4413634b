/**
 * The NixOS path end to end: the example stack on the real engine, with NixOS-flavoured test
 * hosts (tests/hosts/flavours/nixos.sh: /etc/NIXOS, a user's configuration.nix, and a
 * nixos-rebuild stand-in that evaluates configuration.nix with its imports and applies the
 * values as NixOS would). Staging and prod1 are NixOS-flavoured, prod2 is plain Linux.
 *
 * One stack, in the order a user meets things: the module is not imported yet (fails with the
 * line to add); the tutorial's left-overs in configuration.nix (a string-valued
 * `nix.settings.secret-key-files`, `nix.extraOptions` with `secret-key-files`: found before the
 * rebuild, reported with file and line); then the cache works and
 * serves a path staging built before `up` as well as one built after; `rebuild: "none"` leaves
 * the systems as they were; `fragments: "local"` writes the modules into the repository.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { BuiltPath, buildOnStaging, exampleStack, signaturesOf, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";
import { SERVE_USER_EFFECTIVE } from "../unit/fixtures";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const CONFIG = "/etc/nixos/configuration.nix";
const MODULE = "/etc/nixos/nix-ssh-cache.nix";
const LOCAL_DIR = path.join(repoRoot, "nixos");
/** What NixOS (the stand-in) generates: compared before and after `rebuild: "none"`. */
const SYSTEM_FILES = [
  "/etc/nix/nix.conf",
  "/etc/ssh/sshd_config.d/50-nixos.conf",
  "/etc/ssh/ssh_config",
  "/etc/ssh/ssh_known_hosts",
  "/run/current-system/configuration.json",
];

/** The administrator's own global sshd lines in staging's configuration.nix. */
const USER_SSHD_LINES = ["AllowTcpForwarding no", "MaxAuthTries 3", "MaxStartups 5:30:10"];

/** configuration.nix with `lines` put before its `system.stateVersion` line. */
function withLines(configuration: string, lines: string[]): string {
  return configuration.replace(/^ {2}system\.stateVersion/m, (m) => [...lines, ""].join("\n") + m);
}

/** What the user does when told the line to add: `./nix-ssh-cache.nix` in `imports`. */
async function addImport(host: TestHost): Promise<string> {
  const text = (await host.exec(`cat ${CONFIG}`)).stdout;
  const edited = text.replace(
    "./hardware-configuration.nix",
    "./hardware-configuration.nix\n    ./nix-ssh-cache.nix",
  );
  assert.notEqual(edited, text, `${host.name}: no imports list in ${CONFIG}`);
  await host.exec(`cat > ${CONFIG}`, { input: edited });
  return edited;
}

/** The step's own message (`nix-ssh-cache: …`) in a failed up's output. */
function reported(output: string): string {
  const line = output.split("\n").find((l) => l.includes("nix-ssh-cache: "));
  return line?.trim() ?? "(no nix-ssh-cache message)";
}

async function snapshot(host: TestHost): Promise<string> {
  const r = await host.exec(SYSTEM_FILES.map((f) => `echo "== ${f}"; cat ${f}`).join("; "));
  return r.stdout;
}

describe("NixOS: staging and prod1 NixOS-flavoured, prod2 plain Linux", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod1: TestHost;
  let prod2: TestHost;
  let beforeUp: BuiltPath;
  let stageConfiguration: string;
  const localDirExisted = fs.existsSync(LOCAL_DIR);

  before(async () => {
    hosts = await startHosts([
      { name: "stage", flavours: ["nixos"] },
      { name: "prod1", flavours: ["nixos"] },
      { name: "prod2" },
    ]);
    [stage, prod1, prod2] = ["stage", "prod1", "prod2"].map((n) => hosts.byName(n));
    // The app staging built before the cache existed: unsigned.
    beforeUp = await buildOnStaging(stage, "before-up");
    assert.deepEqual(await signaturesOf(stage, beforeUp.out), []);
    stack = await exampleStack(repoRoot, "nixos", stage, [prod1, prod2]);
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
    if (!localDirExisted) fs.rmSync(LOCAL_DIR, { recursive: true, force: true });
  });

  it("a configuration.nix that does not import the module fails with the line to add", async (t) => {
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    t.diagnostic(reported(up.output));
    assert.ok(
      up.output.includes(`${CONFIG} does not import ${MODULE}`) &&
        up.output.includes("imports = [ ./nix-ssh-cache.nix ];"),
      up.output,
    );
    assert.match(up.output, new RegExp(`${stage.address.replace(/\./g, "\\.")}`));
    // the module is there, the system is not changed
    assert.match((await stage.exec(`cat ${MODULE}`)).stdout, /nix\.sshServe\.enable = true;/);
    assert.notEqual((await stage.exec("id nix-ssh", { check: false })).code, 0);
  });

  it("a string-valued nix.settings.secret-key-files left over: the conflicting option is named", async (t) => {
    stageConfiguration = await addImport(stage);
    await addImport(prod1);
    const leftOver = withLines(stageConfiguration, [
      '  nix.settings.secret-key-files = "/etc/nix/tutorial-key.pem";',
    ]);
    await stage.exec(`cat > ${CONFIG}`, { input: leftOver });
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    t.diagnostic(reported(up.output));
    // found by evaluating the configuration before the rebuild (nixos-apply.sh)
    assert.match(
      up.output,
      /left-overs that conflict with \/etc\/nixos\/nix-ssh-cache\.nix \(nothing was rebuilt\): \(1\) \/etc\/nixos\/configuration\.nix:\d+ defines nix\.settings\.secret-key-files beside the module's/,
    );
  });

  it("the tutorial's nix.extraOptions secret-key-files is reported with its file and line", async (t) => {
    const leftOver = withLines(stageConfiguration, [
      "  nix.extraOptions = ''",
      "    secret-key-files = /etc/nix/tutorial-key.pem",
      "  '';",
    ]);
    await stage.exec(`cat > ${CONFIG}`, { input: leftOver });
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    t.diagnostic(reported(up.output));
    assert.match(
      up.output,
      /\(nothing was rebuilt\): \(1\) \/etc\/nixos\/configuration\.nix:\d+ sets secret-key-files in nix\.extraOptions, which is appended to nix\.conf after the module's nix\.settings and wins/,
    );
  });

  it("without left-overs up succeeds: NixOS applied the modules, production verified", async () => {
    // The administrator's own global sshd lines, after the imported module's block (finding 2
    // of issue 21: an unclosed Match User nix-ssh captured them; MaxStartups failed sshd -t).
    await stage.exec(`cat > ${CONFIG}`, {
      input: withLines(stageConfiguration, [
        "  services.openssh.extraConfig = ''",
        ...USER_SSHD_LINES.map((l) => `    ${l}`),
        "  '';",
      ]),
    });
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const out = await stack.outputs();
    assert.equal(out.verified, true);
    // the paths staging had before: signed once (the before-up path, its .drv, ...)
    assert.ok(Number(out.signedPaths) >= 2, `signedPaths = ${String(out.signedPaths)}`);
    // what the stand-in applied from the evaluated modules
    const show = (h: TestHost, s: string) =>
      h.exec(`nix --extra-experimental-features nix-command show-config | sed -n 's/^${s} = //p'`);
    assert.equal(
      (await show(stage, "secret-key-files")).stdout.trim(),
      "/etc/shipnix/binary/cache-priv-key.pem",
    );
    const sshd = await stage.exec("sshd -T -C user=nix-ssh,host=prod1.test,addr=127.0.0.1");
    assert.match(sshd.stdout, /^forcecommand nix-store --serve$/m);
    // the serve user is confined; the administrator's lines stay global
    for (const line of SERVE_USER_EFFECTIVE) {
      assert.match(sshd.stdout, new RegExp(`^${line}$`, "m"), `nix-ssh: ${line}`);
    }
    const global = await stage.exec("sshd -T -C user=root,host=prod1.test,addr=127.0.0.1");
    for (const line of ["allowtcpforwarding no", "maxauthtries 3", "maxstartups 5:30:10"]) {
      assert.match(global.stdout, new RegExp(`^${line}$`, "m"), `global: ${line}`);
    }
    assert.match(global.stdout, /^disableforwarding no$/m, "the serve user's block stays its own");
    assert.equal((await show(prod1, "substituters")).stdout.trim(), "ssh://nix-ssh@stage.test");
    assert.match(
      (await prod1.exec("cat /etc/ssh/ssh_known_hosts")).stdout,
      /^stage\.test ssh-ed25519 /,
    );
    // the user's own global ssh option is still global
    const other = (await prod1.exec("ssh -G other.test")).stdout;
    assert.match(other, /^serveraliveinterval 30$/m);
    assert.doesNotMatch(other, /^stricthostkeychecking true$/m);
    // root's ssh checks staging against the pinned key only, never asks (README's promise)
    const toStaging = (await prod1.exec("ssh -G stage.test")).stdout;
    assert.match(toStaging, /^stricthostkeychecking true$/m);
    assert.match(toStaging, /^userknownhostsfile \/etc\/ssh\/ssh_known_hosts$/m);
    assert.match(toStaging, /^batchmode yes$/m);
    assert.match(toStaging, /^serveraliveinterval 30$/m);
  });

  it("a path built on staging before up and one built after are substituted, signed", async () => {
    const key = String((await stack.outputs()).cachePublicKey).split(":")[0];
    const afterUp = await buildOnStaging(stage, "after-up");
    for (const p of [beforeUp, afterUp]) {
      for (const prod of [prod1, prod2]) {
        const sigs = await substitute(prod, p);
        assert.ok(
          sigs.some((s) => s.startsWith(`${key}:`)),
          `${prod.name}: ${p.out} not signed by ${key}: ${sigs.join(" ")}`,
        );
      }
    }
  });

  it('rebuild: "none" writes the modules and leaves the systems as they were', async () => {
    const before = await Promise.all([stage, prod1].map(snapshot));
    await stack.setConfig("rebuild", "none");
    // a change of both modules: a key rotation's first step
    await stack.setConfigObjects(
      { signingKey: { generation: 1, previousGenerations: [0] } },
      PROJECT,
    );
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.match((await stage.exec(`cat ${MODULE}`)).stdout, /cache-priv-key-1\.pem/);
    assert.match((await prod1.exec(`cat ${MODULE}`)).stdout, /stage\.test-1:/);
    assert.deepEqual(await Promise.all([stage, prod1].map(snapshot)), before);
  });

  it('fragments: "local" writes the modules into the repository directory', async () => {
    await stack.setConfig("fragments", "local");
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const out = await stack.outputs();
    const local = (name: string) => fs.readFileSync(path.join(LOCAL_DIR, `${name}.nix`), "utf8");
    assert.equal(local("cache-staging"), out.stagingModule);
    assert.equal(local("cache-prod1"), out.productionModule);
    assert.match(local("cache-prod2"), /nix\.settings\.substituters/);
  });
});
