# shellcheck shell=bash
# Flavour "signing-key-conflict": a staging whose nix.conf already signs with another key (the
# tutorial's `secret-key-files` line left in place, naming a key nix-ssh-cache does not manage).
install -d -m 0755 /etc/nix/old-cache
nix-store --generate-binary-cache-key old-cache-1 /etc/nix/old-cache/secret /etc/nix/old-cache/public
chmod 0600 /etc/nix/old-cache/secret
printf '\n# left over from setting up a cache by hand\nsecret-key-files = /etc/nix/old-cache/secret\n' >>/etc/nix/nix.conf
