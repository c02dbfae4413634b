# shellcheck shell=bash
# lib.sh: helpers shared by the nix-ssh-cache step scripts.
#
# Not run on its own: the TypeScript side sends one script to `bash -s`, made of
# `set -euo pipefail`, `export NAME='value'` lines, this file, then one step script.
# Conventions: the last line of stdout is one JSON object; everything else goes to stderr.

PATH="/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export PATH
umask 022

NSC_NIX_DAEMON_PIDFILE=/run/nix-daemon.pid
NSC_NIX_DAEMON_SOCKET=/nix/var/nix/daemon-socket/socket
# shellcheck disable=SC2034 # used by the step scripts
NSC_STATE_DIR=/var/lib/nix-ssh-cache

# nsc_die MSG: one-line error on stderr, exit 1.
nsc_die() {
  printf 'nix-ssh-cache: %s\n' "$*" | tr '\n' ' ' | sed 's/ *$//' >&2
  printf '\n' >&2
  exit 1
}

# nsc_log MSG: progress on stderr.
nsc_log() {
  printf '%s\n' "$*" >&2
}

# nsc_require_env NAME...: fail when a required input is unset or empty.
nsc_require_env() {
  local name
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then
      nsc_die "internal error: input ${name} is not set (the TypeScript side must export it)"
    fi
  done
}

# nsc_json_string STR: print STR as a JSON string literal (no jq needed).
nsc_json_string() {
  local s=$1 out="" c i hex
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  if [[ $s == *[$'\x01'-$'\x1f\x7f']* ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      if [[ $c == [$'\x01'-$'\x1f\x7f'] ]]; then
        printf -v hex '\\u%04x' "'$c"
        out+=$hex
      else
        out+=$c
      fi
    done
    s=$out
  fi
  printf '"%s"' "$s"
}

# nsc_json_string_or_null STR: like nsc_json_string, but `null` for an empty STR.
nsc_json_string_or_null() {
  if [ -z "$1" ]; then printf 'null'; else nsc_json_string "$1"; fi
}

# nsc_json_bool VALUE: `true` for 1/true, else `false`.
nsc_json_bool() {
  case "$1" in 1 | true) printf 'true' ;; *) printf 'false' ;; esac
}

# nsc_json_array WORD...: JSON array of strings.
nsc_json_array() {
  local first=1 w
  printf '['
  for w in "$@"; do
    [ "$first" = 1 ] || printf ','
    first=0
    nsc_json_string "$w"
  done
  printf ']'
}

# nsc_atomic_write PATH MODE OWNER: write stdin to PATH atomically (temp file in the same
# directory, owner and mode set before `mv -f`). Parent directories are created 0755.
nsc_atomic_write() {
  local path=$1 mode=$2 owner=$3 dir tmp
  dir=$(dirname -- "$path")
  [ -d "$dir" ] || mkdir -p -- "$dir"
  tmp=$(mktemp -- "$dir/.$(basename -- "$path").nsc.XXXXXX")
  if ! cat >"$tmp" || ! chown -- "$owner" "$tmp" || ! chmod -- "$mode" "$tmp" || ! mv -f -- "$tmp" "$path"; then
    rm -f -- "$tmp"
    nsc_die "could not write ${path} (disk full or read-only filesystem?)"
  fi
}

# nsc_file_mode PATH: octal mode without leading zeros, e.g. 644.
nsc_file_mode() { stat -c '%a' -- "$1"; }

# nsc_file_owner PATH: user:group.
nsc_file_owner() { stat -c '%U:%G' -- "$1"; }

# nsc_rewrite_keep_attrs PATH: like nsc_atomic_write, keeping PATH's current mode and owner
# (root:root 0644 when PATH does not exist yet).
nsc_rewrite_keep_attrs() {
  local path=$1 mode=0644 owner=root:root
  if [ -e "$path" ]; then
    mode=$(nsc_file_mode "$path")
    owner=$(stat -c '%u:%g' -- "$path")
  fi
  nsc_atomic_write "$path" "$mode" "$owner"
}

# nsc_ensure_line FILE LINE: append LINE to FILE unless an identical line exists.
# Returns 0 when FILE changed, 1 when it already had the line.
nsc_ensure_line() {
  local file=$1 line=$2
  if [ -e "$file" ] && grep -qxF -- "$line" "$file"; then
    return 1
  fi
  {
    if [ -s "$file" ]; then
      cat -- "$file"
      # add a newline when the file does not end with one
      [ -z "$(tail -c 1 -- "$file")" ] || printf '\n'
    fi
    printf '%s\n' "$line"
  } | nsc_rewrite_keep_attrs "$file"
  return 0
}

# nsc_remove_line FILE LINE: remove every line identical to LINE from FILE.
# Returns 0 when FILE changed, 1 when it did not contain the line (or does not exist).
nsc_remove_line() {
  local file=$1 line=$2
  if [ ! -e "$file" ] || ! grep -qxF -- "$line" "$file"; then
    return 1
  fi
  { grep -vxF -- "$line" "$file" || true; } | nsc_rewrite_keep_attrs "$file"
  return 0
}

# nsc_is_nixos: true on NixOS.
nsc_is_nixos() { [ -e /etc/NIXOS ]; }

# nsc_has_systemd: true when systemd is the running init.
nsc_has_systemd() { [ -d /run/systemd/system ]; }

# nsc_pid_alive PIDFILE: true when PIDFILE names a live process.
nsc_pid_alive() {
  local pid
  [ -r "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# nsc_nix_daemon_socket_ok: true when the daemon socket accepts a connection and answers.
nsc_nix_daemon_socket_ok() {
  local out
  [ -S "$NSC_NIX_DAEMON_SOCKET" ] || return 1
  # (no `| grep -q`: with pipefail, grep's early exit makes the pipeline fail on SIGPIPE)
  out=$(timeout 10 nix-store --store daemon -q --hash /nix/store/00000000000000000000000000000000-nix-ssh-cache-probe 2>&1) || true
  [[ $out == *"is not valid"* ]]
}

# nsc_nix_daemon_running: systemd unit active, or pid file names a live process, or the
# socket answers.
nsc_nix_daemon_running() {
  if nsc_has_systemd && systemctl is-active --quiet nix-daemon.service 2>/dev/null; then
    return 0
  fi
  nsc_pid_alive "$NSC_NIX_DAEMON_PIDFILE" && return 0
  nsc_nix_daemon_socket_ok
}

# nsc_reload_sshd: make sshd re-read its configuration (existing sessions survive).
nsc_reload_sshd() {
  if nsc_has_systemd; then
    systemctl reload ssh 2>/dev/null || systemctl reload sshd ||
      nsc_die "could not reload sshd (systemctl reload ssh/sshd failed); check 'systemctl status ssh'"
  elif nsc_pid_alive /run/sshd.pid; then
    kill -HUP "$(tr -dc '0-9' </run/sshd.pid)"
    sleep 0.5
  else
    nsc_die "cannot reload sshd: no systemd and /run/sshd.pid names no live process; reload sshd by hand (kill -HUP its PID)"
  fi
  nsc_log "reloaded sshd"
}

# nsc_restart_nix_daemon: restart nix-daemon so it re-reads nix.conf. Does nothing when no
# daemon is running (the next start reads the new configuration anyway).
nsc_restart_nix_daemon() {
  local pid i
  if nsc_has_systemd; then
    if systemctl is-active --quiet nix-daemon.service 2>/dev/null; then
      systemctl restart nix-daemon.service ||
        nsc_die "could not restart nix-daemon (systemctl restart nix-daemon failed); check 'systemctl status nix-daemon'"
      nsc_log "restarted nix-daemon (systemd)"
    fi
    # socket-activated and idle: the next connection starts a daemon with the new config.
    return 0
  fi
  nsc_pid_alive "$NSC_NIX_DAEMON_PIDFILE" || return 0
  pid=$(tr -dc '0-9' <"$NSC_NIX_DAEMON_PIDFILE")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  # close the lock fd (9): the daemon outlives this script
  setsid nix-daemon </dev/null >>/var/log/nix-daemon.log 2>&1 9>&- &
  pid=$!
  printf '%s\n' "$pid" | nsc_atomic_write "$NSC_NIX_DAEMON_PIDFILE" 0644 root:root
  for ((i = 0; i < 100; i++)); do
    nsc_nix_daemon_socket_ok && break
    kill -0 "$pid" 2>/dev/null || nsc_die "nix-daemon exited right after restart; see /var/log/nix-daemon.log"
    sleep 0.1
  done
  nsc_log "restarted nix-daemon (pid ${pid})"
}

# nsc_lock NAME: take an exclusive lock (fd 9) for the rest of the script, waiting up to 120 s.
nsc_lock() {
  local dir=/run/lock
  [ -d "$dir" ] || mkdir -p "$dir"
  exec 9>"$dir/nix-ssh-cache-$1.lock"
  flock -w 120 9 || nsc_die "another nix-ssh-cache run holds ${dir}/nix-ssh-cache-$1.lock for over 120 s; retry later"
}

# nsc_signatures PATH [STORE-ARGS...]: PATH's signatures (NAME:BASE64), one a line.
# `nix path-info --sigs` prints `PATH  [ultimate] [ca:...] sig...` on 2.8.
nsc_signatures() {
  local path=$1
  shift
  nix --extra-experimental-features nix-command path-info "$@" --sigs "$path" 2>/dev/null |
    awk '{for (i = 2; i <= NF; i++) if ($i !~ /^ca:/ && $i ~ /^[^:]+:[A-Za-z0-9+\/]+=*$/) print $i}'
}

# --- effective-configuration checks (provisional copy in the nixos branch: the hosts branch
# owns these; same names and signatures) ---

# nsc_nix_config_value NAME: the value of nix.conf setting NAME in force (`nix show-config`).
nsc_nix_config_value() {
  nix --extra-experimental-features nix-command show-config 2>/dev/null | sed -n "s/^$1 = //p"
}

# nsc_nix_conf_winner NAME [FILE]: "FILE:LINE: TEXT" of the last line setting NAME (not
# extra-NAME) in FILE (default /etc/nix/nix.conf) and the files it includes, in Nix's reading
# order: the line that wins. Prints nothing when no such line exists.
nsc_nix_conf_winner() {
  local name=$1 file=${2:-/etc/nix/nix.conf} line n=0 inc dir last=""
  [ -r "$file" ] || return 0
  dir=$(dirname -- "$file")
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    if [[ $line =~ ^[[:space:]]*\!?include[[:space:]]+([^[:space:]]+) ]]; then
      inc=${BASH_REMATCH[1]}
      [[ $inc == /* ]] || inc=$dir/$inc
      inc=$(nsc_nix_conf_winner "$name" "$inc")
      [ -z "$inc" ] || last=$inc
    elif [[ $line =~ ^[[:space:]]*${name}[[:space:]]*= ]]; then
      last="${file}:${n}: ${line}"
    fi
  done <"$file"
  [ -z "$last" ] || printf '%s\n' "$last"
}

# nsc_check_signing_effective KEYFILE...: every KEYFILE is in the secret-key-files in force;
# else die naming the nix.conf line that wins.
nsc_check_signing_effective() {
  local effective f missing=() winner
  effective=" $(nsc_nix_config_value secret-key-files) "
  for f in "$@"; do
    [[ $effective == *" $f "* ]] || missing+=("$f")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  winner=$(nsc_nix_conf_winner secret-key-files)
  nsc_die "the signing key ${missing[*]} is not in force: nix show-config has secret-key-files =${effective% }; ${winner:-a later setting} wins (Nix keeps the last value of a setting): remove that line"
}

# nsc_check_substituter_effective URL PUBLIC_KEY...: URL (possibly with ?parameters) is among
# the substituters in force and every PUBLIC_KEY among trusted-public-keys; else die naming the
# nix.conf line that wins.
nsc_check_substituter_effective() {
  local url=$1 s found=0 effective k missing=() winner
  shift
  for s in $(nsc_nix_config_value substituters); do
    case "$s" in "$url" | "$url?"*) found=1 ;; esac
  done
  if [ "$found" = 0 ]; then
    winner=$(nsc_nix_conf_winner substituters)
    nsc_die "the substituter ${url} is not in force: nix show-config has substituters = $(nsc_nix_config_value substituters); ${winner:-a later setting} wins (Nix keeps the last value of a setting): remove that line"
  fi
  effective=" $(nsc_nix_config_value trusted-public-keys) "
  for k in "$@"; do
    [[ $effective == *" $k "* ]] || missing+=("$k")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  winner=$(nsc_nix_conf_winner trusted-public-keys)
  nsc_die "the cache key ${missing[*]} is not trusted in force: nix show-config has trusted-public-keys =${effective% }; ${winner:-a later setting} wins (Nix keeps the last value of a setting): remove that line"
}
