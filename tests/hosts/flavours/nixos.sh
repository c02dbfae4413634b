# shellcheck shell=bash
# Flavour "nixos": makes a test host look like a NixOS machine to nix-ssh-cache. Sourced by
# host-init.sh inside the host (its own /etc, /run, /nix mounted; before sshd and nix-daemon
# start), with `log` and the NSC_* variables of host-init.sh.
#
# What it sets up:
#   /etc/NIXOS                         the marker nix-ssh-cache's probe looks for
#   /etc/nixos/configuration.nix       a small user configuration (does NOT import the module:
#                                      the user adds `./nix-ssh-cache.nix`, or addImport does)
#   /etc/nixos/hardware-configuration.nix
#   /run/current-system/sw/bin/nixos-rebuild
#                                      a stand-in that EVALUATES configuration.nix with its
#                                      imports (nixos-eval.nix: the nixpkgs module system's
#                                      order, priorities, types and error texts, written from its
#                                      sources) and applies the values as NixOS would, then
#                                      restarts sshd and nix-daemon (see nixos-rebuild here)
#   /nix/var/nix/profiles/per-user/root/channels/nixos/nixos/default.nix
#                                      root's `nixos` channel as <nixpkgs/nixos>: the same
#                                      evaluation, returning { config; options; }
#   /run/current-system/sw/share/nixos-stand-in/
#                                      nixos-eval.nix, and base-nix.conf: the host's own nix.conf
#                                      settings (no sandbox, no substituters: no network here),
#                                      which the generated nix.conf starts with
# The initial state is what the stand-in's first `switch` would produce from configuration.nix.

nixos_flavour_dir=$NSC_HOST_DIR/flavours
nixos_share=/run/current-system/sw/share/nixos-stand-in

touch /etc/NIXOS
install -d -m 0755 /etc/nixos /run/current-system/sw/bin "$nixos_share"
install -m 0755 "$nixos_flavour_dir/nixos-rebuild" /run/current-system/sw/bin/nixos-rebuild
install -m 0644 "$nixos_flavour_dir/nixos-eval.nix" "$nixos_share/nixos-eval.nix"
# root's `nixos` channel, as on NixOS: <nixpkgs/nixos> evaluates configuration.nix with the
# stand-in (`import <nixpkgs/nixos> { configuration = …; }` gives config and options)
nixos_channel=/nix/var/nix/profiles/per-user/root/channels/nixos
install -d -m 0755 "$nixos_channel/nixos"
cat >"$nixos_channel/nixos/default.nix" <<NIX
# Test host stand-in for <nixpkgs/nixos> (tests/hosts/flavours/nixos.sh).
{ configuration ? <nixos-config> }:
import $nixos_share/nixos-eval.nix { inherit configuration; result = "nixos"; }
NIX
grep -v '^#' /etc/nix/nix.conf | sed '/^[[:space:]]*$/d' >"$nixos_share/base-nix.conf"

cat >/etc/nixos/hardware-configuration.nix <<'NIX'
# Test host (tests/hosts/flavours/nixos.sh): no hardware to speak of.
{ config, lib, pkgs, ... }:
{
  boot.loader.grub.device = "nodev";
}
NIX

cat >/etc/nixos/configuration.nix <<NIX
# Test host ${NSC_FQDN} (tests/hosts/flavours/nixos.sh): a user's configuration.nix.
{ config, lib, pkgs, ... }:
{
  imports = [
    ./hardware-configuration.nix
  ];

  networking.hostName = "${NSC_NAME}";
  services.openssh.enable = true;
  # the user's own client options: global, for every host
  programs.ssh.extraConfig = ''
    ServerAliveInterval 30
  '';
  system.stateVersion = "23.11";
}
NIX

# the system as the first rebuild made it (services are started by host-init.sh right after)
NSC_STAND_IN_NO_RESTART=1 /run/current-system/sw/bin/nixos-rebuild switch
unset nixos_flavour_dir nixos_share nixos_channel
