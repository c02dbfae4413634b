# shellcheck shell=bash
# sign-store.sh (staging): sign every valid path in the store with the current signing key, so
# paths built before a key rotation stay substitutable once the old key is retired.
# Inputs: KEY_FILE (absolute path of the secret key), PUBLIC_KEY (NAME:BASE64, for the report).
# Output: {"keyName":"NAME","paths":N}
# `nix store sign` adds a signature; it never removes the old ones. The key is never printed.

nsc_require_env KEY_FILE PUBLIC_KEY
case "$KEY_FILE" in /*) ;; *) nsc_die "internal error: KEY_FILE must be absolute, got '${KEY_FILE}'" ;; esac
[ -r "$KEY_FILE" ] || nsc_die "signing key ${KEY_FILE} is missing; run pulumi up again (the signing-key step creates it)"
export HOME=${HOME:-/root}
nix_cmd=(nix --extra-experimental-features nix-command)

nsc_lock sign-store
count=$("${nix_cmd[@]}" path-info --all 2>/dev/null | wc -l)
if ! timeout 3600 "${nix_cmd[@]}" store sign --all --key-file "$KEY_FILE" >&2; then
  nsc_die "nix store sign --all --key-file ${KEY_FILE} failed (see the messages above)"
fi
nsc_log "signed ${count} store paths with ${PUBLIC_KEY%%:*}"
printf '{"keyName":%s,"paths":%s}\n' "$(nsc_json_string "${PUBLIC_KEY%%:*}")" "$count"
