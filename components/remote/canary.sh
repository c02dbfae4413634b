# shellcheck shell=bash
# canary.sh (staging): build a tiny path (no nixpkgs needed) and check it is signed.
# Inputs: NONCE ([A-Za-z0-9._-]+).
# Output: {"path":"/nix/store/...-nix-ssh-cache-canary-NONCE","signatures":["stage.test:..."]}

nsc_require_env NONCE
case "$NONCE" in *[!A-Za-z0-9._-]*) nsc_die "internal error: NONCE may only contain letters, digits, '.', '_' and '-'" ;; esac
gcroots=/nix/var/nix/gcroots/nix-ssh-cache
name=nix-ssh-cache-canary-$NONCE
expr="builtins.derivation { name = \"$name\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo $NONCE > \$out\" ]; }"
export HOME=${HOME:-/root}

# Build through the daemon when one runs: that is the process whose nix.conf must carry
# secret-key-files (builds by other users and by nixos-rebuild go through it).
store_args=()
if nsc_nix_daemon_running; then store_args=(--store daemon); fi

build() {
  timeout 300 nix-build "${store_args[@]}" --no-out-link -E "$expr" 2>&1 >"$out_file" | sed 's/^/nix-build: /' >&2 ||
    nsc_die "building the canary path failed (see nix-build's messages above); is Nix working on this host?"
  tail -n 1 "$out_file"
}

signatures() {
  nsc_signatures "$1" "${store_args[@]}"
}

nsc_lock canary
out_file=$(mktemp)
trap 'rm -f "$out_file"' EXIT
path=$(build)
case "$path" in /nix/store/*-"$name") ;; *) nsc_die "nix-build printed '${path}', not a store path for ${name}" ;; esac
mapfile -t sigs < <(signatures "$path")
if [ "${#sigs[@]}" = 0 ]; then
  # built earlier, before signing was set up: delete and build again once
  nsc_log "canary ${path} is unsigned; deleting and rebuilding it"
  rm -f "$gcroots/canary-$NONCE"
  nix-store "${store_args[@]}" --delete "$path" >/dev/null 2>&1 || true
  path=$(build)
  mapfile -t sigs < <(signatures "$path")
fi
[ "${#sigs[@]}" -gt 0 ] ||
  nsc_die "the path was built but not signed: is secret-key-files set and nix-daemon restarted? (checked ${path} with nix path-info --sigs)"
mkdir -p "$gcroots"
for old in "$gcroots"/canary-*; do
  [ -L "$old" ] && [ "$old" != "$gcroots/canary-$NONCE" ] && rm -f "$old"
done
ln -sfn "$path" "$gcroots/canary-$NONCE"
printf '{"path":%s,"signatures":%s}\n' "$(nsc_json_string "$path")" "$(nsc_json_array "${sigs[@]}")"
