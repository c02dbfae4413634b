# shellcheck shell=bash
# sign-store.sh (staging): sign every valid path in the store with the current signing key:
# once when a signing key is first configured (`secret-key-files` signs only what the daemon
# builds afterwards, and `nix-store --serve` sends only the signatures a path already has), and
# after a key rotation, so paths built before it stay substitutable once the old key is retired.
# Inputs: KEY_FILE (absolute path of the secret key), PUBLIC_KEY (NAME:BASE64, for the report).
# Output: {"keyName":"NAME","paths":N,"signed":M}: N valid paths in the store, M of them newly
#   signed (the others already carried this key's signature).
# `nix store sign` adds a signature; it never removes the old ones. The key is never printed.

nsc_require_env KEY_FILE PUBLIC_KEY
case "$KEY_FILE" in /*) ;; *) nsc_die "internal error: KEY_FILE must be absolute, got '${KEY_FILE}'" ;; esac
[ -r "$KEY_FILE" ] || nsc_die "signing key ${KEY_FILE} is missing; run pulumi up again (the signing-key step creates it)"
export HOME=${HOME:-/root}
nix_cmd=(nix --extra-experimental-features nix-command)

nsc_lock sign-store
count=$("${nix_cmd[@]}" path-info --all 2>/dev/null | wc -l)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! timeout 3600 "${nix_cmd[@]}" store sign --all --key-file "$KEY_FILE" >"$log" 2>&1; then
  cat "$log" >&2
  nsc_die "nix store sign --all --key-file ${KEY_FILE} failed (see the messages above)"
fi
# Nix prints `added N signatures`
signed=$(sed -n 's/^added \([0-9][0-9]*\) signatures*$/\1/p' "$log" | tail -n 1)
[ -n "$signed" ] || signed=$count
nsc_log "signed ${signed} of ${count} store paths with ${PUBLIC_KEY%%:*}"
printf '{"keyName":%s,"paths":%s,"signed":%s}\n' "$(nsc_json_string "${PUBLIC_KEY%%:*}")" "$count" "$signed"
