# shellcheck shell=bash
# Flavour "second-sshd": a second sshd beside the one that serves port 22, as on servers with an
# SFTP-only (or rescue) instance: its own configuration (/etc/ssh/sshd_config_sftp, which does
# not include sshd_config.d), port 2222, PidFile /run/sshd-sftp.pid and log, in the same /proc.
# Started here, before the main sshd. nix-ssh-cache must reload only the sshd that reads
# /etc/ssh/sshd_config and leave this one alone (same PID, same listening socket, still serving).
cat >/etc/ssh/sshd_config_sftp <<CONF
# SFTP-only sshd (tests/hosts/flavours/second-sshd.sh)
ListenAddress $NSC_ADDRESS:2222
PidFile /run/sshd-sftp.pid
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel VERBOSE
CONF
/usr/sbin/sshd -t -f /etc/ssh/sshd_config_sftp
/usr/sbin/sshd -f /etc/ssh/sshd_config_sftp -E /var/log/sshd-sftp.log
