# shellcheck shell=bash
# verify.sh (production): prove that this host substitutes a path signed on staging, through
# the configured SSH substituter.
# Inputs: CANARY_PATH (/nix/store/...), SUBSTITUTER (e.g. ssh://nix-ssh@stage.test), STAGING (name
#   for messages), VERIFY_TIMEOUT (seconds, default 120), RELIES_ON (unused here: a digest of the
#   configuration the verification relies on, so that a change of it runs the step again).
# Output: {"verified":true,"path":"...","substituter":"<configured URL>","signatures":[...],
#          "alreadyPresent":bool}

nsc_require_env CANARY_PATH SUBSTITUTER
# Nix's GC treats store paths in a process's environment as runtime roots: keep CANARY_PATH
# out of the environment of `nix-store --delete`, or the path can never be deleted.
export -n CANARY_PATH
staging=${STAGING:-the staging host}
limit=${VERIFY_TIMEOUT:-120}
case "$CANARY_PATH" in
/nix/store/*) ;;
*) nsc_die "internal error: CANARY_PATH must be a /nix/store path, got '${CANARY_PATH}'" ;;
esac
root_home=$(getent passwd root | cut -d: -f6)
export HOME=${root_home:-/root}
nix_cmd=(nix --extra-experimental-features nix-command)

# the configured substituter URL that starts with SUBSTITUTER (it may carry ?parameters)
configured=""
for s in $("${nix_cmd[@]}" show-config 2>/dev/null | sed -n 's/^substituters = //p'); do
  case "$s" in "$SUBSTITUTER" | "$SUBSTITUTER?"*)
    configured=$s
    break
    ;;
  esac
done
[ -n "$configured" ] ||
  nsc_die "${SUBSTITUTER} is not among this host's substituters (nix show-config); is the nix.conf fragment included (or the NixOS module imported and rebuilt)?"

# explain FILE: the cause of a failed substitution, from Nix's/ssh's messages in FILE
explain() {
  local f=$1
  if grep -q 'Host key verification failed' "$f"; then
    echo "host key: ${staging}'s SSH host key differs from the pinned one (was it regenerated? update hostKey for ${staging})"
  elif grep -q 'Permission denied (publickey' "$f"; then
    echo "authentication: this host's root SSH key is not authorised for the serve user on ${staging} (check the authorized keys file and sshd's Match block on ${staging})"
  elif grep -Eq 'is not signed by any of the keys|lacks a signature' "$f"; then
    echo "signature: the path on ${staging} is not signed by a key in this host's trusted-public-keys (did the signing key change? is cachePublicKey in trusted-public-keys?)"
  elif grep -Eq "could not set permissions on '/nix/var/nix/profiles/per-user'|cannot connect to daemon|cannot connect to socket at '[^']*daemon-socket" "$f"; then
    echo "staging nix-daemon: nix-daemon is not running on ${staging}; nix-store --serve needs it (start it there)"
  elif grep -q 'public key is not valid' "$f"; then
    echo "configuration: an entry of this host's trusted-public-keys is not a valid NAME:BASE64 key (check cachePublicKey and any other trusted keys)"
  elif grep -q 'Could not resolve hostname' "$f"; then
    echo "name resolution: this host cannot resolve ${staging}'s name (DNS or /etc/hosts)"
  elif grep -Eq 'Connection refused|Connection timed out|No route to host|Network is unreachable' "$f"; then
    echo "network: cannot reach ${staging}'s sshd from this host ($(grep -Eo 'Connection refused|Connection timed out|No route to host|Network is unreachable' "$f" | head -n 1))"
  elif grep -Eq "don't know how to build|is required, but there is no substituter" "$f"; then
    echo "not substituted: ${SUBSTITUTER} did not provide the path (is it configured in substituters, and does ${staging} still have it?)"
  else
    echo "unknown cause: $(tail -n 3 "$f" | tr '\n' ' ')"
  fi
}

nsc_lock verify
log=$(mktemp)
trap 'rm -f "$log"' EXIT

already=false
if nix-store --check-validity "$CANARY_PATH" 2>/dev/null; then
  if nix-store --delete "$CANARY_PATH" >"$log" 2>&1; then
    nsc_log "deleted the local copy of ${CANARY_PATH} to substitute it again"
  else
    already=true
    nsc_log "the canary path is in use on this host and cannot be deleted ($(tail -n 1 "$log")); checking the substituter by a query instead"
  fi
fi

if [ "$already" = false ]; then
  rc=0
  timeout "$limit" nix-store --realise "$CANARY_PATH" </dev/null >"$log" 2>&1 || rc=$?
  sed 's/^/nix-store: /' "$log" >&2
  if [ "$rc" = 124 ]; then
    nsc_die "substituting the canary from ${staging} timed out after ${limit}s (an SSH prompt or a hung connection to ${configured}?)"
  elif [ "$rc" != 0 ]; then
    nsc_die "substituting the canary from ${staging} failed: $(explain "$log")"
  fi
else
  rc=0
  timeout "$limit" "${nix_cmd[@]}" path-info --store "$configured" "$CANARY_PATH" </dev/null >"$log" 2>&1 || rc=$?
  sed 's/^/nix path-info: /' "$log" >&2
  [ "$rc" = 0 ] || nsc_die "querying ${staging} through ${configured} failed: $(explain "$log")"
fi

mapfile -t sigs < <(nsc_signatures "$CANARY_PATH")
printf '{"verified":true,"path":%s,"substituter":%s,"signatures":%s,"alreadyPresent":%s}\n' \
  "$(nsc_json_string "$CANARY_PATH")" "$(nsc_json_string "$configured")" "$(nsc_json_array "${sigs[@]}")" "$already"
