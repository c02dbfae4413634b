# shellcheck shell=bash
# Flavour "systemd-ubuntu": systemd is the host's PID 1 and sshd is socket-activated as on Ubuntu
# 22.10 and later: ssh.socket (Accept=no) is enabled, ssh.service is not; the first connection
# starts ssh.service, whose sshd takes the listening socket from systemd (Debian/Ubuntu's
# socket-activation patch, sd_listen_fds) and stays. Ubuntu's sshd-socket-generator turns
# sshd_config's ListenAddress into an ssh.socket drop-in; this host has the same drop-in in /etc.
# nix-daemon as Ubuntu's nix-setup-systemd ships it (nix-daemon.socket + nix-daemon.service).
install -d -m 0755 /etc/systemd/system/ssh.socket.d
cat >/etc/systemd/system/ssh.socket.d/addresses.conf <<UNIT
# as Ubuntu's sshd-socket-generator writes it from sshd_config's ListenAddress
[Socket]
ListenStream=
ListenStream=$NSC_ADDRESS:22
FreeBind=yes
UNIT
# shellcheck disable=SC2034 # read by host-init.sh
host_init=systemd
# shellcheck disable=SC2034
systemd_enable="ssh.socket nix-daemon.socket nix-daemon.service"
# shellcheck disable=SC2034
sshd_units="ssh.socket ssh.service"
# shellcheck disable=SC2034
nix_daemon_units="nix-daemon.socket nix-daemon.service"
