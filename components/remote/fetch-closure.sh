# shellcheck shell=bash
# fetch-closure.sh (production): make store paths valid on this host from the cache, the whole
# missing closure in one SSH session (nix-ssh-cache-fetch, installed by the client's `fetcher`).
# Inputs: ACTION=apply|read, FETCH_PATHS (space-separated store paths; a .drv stands for its
#   outputs), FETCHER (absolute path of nix-ssh-cache-fetch), FALLBACK (1: Nix's own
#   substitution when the one-session fetch fails, the default; 0: fail instead).
# Output (apply): {"valid":true,"closure":N,"fetched":M,"bytes":B,"seconds":S,"fallback":bool,
#   "reason":"why the one-session fetch failed, when it did"}
# Output (read): {"valid":true|false}: false once a path was garbage-collected (drift: the next
#   `up` fetches it again).

nsc_require_env ACTION FETCH_PATHS FETCHER
export HOME=~root
read -r -a paths <<<"$FETCH_PATHS"
[ "${#paths[@]}" -gt 0 ] || nsc_die "no store path to fetch (paths is empty)"
for p in "${paths[@]}"; do
  case "$p" in
  /nix/store/?*) ;;
  *) nsc_die "'${p}' is not a /nix/store path (paths)" ;;
  esac
done

# The paths that must be valid: a .drv stands for its outputs (the .drv itself must be here).
outputs() {
  local p
  for p in "${paths[@]}"; do
    case "$p" in
    *.drv) nix-store --query --outputs -- "$p" ;;
    *) printf '%s\n' "$p" ;;
    esac
  done
}

case "$ACTION" in
read)
  mapfile -t wanted < <(outputs 2>/dev/null || true)
  invalid=$(nix-store --check-validity --print-invalid -- "${wanted[@]}" 2>/dev/null || echo unknown)
  if [ "${#wanted[@]}" -gt 0 ] && [ -z "$invalid" ]; then
    echo '{"valid":true}'
  else
    echo '{"valid":false}'
  fi
  ;;
apply)
  [ -x "$FETCHER" ] ||
    nsc_die "the closure fetcher ${FETCHER} is missing on this host; the CacheClient installs it (fetcher: true): run pulumi up"
  flags=(--json)
  [ "${FALLBACK:-1}" = 1 ] || flags+=(--no-fallback)
  nsc_lock fetch-closure
  report=$("$FETCHER" "${flags[@]}" "${paths[@]}") ||
    nsc_die "nix-ssh-cache-fetch could not make ${FETCH_PATHS} valid on this host (see its messages above)"
  report=$(printf '%s\n' "$report" | tail -n 1)
  case "$report" in
  '{'*'}') printf '{"valid":true,%s\n' "${report#\{}" ;;
  *) nsc_die "internal error: nix-ssh-cache-fetch printed no JSON report: ${report}" ;;
  esac
  ;;
*) nsc_die "internal error: ACTION must be apply or read, got '${ACTION}'" ;;
esac
