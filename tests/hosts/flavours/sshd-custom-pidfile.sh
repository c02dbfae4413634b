# shellcheck shell=bash
# Flavour "sshd-custom-pidfile": sshd writes its pid to a file of its own choosing
# (/var/run/sshd-custom.pid), so /run/sshd.pid (the init script's idea) names nothing.
sed -i 's|^PidFile .*|PidFile /var/run/sshd-custom.pid|' /etc/ssh/sshd_config.d/00-test-host.conf
