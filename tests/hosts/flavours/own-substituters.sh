# shellcheck shell=bash
# Flavour "own-substituters": a production host with substituters and trusted keys of its own in
# nix.conf (a local file:// binary cache signed by its own key), which must be kept and used.
install -d -m 0755 /var/lib/own-cache /var/lib/own-cache-key
printf 'StoreDir: /nix/store\n' >/var/lib/own-cache/nix-cache-info
nix-store --generate-binary-cache-key own-cache-1 /var/lib/own-cache-key/secret /var/lib/own-cache-key/public
chmod 0600 /var/lib/own-cache-key/secret
printf '\n# this host'"'"'s own cache\nsubstituters = file:///var/lib/own-cache\ntrusted-public-keys = %s\n' \
  "$(cat /var/lib/own-cache-key/public)" >>/etc/nix/nix.conf
