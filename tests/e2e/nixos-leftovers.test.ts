/**
 * The seed tutorial's left-overs in a NixOS configuration.nix, found BEFORE nixos-rebuild by
 * evaluating the configuration (nixos-apply.sh reads `options.<path>.definitionsWithLocations`
 * through `<nixpkgs/nixos>`, which the NixOS flavour's stand-in provides as a real NixOS does):
 * each is reported with file, line and the exact edit, the system is not rebuilt, and after that
 * edit `up` succeeds. Staging and prod1 are NixOS-flavoured.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { exampleStack } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const CONFIG = "/etc/nixos/configuration.nix";
/** What the stand-in's nixos-rebuild writes on every evaluation (also a failed `boot`). */
const GENERATION = "/nix/var/nix/profiles/system-next.json";
const TUTORIAL_KEY =
  "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCWT75hPseOBJUWDRZIzrGkNcubS1D+g1hTf72nKr9sUxVA8nLfGE6WAIjOW+bLHdWQXjJH5Bhodv5t6bpY1sBi3NuQq4xcH3yGd52SlzE5dgGl4psRdA+VQXpHfsnrjZ+6LPVBVdaZjdHgq7IR1b7rOBJCtdBJXSjNyZvagghBPKe4a+4Unpg+Y09+/p0BkaNHZmpVc43OHuC4drMpnqWiqNtMoq6gqAL5Ifu+FQHG3JGHLi/QUS2ee667IiIXYX9w4BMB1+W1Rle+PvpJwWuIj12DufAUWceOzk1iipAPgKvFYs6ZC+0Ldyczu+upQBTXHmKtRaS9bdQjSg72v3eAOymMNAeKZlLo3+VhxfAh7BpQ7ER6xy7hStbYjerIWdxx/WLgoGqUOkUBMynxOP3pWZTyb4BBdSObaFJ9O2F1XlmxRg3s+hb/pqqprxuJ8iT5T8uuLi6TyeB7auXF0g/T40CPCVwCPthY9Z9pSZ9zIpv8beaWiakvs7RbYz8d6OE= ship@yourapp";

/** The left-overs, each with the lines the user has and the message naming its edit. */
const STAGING_LEFTOVERS: { name: string; lines: string[]; message: RegExp }[] = [
  {
    name: "nix.extraOptions with secret-key-files",
    lines: [
      "  nix.extraOptions = ''",
      "    secret-key-files = /etc/shipnix/binary/cache-priv-key.pem",
      "  '';",
    ],
    message:
      /configuration\.nix:(\d+) sets secret-key-files in nix\.extraOptions, which is appended to nix\.conf after the module's nix\.settings and wins .*: delete that line/,
  },
  {
    name: "nix.sshServe.enable",
    lines: ["  nix.sshServe.enable = true;"],
    message:
      /configuration\.nix:(\d+) defines nix\.sshServe\.enable, which the module sets: delete that definition/,
  },
  {
    name: "nix.sshServe.keys (accepted by NixOS, then ignored by sshd)",
    lines: [`  nix.sshServe.keys = [ "${TUTORIAL_KEY}" ];`],
    message:
      /configuration\.nix:(\d+) defines nix\.sshServe\.keys: NixOS accepts it but sshd never reads those keys for nix-ssh .*: delete that definition/,
  },
  {
    name: "nix.sshServe.protocol",
    lines: ['  nix.sshServe.protocol = "ssh";'],
    message: /configuration\.nix:(\d+) defines nix\.sshServe\.protocol, which the module sets/,
  },
  {
    name: "a user AuthorizedKeysFile in services.openssh.extraConfig",
    lines: [
      "  services.openssh.extraConfig = ''",
      "    AuthorizedKeysFile /etc/ssh/keys/%u",
      "  '';",
    ],
    message:
      /configuration\.nix:(\d+) sets AuthorizedKeysFile in services\.openssh: .*: delete that line/,
  },
];

/** configuration.nix with `lines` put before its `system.stateVersion` line. */
function withLines(configuration: string, lines: string[]): string {
  return configuration.replace(/^ {2}system\.stateVersion/m, (m) => [...lines, ""].join("\n") + m);
}

/** The line (1-based) of `configuration` where `text` starts. */
function lineOf(configuration: string, text: string): number {
  return configuration.split("\n").findIndex((l) => l.includes(text)) + 1;
}

async function addImport(host: TestHost): Promise<string> {
  const text = (await host.exec(`cat ${CONFIG}`)).stdout;
  const edited = text.replace(
    "./hardware-configuration.nix",
    "./hardware-configuration.nix\n    ./nix-ssh-cache.nix",
  );
  await host.exec(`cat > ${CONFIG}`, { input: edited });
  return edited;
}

async function generation(host: TestHost): Promise<string> {
  return (await host.exec(`stat -c %Y.%s ${GENERATION} 2>/dev/null || echo none`)).stdout.trim();
}

describe("NixOS: the tutorial's left-overs are found before the rebuild", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod1: TestHost;
  let stageConfiguration: string;
  let prodConfiguration: string;

  before(async () => {
    hosts = await startHosts([
      { name: "stage", flavours: ["nixos"] },
      { name: "prod1", flavours: ["nixos"] },
    ]);
    [stage, prod1] = ["stage", "prod1"].map((n) => hosts.byName(n));
    stack = await exampleStack(repoRoot, "nixos-leftovers", stage, [prod1]);
    stageConfiguration = await addImport(stage);
    prodConfiguration = await addImport(prod1);
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("staging: every left-over named with file:line and its edit; nothing rebuilt", async (t) => {
    const leftOver = withLines(
      stageConfiguration,
      STAGING_LEFTOVERS.flatMap((l) => l.lines),
    );
    await stage.exec(`cat > ${CONFIG}`, { input: leftOver });
    const before = await generation(stage);
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    const line = up.output.split("\n").find((l) => l.includes("left-overs that conflict"));
    t.diagnostic(line ?? "(no message)");
    assert.ok(line, up.output);
    assert.match(line, /\(nothing was rebuilt\)/);
    for (const l of STAGING_LEFTOVERS) {
      const m = l.message.exec(line);
      assert.ok(m, `${l.name}: not reported in ${line}`);
      assert.equal(Number(m[1]), lineOf(leftOver, l.lines[l.lines.length > 1 ? 1 : 0]), l.name);
    }
    assert.equal(await generation(stage), before, "nixos-rebuild ran on staging");
  });

  for (const l of STAGING_LEFTOVERS) {
    it(`staging, alone: ${l.name} is the one left-over named; nothing rebuilt`, async () => {
      const leftOver = withLines(stageConfiguration, l.lines);
      await stage.exec(`cat > ${CONFIG}`, { input: leftOver });
      const before = await generation(stage);
      const up = await stack.up();
      assert.notEqual(up.code, 0, up.output);
      const line = up.output.split("\n").find((x) => x.includes("left-overs that conflict")) ?? "";
      const m = l.message.exec(line);
      assert.ok(m, `${l.name}: not reported in ${up.output}`);
      assert.equal(Number(m[1]), lineOf(leftOver, l.lines[l.lines.length > 1 ? 1 : 0]));
      assert.doesNotMatch(line, /\(2\)/, "one left-over, one item");
      assert.equal(await generation(stage), before, "nixos-rebuild ran on staging");
    });
  }

  it("a rebuild that still fails is explained: current error texts name the option", async (t) => {
    // (not left-overs of the tutorial: nixos-apply.sh does not look for them before the rebuild)
    const cases: { configuration: string; message: RegExp }[] = [
      {
        // mergeEqualOption: "The option `services.openssh.enable' has conflicting definition values"
        configuration: stageConfiguration.replace(
          "services.openssh.enable = true;",
          "services.openssh.enable = false;",
        ),
        message:
          /nixos-rebuild switch failed: the option services\.openssh\.enable is defined multiple times, by \/etc\/nixos\/nix-ssh-cache\.nix and by your configuration \(\/etc\/nixos\/configuration\.nix:\d+: services\.openssh\.enable = false;/,
      },
      {
        // checkUnmatched: "The option `nix.sshServe.bogus' does not exist."
        configuration: withLines(stageConfiguration, ["  nix.sshServe.bogus = true;"]),
        message:
          /nixos-rebuild switch failed: the option nix\.sshServe\.bogus does not exist in this NixOS \(\/etc\/nixos\/configuration\.nix:\d+: nix\.sshServe\.bogus = true;/,
      },
      {
        // mergeDefinitions: "A definition for option `nix.settings.trusted-users."[definition 1-entry 1]"' is not of type `string'"
        configuration: withLines(stageConfiguration, ["  nix.settings.trusted-users = [ 1 ];"]),
        message:
          /nixos-rebuild switch failed: a definition of the option nix\.settings\.trusted-users has the wrong type \(\/etc\/nixos\/configuration\.nix:\d+: nix\.settings\.trusted-users = \[ 1 \];/,
      },
    ];
    for (const c of cases) {
      await stage.exec(`cat > ${CONFIG}`, { input: c.configuration });
      const up = await stack.up();
      assert.notEqual(up.code, 0, up.output);
      const line = up.output.split("\n").find((l) => l.includes("nixos-rebuild switch failed"));
      t.diagnostic(line ?? "(no message)");
      assert.match(up.output, c.message);
    }
  });

  it("staging: after the edits (the left-overs deleted) up succeeds", async () => {
    await stage.exec(`cat > ${CONFIG}`, { input: stageConfiguration });
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal((await stack.outputs()).verified, true);
  });

  it("production: lib.mkForce on substituters is named; nothing rebuilt; the plain list works", async (t) => {
    const forced = withLines(prodConfiguration, [
      '  nix.settings.substituters = lib.mkForce [ "https://cache.example.org" ];',
    ]);
    await prod1.exec(`cat > ${CONFIG}`, { input: forced });
    // a change of the modules (ssh-ng) makes the rebuild steps run again
    await stack.setConfig("protocol", "ssh-ng");
    const before = await generation(prod1);
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    const line = up.output.split("\n").find((l) => l.includes("left-overs that conflict")) ?? "";
    t.diagnostic(line);
    const m =
      /configuration\.nix:(\d+) defines nix\.settings\.substituters with lib\.mkForce: NixOS then drops every other definition, the module's included .*write the plain list instead/.exec(
        line,
      );
    assert.ok(m, up.output);
    assert.equal(Number(m[1]), lineOf(forced, "lib.mkForce"));
    assert.equal(await generation(prod1), before, "nixos-rebuild ran on prod1");
    // the exact edit: the plain list (merged with the module's)
    await prod1.exec(`cat > ${CONFIG}`, {
      input: forced.replace("lib.mkForce [", "["),
    });
    const fixed = await stack.up();
    assert.equal(fixed.code, 0, fixed.output);
    const subs = await prod1.exec(
      "nix --extra-experimental-features nix-command show-config | sed -n 's/^substituters = //p'",
    );
    assert.equal(subs.stdout.trim(), "https://cache.example.org ssh-ng://nix-ssh@stage.test");
  });
});
