# shellcheck shell=bash
# Flavour "no-pidfiles": services without pid files, as on WSL or in a container: nix-daemon
# started by hand (no pid file, no service manager) and an sshd whose configuration says
# `PidFile none`. Only the processes themselves (what they listen on) say where they are.
sed -i 's|^PidFile .*|PidFile none|' /etc/ssh/sshd_config.d/00-test-host.conf
# shellcheck disable=SC2034 # read by host-init.sh
nix_daemon_pidfile=""
