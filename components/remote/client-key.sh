# shellcheck shell=bash
# client-key.sh (production): root's SSH identity, used by Nix to reach the staging cache.
# Inputs: ACTION=apply|read.
# Output: {"publicKey":"ssh-ed25519 AAAA... comment"|null,"file":"/root/.ssh/id_ed25519"|null,"created":bool}

nsc_require_env ACTION
root_home=$(getent passwd root | cut -d: -f6)
root_home=${root_home:-/root}
ssh_dir=$root_home/.ssh
created=false
found=""

find_key() {
  local t
  found=""
  for t in ed25519 ecdsa rsa; do
    if [ -s "$ssh_dir/id_$t" ] && [ -s "$ssh_dir/id_$t.pub" ]; then
      found=$ssh_dir/id_$t
      return 0
    fi
  done
  return 1
}

emit() {
  local public=""
  [ -n "$found" ] && public=$(head -n 1 "$found.pub" | tr -d '\r\n')
  printf '{"publicKey":%s,"file":%s,"created":%s}\n' \
    "$(nsc_json_string_or_null "$public")" "$(nsc_json_string_or_null "$found")" "$created"
}

case "$ACTION" in
read)
  find_key || true
  emit
  ;;
apply)
  nsc_lock client-key
  if ! find_key; then
    # a private key without its .pub: re-derive the .pub (works for unencrypted keys)
    for t in ed25519 ecdsa rsa; do
      if [ -s "$ssh_dir/id_$t" ] && [ ! -e "$ssh_dir/id_$t.pub" ]; then
        if pubtext=$(ssh-keygen -y -f "$ssh_dir/id_$t" </dev/null 2>/dev/null); then
          printf '%s root@%s-nix-ssh-cache\n' "$pubtext" "$(hostname)" | nsc_atomic_write "$ssh_dir/id_$t.pub" 0644 root:root
          nsc_log "re-derived $ssh_dir/id_$t.pub from its private key"
          break
        fi
      fi
    done
  fi
  if ! find_key; then
    if [ -e "$ssh_dir/id_ed25519" ] || [ -e "$ssh_dir/id_ed25519.pub" ]; then
      nsc_die "${ssh_dir}/id_ed25519 exists but is unusable (empty, passphrase-protected or without its .pub); fix or remove it and run pulumi up again"
    fi
    [ -d "$ssh_dir" ] || install -d -m 0700 -o root -g root "$ssh_dir"
    chmod 0700 "$ssh_dir"
    ssh-keygen -q -t ed25519 -N '' -C "root@$(hostname)-nix-ssh-cache" -f "$ssh_dir/id_ed25519" </dev/null >&2 ||
      nsc_die "ssh-keygen failed to create ${ssh_dir}/id_ed25519; see the messages above"
    chmod 0600 "$ssh_dir/id_ed25519"
    created=true
    nsc_log "generated ${ssh_dir}/id_ed25519"
    find_key || nsc_die "internal error: generated key not found in ${ssh_dir}"
  fi
  emit
  ;;
*) nsc_die "internal error: ACTION must be apply or read, got '${ACTION}'" ;;
esac
