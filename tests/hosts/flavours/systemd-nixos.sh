# shellcheck shell=bash
# Flavour "systemd-nixos": systemd is the host's PID 1 with NixOS's unit layout (read from
# nixpkgs nixos/modules/services/networking/ssh/sshd.nix and Nix's own nix-daemon units):
# sshd.service runs `sshd -D -f /etc/ssh/sshd_config` (Type=simple, KillMode=process,
# Restart=always, no ExecReload: `systemctl reload sshd` is refused), and nix-daemon is
# socket-activated: only nix-daemon.socket is enabled; the first client starts nix-daemon.service.
# Not a NixOS stand-in (no /etc/NIXOS): the plain-Linux steps run, against NixOS-style units.
# (the machine's /etc may hold sshd.service as an alias symlink into /lib: replace the link in this
# host's /etc, never write through it)
rm -f /etc/systemd/system/sshd.service
cat >/etc/systemd/system/sshd.service <<'UNIT'
# NixOS-style (nixpkgs sshd.nix): services.openssh.enable = true
[Unit]
Description=SSH Daemon
After=network.target

[Service]
ExecStart=/usr/sbin/sshd -D -f /etc/ssh/sshd_config
KillMode=process
Restart=always
Type=simple

[Install]
WantedBy=multi-user.target
UNIT
# Debian's ssh.service (Alias=sshd.service) must not shadow it
ln -sfn /dev/null /etc/systemd/system/ssh.service
# shellcheck disable=SC2034 # read by host-init.sh
host_init=systemd
# shellcheck disable=SC2034
systemd_enable="sshd.service nix-daemon.socket"
# shellcheck disable=SC2034
sshd_units="sshd.service"
# shellcheck disable=SC2034
nix_daemon_units="nix-daemon.socket nix-daemon.service"
