# shellcheck shell=bash
# pin.sh (staging): keep releases' store paths alive as GC roots, the last KEEP releases of a set.
# Inputs: ACTION=apply|read|remove, PIN_SET ([A-Za-z0-9._-]+, the set's name), PIN_PATHS (apply:
#   space-separated store paths, the release to pin), KEEP (apply: releases kept, 1..1000).
# Layout: /nix/var/nix/gcroots/nix-ssh-cache/pins/<set>/ holds `releases` (the ledger: one
#   release a line, oldest first: `<seq> <id> <path>...`; `<id>` is the first 16 hex digits of
#   the SHA-256 of the sorted paths) and one symlink `<seq>-<k>` per pinned path (a GC root).
# Output (apply/read): {"set":"…","current":"<id of the newest release>"|null,"releases":[{"id":
#   "…","seq":N,"paths":["…"]}],"roots":N,"intact":bool,"unpinned":["<id>"],"lost":["<path>"]}
#   intact: every ledger path has its root (read: false after a root was removed by hand).
# Output (remove): {"set":"…","removed":N}

nsc_require_env ACTION PIN_SET
case "$PIN_SET" in
*[!A-Za-z0-9._-]* | .*) nsc_die "internal error: PIN_SET may only contain letters, digits, '.', '_' and '-' (got '${PIN_SET}')" ;;
esac
export HOME=~root
NSC_PIN_BASE=/nix/var/nix/gcroots/nix-ssh-cache
NSC_PIN_DIR=$NSC_PIN_BASE/pins/$PIN_SET
NSC_PIN_LEDGER=$NSC_PIN_DIR/releases

# A store path as Nix 2.8 accepts it: /nix/store/<32 nix-base32 chars>-<name>, the name of
# [A-Za-z0-9+._?=-], not starting with '.', at most 211 characters.
nsc_pin_valid_path() {
  local p=$1 name
  [[ $p =~ ^/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-([A-Za-z0-9+._?=-]+)$ ]] || return 1
  name=${BASH_REMATCH[1]}
  [[ $name != .* ]] && [ "${#name}" -le 211 ]
}

# nsc_pin_safe_dir DIR: DIR is a real directory (not a symlink), owned by root, writable by root
# only; created 0755 when missing (its parent checked first).
nsc_pin_safe_dir() {
  local d=$1 owner mode
  if [ ! -e "$d" ] && [ ! -L "$d" ]; then
    [ "${2:-create}" = create ] || return 1
    mkdir -m 0755 -- "$d" || nsc_die "could not create ${d}"
  fi
  if [ -L "$d" ] || [ ! -d "$d" ]; then
    nsc_die "${d} is not a directory (a symlink or a file is there); nix-ssh-cache keeps its GC roots only in a directory of its own: remove it (root) and run pulumi up again"
  fi
  owner=$(stat -c '%u' -- "$d")
  mode=$(stat -c '%a' -- "$d")
  if [ "$owner" != 0 ] || (((8#$mode) & 8#022)); then
    nsc_die "${d} is owned by uid ${owner} with mode ${mode}; GC roots need a directory only root can write to: chown root:root ${d} && chmod go-w ${d}"
  fi
}

# The directories, checked from the top (a symlink or foreign directory is refused, never followed).
nsc_pin_dirs() {
  local d
  for d in /nix/var/nix/gcroots "$NSC_PIN_BASE" "$NSC_PIN_BASE/pins" "$NSC_PIN_DIR"; do
    nsc_pin_safe_dir "$d" "${1:-create}" || return 1
  done
}

# The ledger's releases into arrays: seqs[i], ids[i], rpaths[i] (space-separated paths). Lines
# that are not well-formed are dropped with a warning (the file is root's, but checked anyway).
seqs=() ids=() rpaths=()
nsc_pin_read_ledger() {
  local seq id rest p ok
  local -a ps=()
  [ -f "$NSC_PIN_LEDGER" ] && [ ! -L "$NSC_PIN_LEDGER" ] || return 0
  while read -r seq id rest; do
    ok=1
    [[ $seq =~ ^[0-9]{1,9}$ ]] && [[ $id =~ ^[0-9a-f]{16}$ ]] && [ -n "$rest" ] || ok=0
    read -r -a ps <<<"$rest"
    for p in "${ps[@]}"; do nsc_pin_valid_path "$p" || ok=0; done
    if [ "$ok" = 1 ]; then
      seqs+=("$((10#$seq))") ids+=("$id") rpaths+=("$rest")
    else
      nsc_log "nix-ssh-cache: ignoring a malformed line of ${NSC_PIN_LEDGER}"
    fi
  done <"$NSC_PIN_LEDGER"
}

# The id of a release: the first 16 hex digits of the SHA-256 of its sorted paths, one a line.
nsc_pin_id() {
  printf '%s\n' "$@" | LC_ALL=C sort -u | sha256sum | cut -c1-16
}

# Whether every path of release i has its root (`<seq>-<k>`, a symlink to the path).
nsc_pin_release_intact() {
  local i=$1 k=0 p link
  local -a ps=()
  read -r -a ps <<<"${rpaths[$i]}"
  for p in "${ps[@]}"; do
    link=$NSC_PIN_DIR/${seqs[$i]}-$k
    [ -L "$link" ] && [ "$(readlink -- "$link")" = "$p" ] || return 1
    k=$((k + 1))
  done
}

# JSON report of the ledger in the arrays.
unpinned=() lost=()
nsc_pin_report() {
  local i first=1 intact=true roots=0 current=
  local -a ps=()
  printf '{"set":%s,"releases":[' "$(nsc_json_string "$PIN_SET")"
  for i in "${!ids[@]}"; do
    [ "$first" = 1 ] || printf ','
    first=0
    read -r -a ps <<<"${rpaths[$i]}"
    printf '{"id":"%s","seq":%s,"paths":%s}' "${ids[$i]}" "${seqs[$i]}" "$(nsc_json_array "${ps[@]}")"
    nsc_pin_release_intact "$i" || intact=false
    current=${ids[$i]}
  done
  if [ -d "$NSC_PIN_DIR" ] && [ ! -L "$NSC_PIN_DIR" ]; then
    roots=$(find "$NSC_PIN_DIR" -mindepth 1 -maxdepth 1 -type l -name '*-*' | wc -l)
  fi
  printf '],"current":%s,"roots":%s,"intact":%s,"unpinned":%s,"lost":%s}\n' \
    "$(nsc_json_string_or_null "$current")" "$roots" "$intact" \
    "$(nsc_json_array "${unpinned[@]}")" "$(nsc_json_array "${lost[@]}")"
}

nsc_pin_apply() {
  nsc_require_env PIN_PATHS KEEP
  local keep=${KEEP:-} p i k invalid id next=1 link tmp
  if ! [[ $keep =~ ^[0-9]{1,4}$ ]] || ((10#$keep < 1 || 10#$keep > 1000)); then
    nsc_die "KEEP must be a whole number from 1 to 1000 (keepReleases), got '${keep}'"
  fi
  keep=$((10#$keep))
  local -a new=()
  read -r -a new <<<"$PIN_PATHS"
  [ "${#new[@]}" -gt 0 ] || nsc_die "no store path to pin (pins is empty)"
  for p in "${new[@]}"; do
    nsc_pin_valid_path "$p" ||
      nsc_die "'${p}' is not a store path (/nix/store/<32 base-32 characters>-<name>) (pins)"
  done
  mapfile -t new < <(printf '%s\n' "${new[@]}" | LC_ALL=C sort -u)
  invalid=$(nix-store --check-validity --print-invalid "${new[@]}" 2>&1) ||
    nsc_die "nix-store --check-validity failed: ${invalid}"
  [ -z "$invalid" ] ||
    nsc_die "not in staging's store, so there is nothing to pin: $(printf '%s' "$invalid" | tr '\n' ' '); build the release on staging first (pins)"
  id=$(nsc_pin_id "${new[@]}")

  nsc_lock pin
  nsc_pin_dirs
  nsc_pin_read_ledger
  # The release becomes the newest: kept as it is when it already is (a repair keeps its roots'
  # names), else pinned again under a new number (e.g. a rollback to an older release).
  local -a s2=() i2=() r2=()
  local last=$((${#ids[@]} - 1))
  for i in "${!ids[@]}"; do
    [ "${seqs[$i]}" -lt "$next" ] || next=$((seqs[i] + 1))
    [ "${ids[$i]}" = "$id" ] && continue
    s2+=("${seqs[$i]}") i2+=("${ids[$i]}") r2+=("${rpaths[$i]}")
  done
  if [ "$last" -ge 0 ] && [ "${ids[$last]}" = "$id" ]; then next=${seqs[$last]}; fi
  s2+=("$next") i2+=("$id") r2+=("${new[*]}")
  # Keep the last `keep`; the older ones are unpinned.
  seqs=() ids=() rpaths=()
  for i in "${!i2[@]}"; do
    if [ "$i" -lt "$((${#i2[@]} - keep))" ]; then
      unpinned+=("${i2[$i]}")
    else
      seqs+=("${s2[$i]}") ids+=("${i2[$i]}") rpaths+=("${r2[$i]}")
    fi
  done

  # Roots of the kept releases (again where one was removed by hand). A path of an older release
  # that is no longer valid (collected while its root was missing) is dropped, and reported.
  local -A wanted=()
  local -a ps=()
  for i in "${!ids[@]}"; do
    k=0
    local kept=""
    read -r -a ps <<<"${rpaths[$i]}"
    for p in "${ps[@]}"; do
      link=$NSC_PIN_DIR/${seqs[$i]}-$k
      if ! [ -L "$link" ] || [ "$(readlink -- "$link")" != "$p" ]; then
        # nix-store --add-root registers a temporary root first (a concurrent GC cannot take
        # the path meanwhile) and replaces the link atomically; no substitution, no build.
        if ! nix-store --option substitute false --add-root "$link" --realise "$p" >/dev/null 2>&1; then
          if [ "${ids[$i]}" = "$id" ]; then
            nsc_die "could not add the GC root ${link} for ${p}"
          fi
          nsc_log "nix-ssh-cache: ${p} (release ${ids[$i]}) is no longer in staging's store; it is dropped from the pins"
          lost+=("$p")
          continue
        fi
      fi
      wanted[$link]=1
      kept+="${kept:+ }$p"
      k=$((k + 1))
    done
    rpaths[i]=$kept
  done
  # (A lost path shifts the numbers of the release's later links: each is re-pointed above.)

  # Links of unpinned releases (and anything else we did not make) go; only symlinks are removed.
  for link in "$NSC_PIN_DIR"/*-*; do
    [ -L "$link" ] || continue
    [ -n "${wanted[$link]:-}" ] || rm -f -- "$link"
  done

  # The ledger, atomically (releases whose paths were all lost are dropped).
  tmp=$(mktemp -- "$NSC_PIN_DIR/.releases.XXXXXX")
  for i in "${!ids[@]}"; do
    [ -n "${rpaths[$i]}" ] || continue
    printf '%s %s %s\n' "${seqs[$i]}" "${ids[$i]}" "${rpaths[$i]}"
  done >"$tmp"
  chmod 0644 -- "$tmp"
  if [ -L "$NSC_PIN_LEDGER" ]; then
    nsc_log "nix-ssh-cache: ${NSC_PIN_LEDGER} was a symlink (not ours): removed, not followed"
    rm -f -- "$NSC_PIN_LEDGER"
  fi
  if [ -d "$NSC_PIN_LEDGER" ]; then
    rm -f -- "$tmp"
    nsc_die "${NSC_PIN_LEDGER} is a directory; remove it (root) and run pulumi up again"
  fi
  mv -f -- "$tmp" "$NSC_PIN_LEDGER"
  seqs=() ids=() rpaths=()
  nsc_pin_read_ledger
  nsc_pin_report
}

nsc_pin_remove() {
  local n=0 link
  nsc_lock pin
  if (nsc_pin_dirs check) 2>/dev/null; then
    for link in "$NSC_PIN_DIR"/*-*; do
      [ -L "$link" ] || continue
      rm -f -- "$link"
      n=$((n + 1))
    done
    rm -f -- "$NSC_PIN_LEDGER"
    rmdir -- "$NSC_PIN_DIR" 2>/dev/null || nsc_log "nix-ssh-cache: ${NSC_PIN_DIR} is not empty; left in place"
    rmdir -- "$NSC_PIN_BASE/pins" 2>/dev/null || true
  fi
  printf '{"set":%s,"removed":%s}\n' "$(nsc_json_string "$PIN_SET")" "$n"
}

case "$ACTION" in
apply) nsc_pin_apply ;;
read)
  # A missing or unsafe directory reads as no releases (drift: the next up repairs or fails).
  if (nsc_pin_dirs check) 2>/dev/null; then nsc_pin_read_ledger; fi
  nsc_pin_report
  ;;
remove) nsc_pin_remove ;;
*) nsc_die "internal error: ACTION must be apply, read or remove, got '${ACTION}'" ;;
esac
