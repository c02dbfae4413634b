# shellcheck shell=bash
# signing-key.sh (staging): the binary-cache signing key pair.
# Inputs: ACTION=apply|read|remove, KEY_NAME (apply), KEY_DIR, REMOVE_KEY=0|1 (remove),
#   KEY_GENERATION (optional; N > 0 uses cache-priv-key-N.pem / cache-pub-key-N.pem),
#   ADOPT_KEY=1 (optional, apply: use a private key found there that this step did not generate).
# Output (apply/read): {"publicKey":"NAME:BASE64"|null,"keyName":"NAME"|null,"keyFile":".../cache-priv-key.pem",
#                       "publicKeyFile":".../cache-pub-key.pem","created":bool,"nameMatches":bool}
# Output (remove): {"removed":bool}
# The private key is never printed.
#
# KEY_DIR must be a directory only root can change (it, and every directory above it, owned by
# root and not writable by group or others; not a symlink): a key in a directory another user can
# write could be one that user knows. A directory that exists is never re-owned or re-moded; one
# this step creates is made 0755 root:root. The record KEY_DIR/.nix-ssh-cache lists the private
# keys this step generated (`key FILE SHA256`) and the directories it created (`dir PATH`): a
# private key that is not listed there (with its current digest) is not used unless ADOPT_KEY=1
# (`signingKey.adoptExisting`); the step fails naming it instead.

nsc_require_env ACTION KEY_DIR
case "$KEY_DIR" in /*) ;; *) nsc_die "keyDir must be an absolute path, got '${KEY_DIR}'" ;; esac
KEY_DIR=${KEY_DIR%/}
case "$KEY_DIR" in
'' | *[!A-Za-z0-9._+@/-]* | */./* | */../* | */. | */.. | *//*)
  nsc_die "keyDirectory '${KEY_DIR}' must be an absolute path of letters, digits, '.', '_', '-', '+', '@' and '/', without '.', '..' or empty segments (e.g. /etc/shipnix/binary)"
  ;;
esac
generation=${KEY_GENERATION:-0}
case "$generation" in '' | *[!0-9]*) nsc_die "internal error: KEY_GENERATION must be a non-negative integer, got '${generation}'" ;; esac
suffix=""
[ "$generation" -gt 0 ] && suffix="-$generation"
priv=$KEY_DIR/cache-priv-key$suffix.pem
pub=$KEY_DIR/cache-pub-key$suffix.pem
record=$KEY_DIR/.nix-ssh-cache
created=false

# check_dir_safe: fail unless KEY_DIR (or, while missing, the directory it would be created in)
# can be changed by root only.
check_dir_safe() {
  local d=$KEY_DIR problem
  while [ ! -e "$d" ] && [ ! -L "$d" ]; do d=$(dirname -- "$d"); done
  problem=$(nsc_unsafe_dir "$d")
  [ -z "$problem" ] ||
    nsc_die "keyDirectory ${KEY_DIR} cannot hold the cache signing key: ${problem}; a user who can write there could replace or read the key. Use a directory only root can change (e.g. the default /etc/shipnix/binary), or fix that directory yourself (chown root:root, chmod go-w); nix-ssh-cache never changes a directory it did not create"
}

# make_dir: create KEY_DIR and its missing parents (0755 root:root), listing them in the record.
make_dir() {
  local d=$KEY_DIR
  local -a missing=()
  while [ ! -e "$d" ] && [ ! -L "$d" ]; do
    missing=("$d" "${missing[@]}")
    d=$(dirname -- "$d")
  done
  for d in "${missing[@]}"; do
    mkdir -m 0755 -- "$d"
    chown root:root -- "$d"
  done
  for d in "${missing[@]}"; do record_put dir "$d"; done
}

sha_of() { sha256sum -- "$1" | awk '{print $1}'; }

# record_put TYPE NAME [VALUE]: the record's line for TYPE NAME becomes `TYPE NAME[ VALUE]`.
# record_drop TYPE NAME: the record has no line for TYPE NAME.
record_put() {
  {
    record_others "$1" "$2"
    printf '%s\n' "$*"
  } | nsc_atomic_write "$record" 0600 root:root
}
record_drop() { record_others "$1" "$2" | nsc_atomic_write "$record" 0600 root:root; }
# record_others TYPE NAME: the record's lines for anything but TYPE NAME.
record_others() {
  if [ -f "$record" ] && [ ! -L "$record" ]; then
    awk -v t="$1" -v n="$2" '!($1 == t && $2 == n)' "$record"
  fi
}

# generated_here: true when the record lists the private key with its current digest.
generated_here() {
  [ -f "$record" ] && [ ! -L "$record" ] && grep -qxF -- "key $(basename -- "$priv") $(sha_of "$priv")" "$record"
}

# public key derived from the private key file (no output of secret material)
derive_public() {
  nix --extra-experimental-features nix-command key convert-secret-to-public <"$priv"
}

key_name_of_priv() { sed -n '1s/:.*//p' "$priv"; }

emit() {
  local public=$1 name="" matches=true
  [ -e "$priv" ] && name=$(key_name_of_priv)
  if [ -n "${KEY_NAME:-}" ] && [ -n "$name" ] && [ "$name" != "$KEY_NAME" ]; then matches=false; fi
  printf '{"publicKey":%s,"keyName":%s,"keyFile":%s,"publicKeyFile":%s,"created":%s,"nameMatches":%s}\n' \
    "$(nsc_json_string_or_null "$public")" "$(nsc_json_string_or_null "$name")" \
    "$(nsc_json_string "$priv")" "$(nsc_json_string "$pub")" "$created" "$matches"
}

# remove_record_and_dirs: drop the private key from the record; once no key is listed, delete the
# record and the directories it lists, deepest first, while empty.
remove_record_and_dirs() {
  local d
  [ -f "$record" ] && [ ! -L "$record" ] || return 0
  record_drop key "$(basename -- "$priv")"
  grep -q '^key ' "$record" && return 0
  local -a dirs=()
  mapfile -t dirs < <(sed -n 's/^dir //p' "$record" | sort -r)
  rm -f -- "$record"
  for d in "${dirs[@]}"; do
    if rmdir -- "$d" 2>/dev/null; then nsc_log "deleted directory ${d} (created by nix-ssh-cache)"; fi
  done
}

nsc_lock signing-key

case "$ACTION" in
read)
  if [ ! -e "$priv" ]; then
    emit ""
  elif [ -r "$pub" ]; then
    emit "$(head -n 1 "$pub" | tr -d '[:space:]')"
  else
    emit "$(derive_public | tr -d '[:space:]')"
  fi
  ;;
apply)
  nsc_require_env KEY_NAME
  case "$KEY_NAME" in
  *[!A-Za-z0-9._-]*) nsc_die "signing key name '${KEY_NAME}' may only contain letters, digits, '.', '_' and '-' (e.g. stage.example.com-1)" ;;
  esac
  # Before changing anything: no other signing key is configured on this host (e.g. a line left
  # by the tutorial naming another key file); every key file of KEY_DIR is ours.
  nsc_check_signing_foreign "$KEY_DIR/cache-priv-key*.pem"
  check_dir_safe
  [ -d "$KEY_DIR" ] || make_dir
  if [ -L "$priv" ] || { [ -e "$priv" ] && [ ! -f "$priv" ]; }; then
    nsc_die "${priv} is not a regular file$(nsc_describe_link "$priv"); remove it and run pulumi up again"
  fi
  if [ -e "$priv" ] && ! generated_here; then
    if [ "${ADOPT_KEY:-0}" != 1 ]; then
      nsc_die "${priv} holds a signing key that nix-ssh-cache did not generate (key '$(key_name_of_priv)'; not in ${record}); production would trust everything it signs. If it is yours and you want the cache to use it, set signingKey.adoptExisting: true; else move it away (e.g. mv ${priv} ${priv}.old) so that a new key is generated, and run pulumi up again"
    fi
    record_put key "$(basename -- "$priv")" "$(sha_of "$priv")"
    nsc_log "adopted the existing signing key ${priv} (signingKey.adoptExisting)"
  fi
  if [ ! -e "$priv" ]; then
    tmp_priv=$(mktemp "$KEY_DIR/.cache-priv-key$suffix.pem.XXXXXX")
    tmp_pub=$(mktemp "$KEY_DIR/.cache-pub-key$suffix.pem.XXXXXX")
    rm -f "$tmp_priv" "$tmp_pub"
    if ! (umask 077 && nix-store --generate-binary-cache-key "$KEY_NAME" "$tmp_priv" "$tmp_pub" >&2); then
      rm -f "$tmp_priv" "$tmp_pub"
      nsc_die "nix-store --generate-binary-cache-key failed in ${KEY_DIR}; see the messages above"
    fi
    chown root:root "$tmp_priv" "$tmp_pub"
    chmod 0600 "$tmp_priv"
    chmod 0644 "$tmp_pub"
    mv -f "$tmp_pub" "$pub"
    record_put key "$(basename -- "$priv")" "$(sha_of "$tmp_priv")"
    mv -f "$tmp_priv" "$priv"
    created=true
    nsc_log "generated signing key ${KEY_NAME} in ${KEY_DIR}"
  else
    actual=$(key_name_of_priv)
    if [ "$actual" != "$KEY_NAME" ]; then
      nsc_log "warning: ${priv} holds key '${actual}', not '${KEY_NAME}'; keeping the existing key (remove it by hand to rotate)"
    fi
    # re-derive the public key when missing or not matching the private key
    want=$(derive_public | tr -d '[:space:]')
    [ -n "$want" ] || nsc_die "could not derive the public key from ${priv} (is it a Nix secret key, NAME:BASE64?)"
    have=""
    [ -r "$pub" ] && have=$(head -n 1 "$pub" | tr -d '[:space:]')
    if [ "$have" != "$want" ]; then
      printf '%s' "$want" | nsc_atomic_write "$pub" 0644 root:root
      nsc_log "rewrote ${pub} from the private key"
    fi
  fi
  chown root:root "$priv" "$pub"
  chmod 0600 "$priv"
  chmod 0644 "$pub"
  emit "$(head -n 1 "$pub" | tr -d '[:space:]')"
  ;;
remove)
  if [ "${REMOVE_KEY:-0}" = 1 ]; then
    rm -f "$priv" "$pub"
    nsc_log "deleted $(basename "$priv") and $(basename "$pub")"
    remove_record_and_dirs
    nsc_log "deleted the signing key in ${KEY_DIR}"
    printf '{"removed":true}\n'
  else
    nsc_log "kept the signing key in ${KEY_DIR} (set removeKeyOnDestroy to delete it)"
    printf '{"removed":false}\n'
  fi
  ;;
*) nsc_die "internal error: ACTION must be apply, read or remove, got '${ACTION}'" ;;
esac
