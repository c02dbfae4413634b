# shellcheck shell=bash
# authorized-keys.sh (staging): the key lines of one entry (e.g. one production host) in the
# shared authorized_keys file of the serve user; the lines of other entries are kept, so each
# production host is authorised on its own.
# Inputs: ACTION=apply|read|remove, KEYS_FILE (absolute), KEYS_ENTRY (letters, digits, . _ -),
#   KEYS (apply; the entry's lines, one a line, e.g. "restrict ssh-ed25519 AAAA... root@prod1").
# Each line is written with " nix-ssh-cache-entry=<KEYS_ENTRY>" appended (part of the key's
# comment). Lines without such a tag were written whole-file by an older version: apply drops them.
# Output (apply/read): {"entry":"prod1","lines":N,"sha256":"<hex of the entry's lines>"}
# Output (remove):     {"entry":"prod1","lines":0,"removed":N}

nsc_require_env ACTION KEYS_FILE KEYS_ENTRY
case "$KEYS_FILE" in /*) ;; *) nsc_die "internal error: KEYS_FILE must be absolute, got '${KEYS_FILE}'" ;; esac
case "$KEYS_ENTRY" in *[!A-Za-z0-9._-]*) nsc_die "internal error: invalid KEYS_ENTRY '${KEYS_ENTRY}'" ;; esac
tag="nix-ssh-cache-entry=${KEYS_ENTRY}"

# entry_lines: this entry's lines in the file, as written.
entry_lines() {
  [ -f "$KEYS_FILE" ] || return 0
  awk -v t="$tag" 'NF && $NF == t' "$KEYS_FILE"
}

# other_lines: the lines of every other entry (untagged lines are dropped).
other_lines() {
  [ -f "$KEYS_FILE" ] || return 0
  awk -v t="$tag" 'NF && $NF != t && $NF ~ /^nix-ssh-cache-entry=/' "$KEYS_FILE"
}

emit() {
  local lines sum
  lines=$(entry_lines)
  sum=$(printf '%s' "$lines" | sha256sum | awk '{print $1}')
  printf '{"entry":%s,"lines":%s,"sha256":%s}\n' "$(nsc_json_string "$KEYS_ENTRY")" \
    "$(printf '%s' "$lines" | grep -c . || true)" "$(nsc_json_string "$sum")"
}

nsc_lock "authorized-keys"

case "$ACTION" in
read) emit ;;
apply)
  want=$(printf '%s\n' "${KEYS:-}" | awk -v t="$tag" 'NF { sub(/[ \t]+$/, ""); print $0 " " t }')
  wanted=$(printf '%s\n%s\n' "$(other_lines)" "$want" | awk 'NF')
  current=""
  [ -f "$KEYS_FILE" ] && current=$(awk 'NF' "$KEYS_FILE")
  if [ ! -f "$KEYS_FILE" ] || [ "$wanted" != "$current" ]; then
    nsc_make_parent "$(dirname -- "$KEYS_FILE")"
    printf '%s\n' "$wanted" | awk 'NF' | nsc_rewrite_keep_attrs "$KEYS_FILE"
    nsc_log "authorised the keys of ${KEYS_ENTRY} in ${KEYS_FILE}"
  fi
  emit
  ;;
remove)
  removed=$(entry_lines | grep -c . || true)
  if [ "$removed" -gt 0 ]; then
    other_lines | nsc_rewrite_keep_attrs "$KEYS_FILE"
    nsc_log "removed the keys of ${KEYS_ENTRY} from ${KEYS_FILE}"
  fi
  if [ -f "$KEYS_FILE" ] && [ -z "$(awk 'NF' "$KEYS_FILE")" ]; then
    rm -f -- "$KEYS_FILE"
    nsc_remove_created_parents "$(dirname -- "$KEYS_FILE")"
  fi
  printf '{"entry":%s,"lines":0,"removed":%s}\n' "$(nsc_json_string "$KEYS_ENTRY")" "$removed"
  ;;
*) nsc_die "internal error: ACTION must be apply, read or remove, got '${ACTION}'" ;;
esac
