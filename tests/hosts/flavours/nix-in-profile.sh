# shellcheck shell=bash
# Flavour "nix-in-profile": Nix as the official multi-user installer leaves it: the tools only in
# /nix/var/nix/profiles/default/bin, PATH set only in /etc/profile.d/nix.sh (which neither a
# non-interactive SSH session nor sudo's secure_path reads), nothing in /usr/bin. The host's own
# binary is bind-mounted into the profile, then /usr/bin/nix (the target of every /usr/bin/nix-*
# link) is hidden behind /dev/null inside this host only.
profile_bin=/nix/var/nix/profiles/default/bin
install -d -m 0755 "$profile_bin"
install -m 0755 /dev/null "$profile_bin/nix"
mount --bind /usr/bin/nix "$profile_bin/nix"
for tool in nix-build nix-channel nix-collect-garbage nix-copy-closure nix-daemon nix-env nix-hash \
  nix-instantiate nix-prefetch-url nix-shell nix-store; do
  ln -s nix "$profile_bin/$tool"
done
# Nix's build hook (/usr/libexec/nix/build-remote -> /usr/bin/nix) points into the profile too
mount -t tmpfs -o mode=0755,size=1m nsc-libexec-nix /usr/libexec/nix
ln -s "$profile_bin/nix" /usr/libexec/nix/build-remote
mount --bind /dev/null /usr/bin/nix
cat >/etc/profile.d/nix.sh <<'PROFILE'
# Nix (multi-user installer layout)
export PATH="/nix/var/nix/profiles/default/bin:$PATH"
PROFILE
# shellcheck disable=SC2034 # read by host-init.sh
nix_daemon_cmd=$profile_bin/nix-daemon
