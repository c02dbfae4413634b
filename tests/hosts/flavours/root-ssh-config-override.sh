# shellcheck shell=bash
# Flavour "root-ssh-config-override": root's own ~/.ssh/config turns host-key checking off for
# every host (a common shortcut), which OpenSSH reads before /etc/ssh/ssh_config.d.
printf 'Host *\n  StrictHostKeyChecking no\n' >/root/.ssh/config
chmod 0600 /root/.ssh/config
