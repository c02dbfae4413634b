# shellcheck shell=bash
# Flavour "systemd-debian": systemd is the host's PID 1 (host-init.sh execs it, as systemd-nspawn
# would start a container) and runs Debian's own units as Debian 12 ships and enables them:
# ssh.service (openssh-server: `sshd -D`, Type=notify, ExecReload `sshd -t` then
# `kill -HUP $MAINPID`) and nix-daemon.socket + nix-daemon.service (nix-setup-systemd).
# shellcheck disable=SC2034 # read by host-init.sh
host_init=systemd
# shellcheck disable=SC2034
systemd_enable="ssh.service nix-daemon.socket nix-daemon.service"
# shellcheck disable=SC2034
sshd_units="ssh.service"
# shellcheck disable=SC2034
nix_daemon_units="nix-daemon.socket nix-daemon.service"
