/**
 * The NixOS staging module's serve-user block in the sshd_config NixOS generates from it
 * (finding 2 of issue 21). nixpkgs' sshd module (nixos/modules/services/networking/ssh/sshd.nix)
 * writes `services.openssh.settings` first, then `services.openssh.extraConfig`: its own lines
 * (`mkOrder 0`: Port, AuthorizedKeysFile, HostKey), then every module's lines in module order,
 * an imported module's before configuration.nix's. The administrator's global lines in
 * configuration.nix therefore follow our block: it must end with `Match All`.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderStagingModule } from "../../components/render/nixosModules";
import { hasCommand, NO_NIX, nixEval, SERVE_USER_EFFECTIVE, withTempDir } from "./fixtures";

const SSHD = "/usr/sbin/sshd";

/** Why the sshd tests cannot run here, or false (sshd -t needs its privilege-separation dir). */
function sshdSkipReason(): string | false {
  if (NO_NIX) return NO_NIX;
  if (!existsSync(SSHD)) return `${SSHD} is not installed`;
  if (!hasCommand("ssh-keygen")) return "ssh-keygen is not installed";
  if (!existsSync("/run/sshd")) {
    try {
      mkdirSync("/run/sshd", { mode: 0o755 }); // what the sshd service itself creates
    } catch {
      return "/run/sshd (sshd's privilege-separation directory) is missing and cannot be created";
    }
  }
  return false;
}

/** The administrator's own global sshd lines in configuration.nix (the review's example). */
const USER_LINES = [
  "AllowTcpForwarding no",
  "MaxAuthTries 3",
  "MaxStartups 5:30:10",
  "ClientAliveInterval 60",
  "DenyUsers mallory",
];

/** services.openssh.extraConfig of the rendered staging module, as Nix evaluates it. */
function moduleExtraConfig(): string {
  const text = renderStagingModule({
    clientKeys: [],
    secretKeyFile: "/etc/nix-ssh-cache/cache-priv-key.pem",
    authorizedKeysFile: "/etc/ssh/nix-ssh-cache/authorized_keys",
  });
  return withTempDir((dir) => {
    const file = join(dir, "module.nix");
    writeFileSync(file, text);
    const value = nixEval(
      "{ file }: import file { config = { }; lib = { }; pkgs = { }; options = { }; }",
      { file },
    ) as { services: { openssh: { extraConfig: string } } };
    return value.services.openssh.extraConfig;
  });
}

/** sshd_config as nixpkgs assembles it: settings, its own extraConfig, the modules' lines. */
function nixosSshdConfig(hostKey: string, ours: string): string {
  return [
    // services.openssh.settings (defaults of current nixpkgs)
    "KbdInteractiveAuthentication yes",
    "LogLevel INFO",
    "PasswordAuthentication yes",
    "PermitRootLogin prohibit-password",
    "UseDns no",
    "X11Forwarding no",
    // extraConfig, mkOrder 0 (the sshd module's own lines)
    "AddressFamily any",
    "Port 22",
    "AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u",
    `HostKey ${hostKey}`,
    // nix.sshServe (nixos/modules/services/misc/nix-ssh-serve.nix)
    "Match User nix-ssh",
    "  AllowAgentForwarding no",
    "  AllowTcpForwarding no",
    "  PermitTTY no",
    "  PermitTunnel no",
    "  X11Forwarding no",
    "  ForceCommand /run/current-system/sw/bin/nix-store --serve",
    "Match All",
    // the imported nix-ssh-cache module, then configuration.nix's own lines
    ours.trimEnd(),
    ...USER_LINES,
    "",
  ].join("\n");
}

describe("the NixOS serve-user block in nixpkgs' sshd_config", { skip: sshdSkipReason() }, () => {
  it("leaves the administrator's lines global and confines nix-ssh", () => {
    const ours = moduleExtraConfig();
    withTempDir((dir) => {
      const hostKey = join(dir, "host_key");
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey]);
      const config = join(dir, "sshd_config");
      writeFileSync(config, nixosSshdConfig(hostKey, ours));
      // nixpkgs' system.checks run `sshd -G -T` on it: a MaxStartups inside Match fails the build
      const check = spawnSync(SSHD, ["-t", "-f", config], { encoding: "utf8" });
      assert.equal(check.status, 0, `sshd -t: ${check.stderr}`);
      const effective = (user: string) =>
        execFileSync(SSHD, ["-T", "-f", config, "-C", `user=${user},host=x,addr=127.0.0.1`], {
          encoding: "utf8",
        });
      const root = effective("root");
      for (const line of [
        "allowtcpforwarding no",
        "maxauthtries 3",
        "maxstartups 5:30:10",
        "clientaliveinterval 60",
        "denyusers mallory",
      ]) {
        assert.match(root, new RegExp(`^${line}$`, "m"), `global for root: ${line}`);
      }
      assert.match(root, /^disableforwarding no$/m, "our block does not leak to root");
      assert.match(root, /^passwordauthentication yes$/m);
      const nixSsh = effective("nix-ssh");
      for (const line of [
        "forcecommand /run/current-system/sw/bin/nix-store --serve",
        "authorizedkeysfile /etc/ssh/nix-ssh-cache/authorized_keys",
        ...SERVE_USER_EFFECTIVE,
        // the administrator's global lines apply to nix-ssh as to everyone
        "maxauthtries 3",
        "clientaliveinterval 60",
      ]) {
        assert.match(nixSsh, new RegExp(`^${line}$`, "m"), `for nix-ssh: ${line}`);
      }
    });
  });
});
