# shellcheck shell=bash
# Flavour "nixconf-symlink-ro": /etc/nix/nix.conf is a symlink (mode 0777, as every symlink) to a
# file on a read-only mount, managed by another tool (/var/lib/managed-config/nix.conf).
install -d -m 0755 /var/lib/managed-config
install -m 0644 /etc/nix/nix.conf /var/lib/managed-config/nix.conf
mount --bind /var/lib/managed-config /var/lib/managed-config
mount -o remount,bind,ro /var/lib/managed-config
ln -sfn /var/lib/managed-config/nix.conf /etc/nix/nix.conf
