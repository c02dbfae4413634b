/**
 * The test hosts' NixOS module-system stand-in (tests/hosts/flavours/nixos-eval.nix) against
 * what the real nixpkgs module system does, case by case. Each row names the upstream function
 * (nixpkgs lib/modules.nix, lib/types.nix, lib/options.nix, nixos/modules/…) whose behaviour it
 * expects; the stand-in is written from those sources, so a row that fails means the stand-in
 * no longer follows them.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { NO_NIX, nixosEvalFile, withTempDir } from "./fixtures";

/** The module nix-ssh-cache renders, as far as these rows need it (imported by configuration.nix). */
const OURS = [
  "{ config, lib, pkgs, ... }:",
  "{",
  "  nix.sshServe.enable = true;",
  '  nix.sshServe.keys = [ "ssh-ed25519 AAAAours ours" ];',
  '  nix.settings.secret-key-files = [ "/etc/nix-ssh-cache/cache-priv-key.pem" ];',
  '  nix.settings.substituters = [ "ssh://nix-ssh@stage.test" ];',
  '  nix.settings.trusted-public-keys = [ "stage.test:ours" ];',
  "  services.openssh.extraConfig = ''",
  "    Match User nix-ssh",
  "      AuthorizedKeysFile /etc/ssh/nix-ssh-cache/authorized_keys",
  "  '';",
  '  programs.ssh.extraConfig = "Host stage.test\\n  Port 2222\\nHost *\\n";',
  "}",
].join("\n");

/** A row: the user's configuration.nix body (it imports ours) and what real NixOS gives. */
interface Row {
  /** What the row shows, and the upstream code it follows. */
  name: string;
  /** Lines of configuration.nix after `imports = [ ./nix-ssh-cache.nix ];`. */
  user: string[];
  /** A Nix expression over `r` (`import <nixpkgs/nixos> { … }`: config and options). */
  expr?: string;
  /** Its value, as JSON. */
  expected?: unknown;
  /** Or: the evaluation fails with this message (regexp over stderr). */
  error?: RegExp;
  /** `"build"`: `r` is what the test hosts' nixos-rebuild applies (`files`: /etc). */
  result?: "nixos" | "build";
}

const ROWS: Row[] = [
  {
    name: "substituters: the user's, then ours, then nix.nix's mkAfter cache.nixos.org (submoduleWith reverses its definitions; sortProperties moves mkAfter last)",
    user: ['  nix.settings.substituters = [ "https://user.example" ];'],
    expr: "r.config.nix.settings.substituters",
    expected: ["https://user.example", "ssh://nix-ssh@stage.test", "https://cache.nixos.org/"],
  },
  {
    name: "trusted-public-keys: nix.nix's cache.nixos.org key (not mkAfter) first, then the user's, then ours",
    user: ['  nix.settings.trusted-public-keys = [ "user:key" ];'],
    expr: "r.config.nix.settings.trusted-public-keys",
    expected: [
      "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
      "user:key",
      "stage.test:ours",
    ],
  },
  {
    name: "lines (programs.ssh.extraConfig): the imported module's text first (evalModules reverses collectModules' breadth-first list), joined with \\n",
    user: ['  programs.ssh.extraConfig = "ServerAliveInterval 30\\n";'],
    expr: "r.config.programs.ssh.extraConfig",
    expected: "Host stage.test\n  Port 2222\nHost *\n\nServerAliveInterval 30\n",
  },
  {
    name: "lines (services.openssh.extraConfig): sshd.nix's mkOrder 0 part, ours, the user's, then nix-ssh-serve.nix's Match block (a NixOS module: last)",
    user: ['  services.openssh.extraConfig = "PermitRootLogin no\\n";'],
    expr: "r.config.services.openssh.extraConfig",
    expected:
      "AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u\n\n" +
      "Match User nix-ssh\n  AuthorizedKeysFile /etc/ssh/nix-ssh-cache/authorized_keys\n\n" +
      "PermitRootLogin no\n\n" +
      "Match User nix-ssh\n  AllowAgentForwarding no\n  AllowTcpForwarding no\n  PermitTTY no\n" +
      "  PermitTunnel no\n  X11Forwarding no\n  ForceCommand nix-store --serve\nMatch All\n",
  },
  {
    name: "listOf in imports order: of `imports = [ a b ./nix-ssh-cache.nix ]` the last import's definitions come first (reverseList of the closure)",
    user: ['  imports = [ { nix.sshServe.keys = [ "a" ]; } { nix.sshServe.keys = [ "b" ]; } ];'],
    expr: "r.config.nix.sshServe.keys",
    expected: ["ssh-ed25519 AAAAours ours", "b", "a"],
  },
  {
    name: "mkForce on substituters: every other definition dropped, ours and cache.nixos.org included (filterOverrides)",
    user: ['  nix.settings.substituters = lib.mkForce [ "https://only.example" ];'],
    expr: "r.config.nix.settings.substituters",
    expected: ["https://only.example"],
  },
  {
    name: "mkDefault loses to a plain definition; mkOverride 10 wins over mkForce (filterOverrides)",
    user: [
      "  nix.sshServe.enable = lib.mkDefault false;",
      '  nix.sshServe.protocol = lib.mkMerge [ (lib.mkForce "ssh") (lib.mkOverride 10 "ssh-ng") ];',
    ],
    expr: "[ r.config.nix.sshServe.enable r.config.nix.sshServe.protocol ]",
    expected: [true, "ssh-ng"],
  },
  {
    name: "mkIf false and mkMerge (dischargeProperties); mkBefore sorts first (sortProperties)",
    user: [
      '  nix.sshServe.keys = lib.mkMerge [ (lib.mkIf false [ "no" ]) (lib.mkBefore [ "first" ]) ];',
      '  nix.settings.substituters = lib.mkIf true [ "https://user.example" ];',
    ],
    expr: "[ r.config.nix.sshServe.keys r.config.nix.settings.substituters ]",
    expected: [
      ["first", "ssh-ed25519 AAAAours ours"],
      ["https://user.example", "ssh://nix-ssh@stage.test", "https://cache.nixos.org/"],
    ],
  },
  {
    name: 'an undeclared option: "does not exist" (evalModules\' checkUnmatched)',
    user: ["  nix.sshServe.bogus = true;"],
    expr: "r.config.nix.sshServe.enable",
    error:
      /The option `nix\.sshServe\.bogus' does not exist\. Definition values:\n\s*- In `[^']*configuration\.nix': true/,
  },
  {
    name: 'a string secret-key-files beside our list: freeform `either` of confAtom and listOf confAtom falls to mergeOneOption: "defined multiple times"',
    user: ['  nix.settings.secret-key-files = "/etc/nix/old.pem";'],
    expr: "r.config.nix.settings",
    error:
      /The option `nix\.settings\.secret-key-files' is defined multiple times while it's expected to be unique\.\n\s*\n\s*Definition values:\n\s*- In `[^']*configuration\.nix': "\/etc\/nix\/old\.pem"/,
  },
  {
    name: "a value of the wrong type: mergeDefinitions' \"is not of type\" with the type's description",
    user: ['  nix.sshServe.protocol = "ftp";'],
    expr: "r.config.nix.sshServe.protocol",
    error:
      /A definition for option `nix\.sshServe\.protocol' is not of type `one of "ssh", "ssh-ng"'\. Definition values:\n\s*- In `[^']*configuration\.nix': "ftp"/,
  },
  {
    name: "a list element of the wrong type: listOf merges each element on its own (`[definition n-entry m]`, Nix config atom)",
    user: ['  nix.settings.secret-key-files = [ [ "/nested.pem" ] ];'],
    expr: "r.config.nix.settings",
    error:
      /A definition for option `nix\.settings\.secret-key-files\."\[definition 1-entry 1\]"' is not of type `Nix config atom \(null, bool, int, float, str, path or package\)'/,
  },
  {
    name: 'two different values of a bool: mergeEqualOption\'s "has conflicting definition values"',
    user: ["  nix.sshServe.enable = false;"],
    expr: "r.config.nix.sshServe.enable",
    error:
      /The option `nix\.sshServe\.enable' has conflicting definition values:\n\s*- In `[^']*nix-ssh-cache\.nix': true\n\s*- In `[^']*configuration\.nix': false/,
  },
  {
    name: "nix.sshServe.keys: accepted, merged into users.users.nix-ssh.openssh.authorizedKeys.keys (nix-ssh-serve.nix)",
    user: ['  nix.sshServe.keys = [ "ssh-rsa AAAAtutorial" ];'],
    expr: "r.config.users.users.nix-ssh.openssh.authorizedKeys.keys",
    expected: ["ssh-rsa AAAAtutorial", "ssh-ed25519 AAAAours ours"].reverse(),
  },
  {
    name: "nix.conf: nix.settings (sorted, extra-* after) then nix.extraOptions, so a setting there is read last and wins (nix.nix's nixConf text)",
    user: ['  nix.extraOptions = "secret-key-files = /etc/shipnix/binary/cache-priv-key.pem\\n";'],
    result: "build",
    expr: 'builtins.filter (l: builtins.match "secret-key-files.*" l != null) (builtins.filter builtins.isString (builtins.split "\\n" r.files."/etc/nix/nix.conf"))',
    expected: [
      "secret-key-files = /etc/nix-ssh-cache/cache-priv-key.pem",
      "secret-key-files = /etc/shipnix/binary/cache-priv-key.pem",
    ],
  },
  {
    name: "options.<path>.definitionsWithLocations / files: each surviving definition with its file, mkForce inside a submodule value kept (evalOptionValue)",
    user: [
      '  nix.extraOptions = "secret-key-files = /old.pem\\n";',
      '  nix.settings.substituters = lib.mkForce [ "https://x" ];',
    ],
    expr:
      "[ (map (d: baseNameOf d.file) r.options.nix.extraOptions.definitionsWithLocations) " +
      "(map baseNameOf r.options.nix.sshServe.keys.files) " +
      '(map (d: (d.value.substituters or { })._type or "") (builtins.filter (d: baseNameOf d.file == "configuration.nix") r.options.nix.settings.definitionsWithLocations)) ' +
      "r.options.nix.settings.highestPrio ]",
    expected: [["configuration.nix"], ["nix-ssh-cache.nix"], ["override"], 100],
  },
];

/** Evaluates the row's `expr` over `import nixos-eval.nix { result = "nixos"; }` of its configuration. */
function evaluate(row: Row): { value?: unknown; stderr?: string } {
  return withTempDir((dir) => {
    writeFileSync(join(dir, "nix-ssh-cache.nix"), OURS);
    const imports = row.user
      .filter((l) => l.startsWith("  imports = "))
      .map((l) => l.replace(/^ {2}imports = \[ (.*) \];$/, "$1"));
    const body = row.user.filter((l) => !l.startsWith("  imports = "));
    const configuration = join(dir, "configuration.nix");
    writeFileSync(
      configuration,
      [
        "{ config, lib, pkgs, ... }:",
        "{",
        `  imports = [ ${[...imports, "./nix-ssh-cache.nix"].join(" ")} ];`,
        ...body,
        "}",
        "",
      ].join("\n"),
    );
    const expr =
      "{ file, configuration }: let r = import file { configuration = /. + configuration; " +
      `result = "${row.result ?? "nixos"}"; }; in ${row.expr ?? "null"}`;
    const argv = ["--readonly-mode", "--eval", "--strict", "--json", "-E", expr];
    argv.push("--argstr", "file", nixosEvalFile(), "--argstr", "configuration", configuration);
    try {
      const out = execFileSync("nix-instantiate", argv, {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
      return { value: JSON.parse(out) as unknown };
    } catch (e) {
      return { stderr: String((e as { stderr?: string }).stderr ?? e) };
    }
  });
}

describe("nixos-eval.nix follows the nixpkgs module system", { skip: NO_NIX }, () => {
  for (const row of ROWS) {
    it(row.name, () => {
      const r = evaluate(row);
      if (row.error) {
        assert.equal(r.value, undefined, `evaluated to ${JSON.stringify(r.value)}`);
        assert.match(r.stderr ?? "", row.error);
      } else {
        assert.equal(r.stderr, undefined, r.stderr);
        assert.deepEqual(r.value, row.expected);
      }
    });
  }
});
