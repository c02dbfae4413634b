# shellcheck shell=bash
# Flavour "today": the harness's defaults (sshd and nix-daemon write pid files in /run). Sourced by
# host-init.sh inside the host, after users and Nix dirs are set up, before services start.
:
