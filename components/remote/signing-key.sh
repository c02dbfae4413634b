# shellcheck shell=bash
# signing-key.sh (staging): the binary-cache signing key pair.
# Inputs: ACTION=apply|read|remove, KEY_NAME (apply), KEY_DIR, REMOVE_KEY=0|1 (remove),
#   KEY_GENERATION (optional; N > 0 uses cache-priv-key-N.pem / cache-pub-key-N.pem).
# Output (apply/read): {"publicKey":"NAME:BASE64"|null,"keyName":"NAME"|null,"keyFile":".../cache-priv-key.pem",
#                       "publicKeyFile":".../cache-pub-key.pem","created":bool,"nameMatches":bool}
# Output (remove): {"removed":bool}
# The private key is never printed.

nsc_require_env ACTION KEY_DIR
case "$KEY_DIR" in /*) ;; *) nsc_die "keyDir must be an absolute path, got '${KEY_DIR}'" ;; esac
KEY_DIR=${KEY_DIR%/}
generation=${KEY_GENERATION:-0}
case "$generation" in '' | *[!0-9]*) nsc_die "internal error: KEY_GENERATION must be a non-negative integer, got '${generation}'" ;; esac
suffix=""
[ "$generation" -gt 0 ] && suffix="-$generation"
priv=$KEY_DIR/cache-priv-key$suffix.pem
pub=$KEY_DIR/cache-pub-key$suffix.pem
created=false

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
  [ -d "$KEY_DIR" ] || mkdir -p "$KEY_DIR"
  chown root:root "$KEY_DIR"
  chmod 0755 "$KEY_DIR"
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
    rmdir "$KEY_DIR" 2>/dev/null || true
    nsc_log "deleted the signing key in ${KEY_DIR}"
    printf '{"removed":true}\n'
  else
    nsc_log "kept the signing key in ${KEY_DIR} (set removeKeyOnDestroy to delete it)"
    printf '{"removed":false}\n'
  fi
  ;;
*) nsc_die "internal error: ACTION must be apply, read or remove, got '${ACTION}'" ;;
esac
