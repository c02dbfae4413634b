# shellcheck shell=bash
# file.sh: one managed file on a host (a config fragment), with an optional hook.
# Inputs: ACTION=apply|read|remove, FILE_PATH (absolute), FILE_CONTENT (apply; the exact content
#   as plain text) or FILE_CONTENT_B64 (apply; base64 of it), FILE_MODE (apply; default 0644),
#   FILE_OWNER (apply; default root:root), AFTER=none|sshd|nix|ssh (apply/remove; default none).
# A symlink at FILE_PATH (or at /etc/nix/nix.conf) is never replaced: writes go through to its
# target when that is writable, else the step fails before changing anything.
# Output (apply):  {"exists":true,"sha256":"<hex>","changed":bool}
# Output (read):   {"exists":true,"contentB64":"...","sha256":"...","mode":"644","owner":"root:root"}
#                  or {"exists":false}
# Output (remove): {"exists":false,"changed":bool}

nsc_require_env ACTION FILE_PATH
# The content: FILE_CONTENT (plain text, exact bytes) or FILE_CONTENT_B64 (base64). Keep a large
# content out of the environment of every child process (exec limits).
have_plain=false
if [ -n "${FILE_CONTENT+set}" ]; then have_plain=true; fi
content=${FILE_CONTENT:-}
content_b64=${FILE_CONTENT_B64:-}
export -n FILE_CONTENT FILE_CONTENT_B64 2>/dev/null || true
after=${AFTER:-none}
case "$FILE_PATH" in /*) ;; *) nsc_die "file path must be absolute, got '${FILE_PATH}'" ;; esac
case "$after" in none | sshd | nix | ssh) ;; *) nsc_die "internal error: AFTER must be none, sshd, nix or ssh, got '${after}'" ;; esac
nix_conf=/etc/nix/nix.conf
if [ "$after" = nix ] && [ "$FILE_PATH" = "$nix_conf" ]; then
  nsc_die "internal error: a fragment with AFTER=nix cannot be ${nix_conf} itself"
fi

# The include line: relative when the fragment sits beside a regular nix.conf, else absolute (a
# relative include in the target of a symlinked nix.conf would be read relative to the link).
include_line() {
  if [ "$(dirname -- "$FILE_PATH")" = /etc/nix ] && [ ! -L "$nix_conf" ]; then
    printf '!include %s' "$(basename -- "$FILE_PATH")"
  else
    printf '!include %s' "$FILE_PATH"
  fi
}

# include_forms: every line that includes FILE_PATH from nix.conf, one a line.
include_forms() {
  printf '!include %s\n' "$FILE_PATH"
  if [ "$(dirname -- "$FILE_PATH")" = /etc/nix ]; then printf '!include %s\n' "$(basename -- "$FILE_PATH")"; fi
}

# include_present: true when nix.conf (or its symlink's target) already includes FILE_PATH.
include_present() {
  [ -e "$nix_conf" ] && grep -qxF -f <(include_forms) -- "$nix_conf"
}

sha_of() { sha256sum -- "$1" | awk '{print $1}'; }

# Directories apply created (e.g. /etc/ssh/nix-ssh-cache), one a line: remove deletes them again
# once empty, so a destroyed host keeps no trace of them.
dirs_record=$NSC_STATE_DIR/created-dirs

# make_parent DIR: create DIR and its missing parents, recording each one created.
make_parent() {
  local d=$1
  local -a missing=()
  while [ ! -d "$d" ]; do
    missing+=("$d")
    d=$(dirname -- "$d")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  mkdir -p -- "$1"
  for d in "${missing[@]}"; do nsc_ensure_line "$dirs_record" "$d" || true; done
}

# remove_created_parents: delete FILE_PATH's parent directories that apply created, when empty.
remove_created_parents() {
  local d
  d=$(dirname -- "$FILE_PATH")
  while [ -f "$dirs_record" ] && grep -qxF -- "$d" "$dirs_record"; do
    rmdir -- "$d" 2>/dev/null || break # not empty: another file still lives there
    nsc_remove_line "$dirs_record" "$d" || true
    nsc_log "deleted directory ${d} (created by nix-ssh-cache)"
    d=$(dirname -- "$d")
  done
  if [ -f "$dirs_record" ] && [ ! -s "$dirs_record" ]; then rm -f -- "$dirs_record"; fi
  rmdir -- "$NSC_STATE_DIR" 2>/dev/null || true
}

# sshd_block_problem CONFIG: why the Match User block of FILE_PATH would not apply (nothing when it
# does): `sshd -T -C user=<its user>` must show its ForceCommand.
sshd_block_problem() {
  local config=$1 user want got where
  user=$(awk 'tolower($1) == "match" && tolower($2) == "user" {print $3; exit}' "$FILE_PATH")
  want=$(awk 'tolower($1) == "forcecommand" {$1 = ""; sub(/^[ \t]+/, ""); print; exit}' "$FILE_PATH")
  [ -n "$user" ] && [ -n "$want" ] || return 0
  got=$(nsc_sshd_effective "$config" "$user" | awk '$1 == "forcecommand" && !n++ {$1 = ""; sub(/^ /, ""); print}')
  [ "$got" = "$want" ] && return 0
  if [ -z "$got" ] || [ "$got" = none ]; then
    printf "sshd would not apply %s: 'sshd -T -C user=%s' shows no ForceCommand; does %s Include %s? (add 'Include %s/*.conf' at the top of %s)" \
      "$FILE_PATH" "$user" "$config" "$FILE_PATH" "$(dirname -- "$FILE_PATH")" "$config"
  else
    where=$(grep -rinE '^[[:space:]]*ForceCommand' -- "$config" "$(dirname -- "$FILE_PATH")" 2>/dev/null | grep -vF -- "$FILE_PATH:" | sed -n 1p) || where=""
    printf "sshd would not apply %s: 'sshd -T -C user=%s' shows ForceCommand '%s' from an earlier line (%s); sshd keeps the first value. Remove it" \
      "$FILE_PATH" "$user" "$got" "${where:-see sshd_config}"
  fi
}

nsc_lock "file"

case "$ACTION" in
read)
  if [ -f "$FILE_PATH" ]; then
    printf '{"exists":true,"contentB64":%s,"sha256":%s,"mode":%s,"owner":%s}\n' \
      "$(nsc_json_string "$(base64 -w 0 -- "$FILE_PATH")")" "$(nsc_json_string "$(sha_of "$FILE_PATH")")" \
      "$(nsc_json_string "$(nsc_file_mode "$FILE_PATH")")" "$(nsc_json_string "$(nsc_file_owner "$FILE_PATH")")"
  else
    printf '{"exists":false}\n'
  fi
  ;;
apply)
  FILE_MODE=${FILE_MODE:-0644}
  case "$FILE_MODE" in *[!0-7]*) nsc_die "file mode must be octal like 0644, got '${FILE_MODE}'" ;; esac
  want_mode=$(printf '%o' "$((8#$FILE_MODE))")
  want_owner=${FILE_OWNER:-root:root}
  if [ "$after" = nix ] && nsc_is_nixos; then
    nsc_die "this host runs NixOS: /etc/nix/nix.conf is generated by NixOS; use the NixOS module (nixos-apply) instead of a nix.conf fragment"
  fi
  # A symlink is written through to its target (never replaced), or nothing changes.
  target=$FILE_PATH
  if [ -L "$FILE_PATH" ]; then
    target=$(nsc_edit_target "$FILE_PATH")
    nsc_writable_in_place "$target" ||
      nsc_die "${FILE_PATH} is a symlink to ${target}, which is not writable (read-only filesystem or managed by another tool); nix-ssh-cache does not replace the symlink. Remove the symlink or make ${target} writable, then run pulumi up again. Nothing was changed"
  fi
  staged=$(mktemp)
  new=""
  backup=""
  cleanup() { rm -f -- "$staged" ${new:+"$new"} ${backup:+"$backup"}; }
  trap cleanup EXIT
  if [ "$have_plain" = true ]; then
    printf '%s' "$content" >"$staged"
  else
    printf '%s' "$content_b64" | base64 -d >"$staged" 2>/dev/null ||
      nsc_die "internal error: FILE_CONTENT_B64 for ${FILE_PATH} is not valid base64"
  fi
  content_changed=false
  attrs_changed=false
  if [ ! -f "$target" ] || ! cmp -s -- "$staged" "$target"; then
    content_changed=true
  elif [ "$(nsc_file_mode "$target")" != "$want_mode" ]; then
    attrs_changed=true
  elif [ "$(nsc_file_owner "$target")" != "$want_owner" ] && [ "$(stat -c '%u:%g' -- "$target")" != "$want_owner" ]; then
    attrs_changed=true
  fi
  # Before changing anything: nix.conf can take the include line, and what would be in force
  # afterwards holds our settings (a conflicting line elsewhere fails here, naming it).
  if [ "$after" = nix ]; then
    include_present || nsc_check_line_addable "$nix_conf" "!include ${FILE_PATH}"
    # shellcheck disable=SC2034 # read by lib.sh's nix.conf reader
    NSC_CONF_PENDING_PATH=$FILE_PATH NSC_CONF_PENDING_SRC=$staged NSC_CONF_PENDING_APPEND=""
    # shellcheck disable=SC2034
    include_present || NSC_CONF_PENDING_APPEND=$(include_line)
    nsc_check_nix_fragment "$staged"
    unset NSC_CONF_PENDING_PATH NSC_CONF_PENDING_SRC NSC_CONF_PENDING_APPEND
  fi
  if [ "$content_changed" = true ]; then
    make_parent "$(dirname -- "$FILE_PATH")"
    tdir=$(dirname -- "$target")
    new=$(mktemp -- "$tdir/.$(basename -- "$target").new.XXXXXX")
    cat -- "$staged" >"$new"
    if [ "$after" = sshd ] && [ -f "$target" ]; then
      backup=$(mktemp -- "$tdir/.$(basename -- "$target").old.XXXXXX")
      cp -p -- "$target" "$backup"
    fi
    chown -- "$want_owner" "$new" || nsc_die "cannot set owner '${want_owner}' on ${FILE_PATH} (does that user/group exist?)"
    chmod -- "$want_mode" "$new"
    mv -f -- "$new" "$target"
    new=""
    nsc_log "wrote ${FILE_PATH}$(nsc_describe_link "$FILE_PATH")"
  elif [ "$attrs_changed" = true ]; then
    chown -- "$want_owner" "$target" || nsc_die "cannot set owner '${want_owner}' on ${FILE_PATH} (does that user/group exist?)"
    chmod -- "$want_mode" "$target"
    nsc_log "fixed owner/mode of ${FILE_PATH}$(nsc_describe_link "$FILE_PATH")"
  fi
  case "$after" in
  sshd)
    if [ "$content_changed" = true ]; then
      sshd_config=$(nsc_sshd_config_of "$(nsc_sshd_listeners | sed -n 1p)")
      problem=""
      if ! msg=$("$(nsc_sshd_bin)" -t -f "$sshd_config" 2>&1); then
        problem="sshd rejects the configuration with the new ${FILE_PATH}: $(printf '%s' "$msg" | tr '\n' ' ')"
      else
        problem=$(sshd_block_problem "$sshd_config")
      fi
      if [ -n "$problem" ]; then
        if [ -n "$backup" ]; then
          mv -f -- "$backup" "$target"
          backup=""
          nsc_log "restored the previous ${FILE_PATH}"
        else
          rm -f -- "$target"
          nsc_log "removed the new ${FILE_PATH}"
        fi
        nsc_die "${problem} (restored the previous state)"
      fi
      nsc_reload_sshd
    fi
    ;;
  nix)
    restart=$content_changed
    if ! include_present; then
      nsc_ensure_line "$nix_conf" "$(include_line)" "!include ${FILE_PATH}" || true
      restart=true
      nsc_log "added '$(include_line)' to ${nix_conf}$(nsc_describe_link "$nix_conf")"
    fi
    if [ "$restart" = true ]; then nsc_restart_nix_daemon; fi
    nsc_check_nix_fragment "$FILE_PATH"
    ;;
  ssh)
    nsc_check_ssh_pin "$FILE_PATH"
    ;;
  esac
  changed=false
  if [ "$content_changed" = true ] || [ "$attrs_changed" = true ]; then changed=true; fi
  printf '{"exists":true,"sha256":%s,"changed":%s}\n' "$(nsc_json_string "$(sha_of "$target")")" "$changed"
  ;;
remove)
  changed=false
  if [ -L "$FILE_PATH" ]; then
    nsc_log "${FILE_PATH} is a symlink to $(readlink -- "$FILE_PATH"): deleted the link, kept its target"
  fi
  if [ -e "$FILE_PATH" ] || [ -L "$FILE_PATH" ]; then
    rm -f -- "$FILE_PATH"
    changed=true
    nsc_log "deleted ${FILE_PATH}"
  fi
  remove_created_parents
  case "$after" in
  sshd)
    if [ "$changed" = true ]; then nsc_reload_sshd; fi
    ;;
  nix)
    while IFS= read -r line; do
      if nsc_remove_line "$nix_conf" "$line"; then
        changed=true
        nsc_log "removed '${line}' from ${nix_conf}$(nsc_describe_link "$nix_conf")"
      fi
    done < <(include_forms)
    if [ "$changed" = true ]; then nsc_restart_nix_daemon; fi
    ;;
  esac
  printf '{"exists":false,"changed":%s}\n' "$changed"
  ;;
*) nsc_die "internal error: ACTION must be apply, read or remove, got '${ACTION}'" ;;
esac
