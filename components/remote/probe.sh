# shellcheck shell=bash
# probe.sh (read-only): what kind of host is this?
# Inputs: none.
# Output: {"os":"nixos"|"linux","nixVersion":"2.8.0","system":"x86_64-linux","daemonRunning":bool,
#          "init":"systemd"|"openrc"|"sysvinit"|"none","hostKey":"ssh-ed25519 AAAA..."|null,
#          "hostKeys":["ssh-ed25519 AAAA...",...],"hostname":"...","nixBin":"/nix/var/nix/profiles/default/bin"}
# hostKey: the key production pins (ed25519, else ecdsa, else rsa); hostKeys: every
# /etc/ssh/ssh_host_*_key.pub (the operator's verified key must be one of them).
# nixBin: the directory the Nix tools were found in (lib.sh's PATH: NixOS, the multi-user
# installer's default profile, root's profile, then the system directories).

nix_store=$(command -v nix-store 2>/dev/null) ||
  nsc_die "Nix is not installed (nix-store not found in PATH=${PATH}); install Nix (e.g. apt-get install nix-bin, or the multi-user installer) and run pulumi up again"
nix_bin=$(dirname -- "$nix_store")

os=linux
nsc_is_nixos && os=nixos

# `nix-instantiate --version`, not `nix-store --version`: on Nix 2.8 the latter opens the local
# store as root, creating /nix/var/nix/db and re-moding the per-user dirs (a probe changes nothing)
nix_version=$(nix-instantiate --version 2>/dev/null | awk '{print $NF; exit}') || nix_version=""
# from uname, not `nix-instantiate --eval` (that opens the local store too)
case "$(uname -m)" in
x86_64 | aarch64 | i686 | armv7l | riscv64) system="$(uname -m)-$(uname -s | tr '[:upper:]' '[:lower:]')" ;;
*) system="" ;;
esac

init=$(nsc_init_system)

daemon=false
nsc_nix_daemon_running && daemon=true

host_key=""
for t in ed25519 ecdsa rsa; do
  f=/etc/ssh/ssh_host_${t}_key.pub
  if [ -r "$f" ]; then
    host_key=$(awk 'NF >= 2 {print $1 " " $2; exit}' "$f")
    [ -n "$host_key" ] && break
  fi
done
host_keys=""
for f in /etc/ssh/ssh_host_*_key.pub; do
  [ -r "$f" ] || continue
  k=$(awk 'NF >= 2 {print $1 " " $2; exit}' "$f")
  if [ -n "$k" ]; then host_keys="${host_keys:+$host_keys,}$(nsc_json_string "$k")"; fi
done

printf '{"os":%s,"nixVersion":%s,"system":%s,"daemonRunning":%s,"init":%s,"hostKey":%s,"hostKeys":[%s],"hostname":%s,"nixBin":%s}\n' \
  "$(nsc_json_string "$os")" "$(nsc_json_string_or_null "$nix_version")" \
  "$(nsc_json_string_or_null "$system")" "$daemon" "$(nsc_json_string "$init")" \
  "$(nsc_json_string_or_null "$host_key")" "$host_keys" "$(nsc_json_string "$(hostname 2>/dev/null || cat /etc/hostname)")" \
  "$(nsc_json_string "$nix_bin")"
