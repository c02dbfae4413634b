# shellcheck shell=bash
# lib.sh: helpers shared by the nix-ssh-cache step scripts.
#
# Not run on its own: the TypeScript side sends one script to `bash -s`, made of
# `set -euo pipefail`, `export NAME='value'` lines, this file, then one step script.
# Conventions: the last line of stdout is one JSON object; everything else goes to stderr.

# Nix where installers put it (NixOS, the multi-user installer, root's single-user profile, the
# distribution's package), before the usual system directories: a non-interactive SSH session and
# sudo's secure_path read no /etc/profile.d.
# (root's home by bash's own tilde expansion: PATH is not set yet, so no external command here)
NSC_ROOT_HOME=~root
[[ $NSC_ROOT_HOME == /* ]] || NSC_ROOT_HOME=/root
PATH="/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:${NSC_ROOT_HOME}/.nix-profile/bin:/nix/var/nix/profiles/per-user/root/profile/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export PATH
umask 022
# Temporary files in /tmp (sticky; mktemp creates each one 0600 with O_EXCL), never in a TMPDIR
# inherited from a login or sudo: its owner could swap a file root writes there and reads back.
TMPDIR=/tmp
export TMPDIR

NSC_NIX_DAEMON_SOCKET=/nix/var/nix/daemon-socket/socket
# shellcheck disable=SC2034 # used by the step scripts
NSC_STATE_DIR=/var/lib/nix-ssh-cache
# Directories steps created (e.g. /etc/ssh/nix-ssh-cache), one a line: remove deletes them again
# once empty, so a destroyed host keeps no trace of them.
NSC_CREATED_DIRS=$NSC_STATE_DIR/created-dirs

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

# nsc_file_mode PATH: octal mode without leading zeros, e.g. 644 (of the file a symlink points to).
nsc_file_mode() { stat -L -c '%a' -- "$1"; }

# nsc_file_owner PATH: user:group (of the file a symlink points to).
nsc_file_owner() { stat -L -c '%U:%G' -- "$1"; }

# nsc_edit_target PATH: the file an in-place edit of PATH must change: PATH itself, or the
# final target when PATH is a symlink (a symlink is never replaced). Fails on a dangling link.
nsc_edit_target() {
  local path=$1 target
  if [ -L "$path" ]; then
    target=$(readlink -f -- "$path") || target=""
    { [ -n "$target" ] && [ -e "$target" ]; } ||
      nsc_die "${path} is a symlink to $(readlink -- "$path"), which does not exist; fix the link (nix-ssh-cache never replaces a symlink)"
    printf '%s\n' "$target"
  else
    printf '%s\n' "$path"
  fi
}

# nsc_writable_in_place PATH: true when PATH (a regular file, or a new file) can be replaced
# atomically: its directory accepts a temp file and a rename (not a read-only filesystem).
nsc_writable_in_place() {
  local dir
  dir=$(dirname -- "$1")
  while [ ! -e "$dir" ]; do dir=$(dirname -- "$dir"); done
  [ -d "$dir" ] && [ -w "$dir" ] && { [ ! -e "$1" ] || [ -w "$1" ]; }
}

# nsc_describe_link PATH: " (a symlink to TARGET)" when PATH is a symlink, else nothing.
nsc_describe_link() {
  if [ -L "$1" ]; then printf ' (a symlink to %s)' "$(readlink -f -- "$1")"; fi
}

# nsc_rewrite_keep_attrs PATH: like nsc_atomic_write, keeping the current mode and owner of the
# file PATH names (root:root 0644 when it does not exist yet). A symlink is written through: its
# target is replaced (atomically, in the target's directory) and the link stays as it is.
nsc_rewrite_keep_attrs() {
  local path=$1 target mode=0644 owner=root:root
  target=$(nsc_edit_target "$path")
  if [ -e "$target" ]; then
    mode=$(stat -c '%a' -- "$target")
    owner=$(stat -c '%u:%g' -- "$target")
  fi
  nsc_writable_in_place "$target" ||
    nsc_die "cannot write ${path}$(nsc_describe_link "$path"): ${target} is not writable (read-only filesystem or managed elsewhere)"
  nsc_atomic_write "$target" "$mode" "$owner"
}

# nsc_ensure_line FILE LINE [WHAT]: append LINE to FILE unless an identical line exists; writes
# through a symlink to its target. When the target cannot be written, fails before changing
# anything, naming the target and the line to add there by hand (WHAT: the line to name there,
# default LINE). Returns 0 when FILE changed, 1 when it already had the line.
nsc_ensure_line() {
  local file=$1 line=$2 what=${3:-$2} target
  if [ -e "$file" ] && grep -qxF -- "$line" "$file"; then
    return 1
  fi
  nsc_check_line_addable "$file" "$what"
  target=$(nsc_edit_target "$file")
  {
    if [ -s "$target" ]; then
      cat -- "$target"
      # add a newline when the file does not end with one
      [ -z "$(tail -c 1 -- "$target")" ] || printf '\n'
    fi
    printf '%s\n' "$line"
  } | nsc_rewrite_keep_attrs "$file"
  return 0
}

# nsc_check_line_addable FILE LINE: fail (changing nothing) when LINE could not be added to FILE
# because FILE, or the file its symlink points to, cannot be written.
nsc_check_line_addable() {
  local file=$1 line=$2 target
  if [ -L "$file" ]; then
    target=$(nsc_edit_target "$file")
    nsc_writable_in_place "$target" ||
      nsc_die "${file} is a symlink to ${target}, which is not writable (read-only filesystem or managed by another tool); nix-ssh-cache does not replace the symlink. Add this line at the end of ${target} (with the tool that manages it), then run pulumi up again:  ${line}"
  else
    nsc_writable_in_place "$file" ||
      nsc_die "${file} is not writable (read-only filesystem?); add this line at its end by hand, then run pulumi up again:  ${line}"
  fi
}

# nsc_remove_line FILE LINE: remove every line identical to LINE from FILE (through a symlink to
# its target). Returns 0 when FILE changed, 1 when it did not contain the line (or does not
# exist). When the target cannot be written it changes nothing, warns naming the target and the
# line to remove by hand, and returns 1.
nsc_remove_line() {
  local file=$1 line=$2 target
  if [ ! -e "$file" ] || ! grep -qxF -- "$line" "$file"; then
    return 1
  fi
  target=$(nsc_edit_target "$file")
  if ! nsc_writable_in_place "$target"; then
    nsc_log "warning: cannot remove '${line}' from ${file}$(nsc_describe_link "$file"): ${target} is not writable; remove that line from ${target} by hand"
    return 1
  fi
  { grep -vxF -- "$line" "$target" || true; } | nsc_rewrite_keep_attrs "$file"
  return 0
}

# nsc_is_nixos: true on NixOS.
nsc_is_nixos() { [ -e /etc/NIXOS ]; }

# nsc_has_systemd: true when systemd is the running init.
nsc_has_systemd() { [ -d /run/systemd/system ]; }

# nsc_has_openrc: true when OpenRC manages services.
nsc_has_openrc() { command -v rc-service >/dev/null 2>&1 && [ -d /run/openrc ]; }

# nsc_init_system: systemd, openrc, sysvinit (an /etc/init.d script manager) or none.
nsc_init_system() {
  if nsc_has_systemd; then
    echo systemd
  elif nsc_has_openrc; then
    echo openrc
  elif [ "$(cat /proc/1/comm 2>/dev/null)" = init ] && command -v service >/dev/null 2>&1; then
    echo sysvinit
  else
    echo none
  fi
}

# nsc_pid_alive PIDFILE: true when PIDFILE names a live process.
nsc_pid_alive() {
  local pid
  [ -r "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# --- processes found the way an administrator would: by what they listen on -----------------

# nsc_pids_holding INODE...: PIDs of the processes with an open fd on one of these sockets (one
# pass over /proc/*/fd; processes that come and go meanwhile are skipped).
nsc_pids_holding() {
  [ "$#" -gt 0 ] || return 0
  { find /proc/[0-9]*/fd -maxdepth 1 -lname 'socket:*' -printf '%h %l\n' 2>/dev/null || true; } |
    awk -v want=" $* " '{ gsub(/[^0-9]/, "", $2); if (index(want, " " $2 " ")) { split($1, p, "/"); print p[3] } }' |
    sort -un
}

# nsc_unix_listen_inodes PATH: inodes of the listening unix sockets bound to PATH.
nsc_unix_listen_inodes() {
  awk -v p="$1" 'NR > 1 && $NF == p && $4 == "00010000" {print $7}' /proc/net/unix 2>/dev/null
}

# nsc_tcp_listen_inodes: inodes of all listening TCP sockets (IPv4 and IPv6).
nsc_tcp_listen_inodes() {
  awk 'NR > 1 && $4 == "0A" && $10 != "0" {print $10}' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# nsc_socket_inodes_of PID: inodes of the sockets PID has open.
nsc_socket_inodes_of() {
  { find "/proc/$1/fd" -maxdepth 1 -lname 'socket:*' -printf '%l\n' 2>/dev/null || true; } | tr -dc '0-9\n' | sort -u
}

# nsc_masters PID...: those PIDs whose parent is not among them (the listener, not its children).
nsc_masters() {
  local pid ppid
  for pid in "$@"; do
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
    case " $* " in *" $ppid "*) ;; *) echo "$pid" ;; esac
  done
}

# nsc_sshd_listeners: PIDs of the sshd processes that hold a listening TCP socket.
nsc_sshd_listeners() {
  local listening pid inode
  listening=" $(nsc_tcp_listen_inodes | tr '\n' ' ') "
  grep -lx 'sshd' /proc/[0-9]*/comm 2>/dev/null | cut -d/ -f3 | while read -r pid; do
    for inode in $(nsc_socket_inodes_of "$pid"); do
      case "$listening" in *" $inode "*)
        echo "$pid"
        break
        ;;
      esac
    done
  done | sort -un
}

# nsc_listen_state PID...: "PID:INODE" for each listening TCP socket these PIDs hold; changes
# when an sshd re-executes itself on SIGHUP (it closes and re-opens its listening sockets).
nsc_listen_state() {
  local listening pid inode
  listening=" $(nsc_tcp_listen_inodes | tr '\n' ' ') "
  for pid in "$@"; do
    for inode in $(nsc_socket_inodes_of "$pid"); do
      case "$listening" in *" $inode "*) echo "$pid:$inode" ;; esac
    done
  done | sort | tr '\n' ' '
}

# nsc_sshd_config_of PID: the configuration file an sshd process reads (its -f, else the default).
# A running sshd overwrites its argv with a process title ("sshd: /usr/sbin/sshd -f CONFIG
# [listener] 0 of 10-100 startups"): then the words of the title before "[listener]" are read (a
# -f path with spaces in it cannot be told from the title).
nsc_sshd_config_of() {
  local -a argv=()
  local i
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && mapfile -d '' -t argv <"/proc/$1/cmdline"
  if [ "${#argv[@]}" = 1 ] && [[ ${argv[0]} == "sshd: "* ]]; then
    read -r -a argv <<<"${argv[0]#sshd: }"
  fi
  for ((i = 0; i < ${#argv[@]}; i++)); do
    case "${argv[i]}" in
    "[listener]" | "[accepted]") break ;;
    -f) [ $((i + 1)) -lt ${#argv[@]} ] && {
      echo "${argv[i + 1]}"
      return 0
    } ;;
    -f?*) echo "${argv[i]#-f}" && return 0 ;;
    esac
  done
  echo /etc/ssh/sshd_config
}

# nsc_sshd_bin: the sshd executable.
nsc_sshd_bin() { command -v sshd || echo /usr/sbin/sshd; }

# The configuration file nix-ssh-cache's sshd drop-ins (/etc/ssh/sshd_config.d) belong to.
NSC_SSHD_CONFIG=/etc/ssh/sshd_config

# nsc_sshd_config_path PID: the configuration an sshd process reads, as an absolute path with its
# symlinks resolved (a relative -f is relative to the process's working directory).
nsc_sshd_config_path() {
  local config
  config=$(nsc_sshd_config_of "$1")
  case "$config" in /*) ;; *) config="$(readlink "/proc/$1/cwd" 2>/dev/null || echo /)/$config" ;; esac
  readlink -f -- "$config" 2>/dev/null || printf '%s\n' "$config"
}

# nsc_sshd_ours: PIDs of the listening sshd processes (the listeners, not their per-connection
# children) that read nix-ssh-cache's configuration: their -f (or the default) is
# /etc/ssh/sshd_config. Another sshd beside it (an SFTP-only or rescue instance with its own -f
# config and port) is not ours and is left alone. When no listener reads /etc/ssh/sshd_config but
# exactly one sshd listens, that one (an sshd started with a -f of its own). Nothing when no sshd
# process listens (socket activation, or sshd not running).
nsc_sshd_ours() {
  local want pid
  local -a masters ours=()
  mapfile -t masters < <(nsc_sshd_listeners)
  [ "${#masters[@]}" -gt 0 ] || return 0
  mapfile -t masters < <(nsc_masters "${masters[@]}")
  want=$(readlink -f -- "$NSC_SSHD_CONFIG" 2>/dev/null || echo "$NSC_SSHD_CONFIG")
  for pid in "${masters[@]}"; do
    if [ "$(nsc_sshd_config_path "$pid")" = "$want" ]; then ours+=("$pid"); fi
  done
  if [ "${#ours[@]}" = 0 ] && [ "${#masters[@]}" = 1 ]; then ours=("${masters[0]}"); fi
  [ "${#ours[@]}" = 0 ] || printf '%s\n' "${ours[@]}"
}

# nsc_sshd_require_ours: fail when several sshd instances listen and none reads
# /etc/ssh/sshd_config (nix-ssh-cache cannot tell which one serves its user), naming each.
nsc_sshd_require_ours() {
  local pid list=""
  local -a masters
  [ -z "$(nsc_sshd_ours)" ] || return 0
  mapfile -t masters < <(nsc_sshd_listeners)
  [ "${#masters[@]}" -gt 1 ] || return 0
  mapfile -t masters < <(nsc_masters "${masters[@]}")
  for pid in "${masters[@]}"; do list+=" PID ${pid} reads $(nsc_sshd_config_path "$pid");"; done
  nsc_die "several sshd instances listen on $(hostname 2>/dev/null || echo 'this host') and none reads ${NSC_SSHD_CONFIG}:${list} nix-ssh-cache changes ${NSC_SSHD_CONFIG}.d and cannot tell which one serves its user. Run the serving sshd with -f ${NSC_SSHD_CONFIG} (or without -f), then run pulumi up again"
}

# nsc_sshd_our_config: the configuration file of our sshd (nsc_sshd_ours), else the default.
nsc_sshd_our_config() {
  local pid
  pid=$(nsc_sshd_ours | sed -n 1p)
  if [ -n "$pid" ]; then nsc_sshd_config_path "$pid"; else echo "$NSC_SSHD_CONFIG"; fi
}

# nsc_sshd_effective CONFIG USER: `sshd -T` for a connection of USER (what sshd would apply).
nsc_sshd_effective() {
  "$(nsc_sshd_bin)" -T -f "$1" -C "user=$2,host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=22" 2>&1
}

# nsc_systemd_unit_of PID: the systemd service whose cgroup holds PID (e.g. ssh.service), from
# /proc/PID/cgroup; nothing when PID runs outside a service (a login session, no systemd).
nsc_systemd_unit_of() {
  local unit
  unit=$(awk -F: '$1 == "0" || $2 == "name=systemd" {print $3}' "/proc/$1/cgroup" 2>/dev/null |
    tr '/' '\n' | grep -E '^[A-Za-z0-9@._:-]+\.service$' | sed -n 1p) || unit=""
  printf '%s' "$unit"
}

# nsc_systemd_prop UNIT PROPERTY: one property of a unit (`systemctl show -p`), e.g. MainPID.
nsc_systemd_prop() {
  systemctl show -p "$2" --value -- "$1" 2>/dev/null || true
}

# nsc_systemd_socket_activated UNIT: true when an active .socket unit starts UNIT (TriggeredBy):
# that socket stays with systemd, and UNIT's sshd got it from there (sd_listen_fds).
nsc_systemd_socket_activated() {
  local s
  for s in $(nsc_systemd_prop "$1" TriggeredBy); do
    case "$s" in *.socket) systemctl is-active --quiet -- "$s" 2>/dev/null && return 0 ;; esac
  done
  return 1
}

# nsc_reload_sshd: make the sshd that reads nix-ssh-cache's configuration (nsc_sshd_ours: the
# listener whose -f, or default, is /etc/ssh/sshd_config) re-read it, sessions surviving; another
# sshd beside it (its own -f config and port) is left alone. Found the way an administrator
# would:
# - systemd: the service whose cgroup holds that sshd: `systemctl restart` when it is
#   socket-activated (ssh.socket keeps the listening socket; an sshd re-executed by SIGHUP finds
#   no LISTEN_FDS, binds the port itself and dies: Debian 12), `systemctl reload` when the unit
#   has an ExecReload (Debian's ssh.service), else SIGHUP to its main PID (NixOS's sshd.service
#   has no ExecReload: `systemctl reload` is refused). No listening sshd but an active
#   ssh.socket/sshd.socket: nothing to do, the next connection starts an sshd that reads the new
#   configuration.
# - OpenRC / an init script, the PidFile of our configuration (`sshd -T -f`), our listener.
# Then proves it: our listener re-executed itself (new listening sockets), or after a restart the
# unit has a new main PID; else fails saying what to run.
nsc_reload_sshd() {
  local before now method="" unit="" pidfile="" pid i host config main_before="" main_now s
  local -a ours now_ours
  host=$(hostname 2>/dev/null || echo "this host")
  nsc_sshd_require_ours
  mapfile -t ours < <(nsc_sshd_ours)
  config=$(nsc_sshd_our_config)
  before=$(nsc_listen_state "${ours[@]}")
  if nsc_has_systemd; then
    if [ "${#ours[@]}" -gt 0 ]; then
      unit=$(nsc_systemd_unit_of "${ours[0]}")
      if [ -n "$unit" ] && ! systemctl is-active --quiet -- "$unit" 2>/dev/null; then unit=""; fi
    else
      for s in ssh.socket sshd.socket; do
        if systemctl is-active --quiet "$s" 2>/dev/null; then
          nsc_log "sshd is socket-activated (${s}) and no sshd process listens: the next connection starts one that reads the new configuration"
          return 0
        fi
      done
      for s in ssh.service sshd.service; do
        if systemctl is-active --quiet "$s" 2>/dev/null; then
          unit=$s
          break
        fi
      done
    fi
    if [ -n "$unit" ]; then
      if nsc_systemd_socket_activated "$unit"; then
        main_before=$(nsc_systemd_prop "$unit" MainPID)
        systemctl restart -- "$unit" >&2 || nsc_die "systemctl restart ${unit} failed on ${host}; check 'systemctl status ${unit}'"
        method="systemctl restart ${unit} (socket-activated: the socket stays with systemd)"
      elif [ "$(nsc_systemd_prop "$unit" CanReload)" = yes ]; then
        systemctl reload -- "$unit" >&2 || nsc_die "systemctl reload ${unit} failed on ${host}; check 'systemctl status ${unit}'"
        method="systemctl reload ${unit}"
      else
        pid=$(nsc_systemd_prop "$unit" MainPID)
        case "$pid" in "" | 0 | *[!0-9]*) pid=${ours[0]:-} ;; esac
        [ -n "$pid" ] || nsc_die "${unit} on ${host} has no ExecReload and no main process to send SIGHUP to; restart it (systemctl restart ${unit}) and run pulumi up again"
        kill -HUP "$pid"
        method="kill -HUP ${pid} (the main process of ${unit}, which has no ExecReload)"
      fi
    fi
  fi
  if [ -z "$method" ] && nsc_has_openrc; then
    for s in sshd ssh; do
      if rc-service --exists "$s" 2>/dev/null && rc-service "$s" status >/dev/null 2>&1; then
        rc-service "$s" reload >&2 || nsc_die "rc-service ${s} reload failed on ${host}"
        method="rc-service ${s} reload"
        break
      fi
    done
  fi
  if [ -z "$method" ] && ! nsc_has_systemd && command -v service >/dev/null 2>&1; then
    for s in ssh sshd; do
      if [ -x "/etc/init.d/$s" ] && service "$s" status >/dev/null 2>&1; then
        service "$s" reload >&2 || nsc_die "service ${s} reload failed on ${host}"
        method="service ${s} reload"
        break
      fi
    done
  fi
  if [ -z "$method" ]; then
    # the PidFile of our configuration, when it names our listener (or any sshd when none listens)
    pidfile=$("$(nsc_sshd_bin)" -T -f "$config" 2>/dev/null | awk '$1 == "pidfile" && !n++ {print $2}') || pidfile=""
    if [ -n "$pidfile" ] && [ "$pidfile" != none ] && nsc_pid_alive "$pidfile"; then
      pid=$(tr -dc '0-9' <"$pidfile")
      if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] &&
        { [ "${#ours[@]}" = 0 ] || [[ " ${ours[*]} " == *" $pid "* ]]; }; then
        kill -HUP "$pid"
        method="kill -HUP \$(cat ${pidfile})"
      fi
    fi
  fi
  if [ -z "$method" ] && [ "${#ours[@]}" -gt 0 ]; then
    kill -HUP "${ours[@]}"
    method="kill -HUP ${ours[*]} (the listening sshd that reads ${config})"
  fi
  [ -n "$method" ] ||
    nsc_die "cannot reload sshd on ${host}: no systemd or OpenRC unit or init script runs it, the PidFile of ${config} (${pidfile:-none}) names no live sshd, and no sshd process listens. Start sshd, then run pulumi up again"
  # Proof, for our sshd only: a restarted unit has a new main PID; a reloaded sshd re-executed
  # itself (its listening sockets are new).
  if [ -n "$main_before" ]; then
    for ((i = 0; i < 100; i++)); do
      main_now=$(nsc_systemd_prop "$unit" MainPID)
      if [ -n "$main_now" ] && [ "$main_now" != 0 ] && [ "$main_now" != "$main_before" ] &&
        systemctl is-active --quiet -- "$unit" 2>/dev/null; then
        nsc_log "reloaded sshd (${method}; main PID ${main_before} -> ${main_now})"
        return 0
      fi
      sleep 0.1
    done
    nsc_die "sshd on ${host} did not come back after '${method}' (${unit} has no new active main process within 10 s); check 'systemctl status ${unit}' and run pulumi up again"
  fi
  if [ -n "$before" ]; then
    for ((i = 0; i < 100; i++)); do
      mapfile -t now_ours < <(nsc_sshd_ours)
      now=$(nsc_listen_state "${now_ours[@]}")
      if [ -n "$now" ] && ! nsc_listen_state_overlap "$before" "$now"; then
        nsc_log "reloaded sshd (${method})"
        return 0
      fi
      sleep 0.1
    done
    nsc_die "sshd on ${host} did not reload after '${method}' (the listening sockets of the sshd that reads ${config}, PID ${ours[*]}, did not change within 10 s); reload it by hand (kill -HUP ${ours[*]}) and run pulumi up again"
  fi
  # No sshd process holds its own listening socket (e.g. socket activation): new connections
  # start an sshd that reads the new configuration.
  nsc_log "reloaded sshd (${method}; no listening sshd process to check)"
}

# nsc_listen_state_overlap BEFORE NOW: true when a "PID:INODE" pair is in both.
nsc_listen_state_overlap() {
  local w
  for w in $1; do
    case " $2 " in *" $w "*) return 0 ;; esac
  done
  return 1
}

# nsc_nix_daemon_socket_ok: true when the daemon socket accepts a connection and answers.
nsc_nix_daemon_socket_ok() {
  local out
  [ -S "$NSC_NIX_DAEMON_SOCKET" ] || return 1
  # (no `| grep -q`: with pipefail, grep's early exit makes the pipeline fail on SIGPIPE)
  out=$(timeout 10 nix-store --store daemon -q --hash /nix/store/00000000000000000000000000000000-nix-ssh-cache-probe 2>&1) || true
  [[ $out == *"is not valid"* ]]
}

# nsc_nix_daemon_pid: PID of the nix-daemon process listening on the daemon socket (the
# listener, not its per-connection children); nothing when no process listens there.
nsc_nix_daemon_pid() {
  local -a holders inodes
  local pid
  mapfile -t inodes < <(nsc_unix_listen_inodes "$NSC_NIX_DAEMON_SOCKET")
  [ "${#inodes[@]}" -gt 0 ] || return 0
  # not systemd, which holds the socket for socket activation (nix-daemon.socket)
  mapfile -t holders < <(nsc_pids_holding "${inodes[@]}" | while read -r pid; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] || echo "$pid"
  done)
  [ "${#holders[@]}" -gt 0 ] || return 0
  nsc_masters "${holders[@]}" | sed -n 1p
}

# nsc_nix_daemon_running: a systemd unit active, or a process listening on the daemon socket,
# or the socket answers.
nsc_nix_daemon_running() {
  if nsc_has_systemd && systemctl is-active --quiet nix-daemon.service 2>/dev/null; then
    return 0
  fi
  [ -n "$(nsc_nix_daemon_pid)" ] && return 0
  nsc_nix_daemon_socket_ok
}

# nsc_restart_nix_daemon: restart nix-daemon so it re-reads nix.conf, found the way an
# administrator would: systemd (service; an idle socket-activated daemon needs nothing), OpenRC /
# an init script, else the process listening on the daemon socket, started again with its own
# command line, environment, working directory and log file. Does nothing when no daemon runs
# (the next start reads the new configuration).
nsc_restart_nix_daemon() {
  local unit pid
  if nsc_has_systemd; then
    if systemctl is-active --quiet nix-daemon.service 2>/dev/null; then
      systemctl restart nix-daemon.service >&2 ||
        nsc_die "could not restart nix-daemon (systemctl restart nix-daemon failed); check 'systemctl status nix-daemon'"
      nsc_log "restarted nix-daemon (systemctl restart nix-daemon.service)"
      return 0
    fi
    if systemctl is-active --quiet nix-daemon.socket 2>/dev/null; then
      nsc_log "nix-daemon is socket-activated and idle: the next connection starts it with the new configuration"
      return 0
    fi
  fi
  unit=nix-daemon
  if nsc_has_openrc && rc-service --exists "$unit" 2>/dev/null && rc-service "$unit" status >/dev/null 2>&1; then
    rc-service "$unit" restart >&2 || nsc_die "rc-service ${unit} restart failed"
    nsc_log "restarted nix-daemon (rc-service ${unit} restart)"
    return 0
  fi
  if ! nsc_has_systemd && [ -x "/etc/init.d/$unit" ] && command -v service >/dev/null 2>&1 &&
    service "$unit" status >/dev/null 2>&1; then
    service "$unit" restart >&2 || nsc_die "service ${unit} restart failed"
    nsc_log "restarted nix-daemon (service ${unit} restart)"
    return 0
  fi
  pid=$(nsc_nix_daemon_pid)
  if [ -z "$pid" ]; then
    nsc_log "no nix-daemon is running: nothing to restart (its next start reads the new configuration)"
    return 0
  fi
  nsc_respawn_nix_daemon "$pid"
}

# nsc_respawn_nix_daemon PID: stop the nix-daemon PID and start it again as it was started:
# same executable and arguments (/proc/PID/cmdline, /proc/PID/exe), environment
# (/proc/PID/environ), working directory, and stdout/stderr file when it logged to one. A pid
# file naming PID (in /run or /var/run) is updated.
nsc_respawn_nix_daemon() {
  local old=$1 exe cwd log=/dev/null out new i f
  local -a argv envv
  mapfile -d '' -t argv <"/proc/$old/cmdline"
  mapfile -d '' -t envv <"/proc/$old/environ"
  [ "${#argv[@]}" -gt 0 ] || nsc_die "cannot read nix-daemon's command line (/proc/${old}/cmdline)"
  exe=$(readlink "/proc/$old/exe" 2>/dev/null) || exe=""
  case "$exe" in "" | *" (deleted)") exe=${argv[0]} ;; esac
  cwd=$(readlink "/proc/$old/cwd" 2>/dev/null) || cwd=/
  out=$(readlink "/proc/$old/fd/2" 2>/dev/null) || out=""
  case "$out" in /dev/* | "") ;; /*) [ -f "$out" ] && log=$out ;; esac
  kill -TERM "$old" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$old" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$old" 2>/dev/null; then
    kill -KILL "$old" 2>/dev/null || true
    sleep 0.2
  fi
  # close the lock fd (9): the daemon outlives this script
  (cd "$cwd" 2>/dev/null || cd /
  # shellcheck disable=SC2016 # expanded by the inner bash
  exec env -i "${envv[@]}" "$(command -v setsid)" "$(command -v bash)" -c 'exe=$1; shift; exec -a "$0" "$exe" "$@"' \
    "${argv[0]}" "$exe" "${argv[@]:1}" </dev/null >>"$log" 2>&1 9>&-) &
  for ((i = 0; i < 100; i++)); do
    new=$(nsc_nix_daemon_pid)
    if [ -n "$new" ] && [ "$new" != "$old" ] && nsc_nix_daemon_socket_ok; then break; fi
    new=""
    sleep 0.1
  done
  [ -n "$new" ] ||
    nsc_die "nix-daemon did not come back after its restart ($(printf '%q ' "${argv[@]}")); see ${log}; start it by hand and run pulumi up again"
  for f in /run/*.pid /run/*/*.pid /var/run/*.pid; do
    if [ ! -f "$f" ] || [ -L "$f" ] || [ "$(tr -dc '0-9' <"$f")" != "$old" ]; then continue; fi
    # never in a directory another user can write (e.g. /run/lock): not the daemon's pid file
    [ -z "$(nsc_unsafe_dir "$(dirname -- "$f")")" ] || continue
    printf '%s\n' "$new" | nsc_atomic_write "$f" "$(stat -c '%a' -- "$f")" "$(stat -c '%u:%g' -- "$f")"
  done
  nsc_log "restarted nix-daemon (pid ${old} -> ${new}, same command line and environment)"
}

# --- effective configuration ------------------------------------------------------------------
# What is in force, not what was written. nix.conf is read as Nix does (2.8, loadConfFile):
# ${NIX_CONF_DIR:-/etc/nix}/nix.conf with its `include`/`!include` files inline, then the user
# files (NIX_USER_CONF_FILES, else $XDG_CONFIG_DIRS/nix/nix.conf and $XDG_CONFIG_HOME/nix/nix.conf,
# the latter last), then NIX_CONFIG; `NAME = v` replaces, `extra-NAME = v` appends. The
# environment is nix-daemon's (/proc/PID/environ), the process whose configuration matters.
#
# A pending change can be checked before it is made: NSC_CONF_PENDING_PATH (a file) is read from
# NSC_CONF_PENDING_SRC instead, and NSC_CONF_PENDING_APPEND (a line) is read as if it were at the
# end of the main nix.conf.

# nsc_daemon_env NAME: NAME's value in nix-daemon's environment (root's defaults without one).
# (callers that ask several times set NSC_DAEMON_ENV_PID once: finding the daemon reads /proc)
nsc_daemon_env() {
  local pid=${NSC_DAEMON_ENV_PID-unset}
  [ "$pid" != unset ] || pid=$(nsc_nix_daemon_pid)
  if [ -n "$pid" ] && [ -r "/proc/$pid/environ" ]; then
    tr '\0' '\n' <"/proc/$pid/environ" | sed -n "s/^$1=//p" | sed -n 1p
  elif [ "$1" = HOME ]; then
    echo "$NSC_ROOT_HOME"
  fi
}

# _nsc_conf_line FILE LINENO TEXT SETTING DEPTH: one nix.conf line, as events (see below).
_nsc_conf_line() {
  local file=$1 n=$2 text=$3 setting=$4 depth=$5 inc
  local -a t
  text=${text%%#*}
  read -r -a t <<<"$text" || true
  [ "${#t[@]}" -ge 2 ] || return 0
  case "${t[0]}" in
  include | '!include')
    inc=${t[1]}
    case "$inc" in /*) ;; *) inc=$(dirname -- "$file")/$inc ;; esac
    _nsc_conf_file "$inc" "$setting" $((depth + 1))
    return 0
    ;;
  esac
  [ "${t[1]}" = "=" ] || return 0
  if [ "${t[0]}" = "$setting" ]; then
    printf 'set\t%s:%s\t%s\n' "$file" "$n" "${t[*]:2}"
  elif [ "${t[0]}" = "extra-$setting" ]; then
    printf 'extra\t%s:%s\t%s\n' "$file" "$n" "${t[*]:2}"
  fi
}

# _nsc_conf_file FILE SETTING DEPTH: events for SETTING from FILE and what it includes.
_nsc_conf_file() {
  local file=$1 setting=$2 depth=${3:-0} src=$1 n=0 text
  [ "$depth" -le 10 ] || return 0
  if [ -n "${NSC_CONF_PENDING_PATH:-}" ] && [ "$file" = "$NSC_CONF_PENDING_PATH" ]; then
    src=$NSC_CONF_PENDING_SRC
  fi
  if [ -f "$src" ] && [ -r "$src" ]; then
    while IFS= read -r text || [ -n "$text" ]; do
      n=$((n + 1))
      _nsc_conf_line "$file" "$n" "$text" "$setting" "$depth"
    done <"$src"
  fi
  if [ "$depth" = 0 ] && [ -n "${NSC_CONF_PENDING_APPEND:-}" ]; then
    _nsc_conf_line "$file" "$((n + 1)) (to be added)" "$NSC_CONF_PENDING_APPEND" "$setting" 0
  fi
}

# nsc_nix_conf_events SETTING: every line that sets SETTING, in the order Nix applies them:
# "set|extra<TAB>FILE:LINE<TAB>VALUES".
nsc_nix_conf_events() {
  local setting=$1 conf_dir user_files home xdg_home xdg_dirs nix_config f n=0 text
  local -a files=() dirs=()
  local NSC_DAEMON_ENV_PID
  NSC_DAEMON_ENV_PID=$(nsc_nix_daemon_pid)
  conf_dir=$(nsc_daemon_env NIX_CONF_DIR)
  _nsc_conf_file "${conf_dir:-/etc/nix}/nix.conf" "$setting" 0
  user_files=$(nsc_daemon_env NIX_USER_CONF_FILES)
  if [ -n "$user_files" ]; then
    IFS=: read -r -a files <<<"$user_files"
  else
    home=$(nsc_daemon_env HOME)
    xdg_home=$(nsc_daemon_env XDG_CONFIG_HOME)
    xdg_dirs=$(nsc_daemon_env XDG_CONFIG_DIRS)
    IFS=: read -r -a dirs <<<"${xdg_dirs:-/etc/xdg}"
    files=("${xdg_home:-${home:-$NSC_ROOT_HOME}/.config}/nix/nix.conf")
    for f in "${dirs[@]}"; do files+=("$f/nix/nix.conf"); done
  fi
  for ((n = ${#files[@]} - 1; n >= 0; n--)); do
    NSC_CONF_PENDING_APPEND="" _nsc_conf_file "${files[n]}" "$setting" 1
  done
  nix_config=$(nsc_daemon_env NIX_CONFIG)
  n=0
  while IFS= read -r text; do
    n=$((n + 1))
    _nsc_conf_line "NIX_CONFIG (nix-daemon's environment)" "$n" "$text" "$setting" 1
  done <<<"$nix_config"
}

# nsc_nix_conf_resolve SETTING: sets NSC_VALUES (the effective values), NSC_ORIGINS (FILE:LINE
# of each value, same order) and NSC_LAST_SET (FILE:LINE of the last plain `SETTING =` line).
nsc_nix_conf_resolve() {
  local op where values v
  NSC_VALUES=()
  NSC_ORIGINS=()
  NSC_LAST_SET=""
  while IFS=$'\t' read -r op where values; do
    if [ "$op" = set ]; then
      NSC_VALUES=()
      NSC_ORIGINS=()
      NSC_LAST_SET=$where
    fi
    for v in $values; do
      NSC_VALUES+=("$v")
      NSC_ORIGINS+=("$where")
    done
  done < <(nsc_nix_conf_events "$1")
}

# nsc_nix_conf_line_at FILE:LINE: the text of that line (for messages).
nsc_nix_conf_line_at() {
  local file=${1%%:*} n=${1#*:}
  n=${n%% *}
  if [ -r "$file" ] && [ -n "$n" ] && [ "$n" -eq "$n" ] 2>/dev/null; then
    sed -n "${n}p" -- "$file" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//'
  fi
}

# _nsc_require_effective SETTING VALUE...: every VALUE is in SETTING's effective values (as Nix
# reads the files), else fail naming the line that replaces ours and what to do.
_nsc_require_effective() {
  local setting=$1 v have conf_dir
  shift
  nsc_nix_conf_resolve "$setting"
  for v in "$@"; do
    for have in "${NSC_VALUES[@]}"; do [ "$have" = "$v" ] && continue 2; done
    if [ -n "$NSC_LAST_SET" ]; then
      nsc_die "${setting} in force on this host lacks ${v}: ${NSC_LAST_SET} ('$(nsc_nix_conf_line_at "$NSC_LAST_SET")') is read after nix-ssh-cache's setting and replaces it. Remove that line, or write it as extra-${setting} = ... so both apply, then run pulumi up again"
    fi
    conf_dir=$(nsc_daemon_env NIX_CONF_DIR)
    nsc_die "${setting} in force on this host lacks ${v}: nix-ssh-cache's nix.conf fragment is not read (nix-daemon reads ${conf_dir:-/etc/nix}/nix.conf: does it have the !include line?)"
  done
}

# _nsc_require_shown SETTING VALUE...: `nix show-config` run with nix-daemon's environment (what
# a daemon started now reads) lists every VALUE in SETTING.
_nsc_require_shown() {
  local setting=$1 shown v name
  local -a envv=()
  local NSC_DAEMON_ENV_PID
  NSC_DAEMON_ENV_PID=$(nsc_nix_daemon_pid)
  shift
  for name in NIX_CONF_DIR NIX_USER_CONF_FILES XDG_CONFIG_HOME XDG_CONFIG_DIRS HOME NIX_CONFIG; do
    v=$(nsc_daemon_env "$name")
    [ -n "$v" ] && envv+=("$name=$v")
  done
  shown=$(env -i PATH="$PATH" "${envv[@]}" nix --extra-experimental-features nix-command show-config 2>/dev/null |
    sed -n "s/^${setting} = //p") || shown=""
  for v in "$@"; do
    case " $shown " in *" $v "*) ;; *)
      nsc_die "nix show-config (with nix-daemon's environment) does not list ${v} in ${setting} (it shows '${shown}'); something outside nix.conf overrides it (NIX_CONFIG or NIX_CONF_DIR in nix-daemon's environment?)"
      ;;
    esac
  done
}

# nsc_check_signing_foreign PATTERN...: fail when the effective secret-key-files holds a key file
# matching none of the shell PATTERNs, naming the line that adds it (lines of nix-ssh-cache's
# own generated files are ours). Staging signs with nix-ssh-cache's keys only.
nsc_check_signing_foreign() {
  local i v p file
  nsc_nix_conf_resolve secret-key-files
  for ((i = 0; i < ${#NSC_VALUES[@]}; i++)); do
    v=${NSC_VALUES[i]}
    for p in "$@"; do
      # shellcheck disable=SC2254 # PATTERN is a glob on purpose
      case "$v" in $p) continue 2 ;; esac
    done
    file=${NSC_ORIGINS[i]%%:*}
    if [ -n "${NSC_CONF_PENDING_PATH:-}" ] && [ "$file" = "$NSC_CONF_PENDING_PATH" ]; then continue; fi
    if [ -r "$file" ] && [[ $(sed -n 1p -- "$file") == "# Generated by nix-ssh-cache"* ]]; then continue; fi
    nsc_die "${NSC_ORIGINS[i]} ('$(nsc_nix_conf_line_at "${NSC_ORIGINS[i]}")') already sets secret-key-files to ${v}: this host would sign with a key nix-ssh-cache does not manage (and fail every build if that file is missing). Remove that line (nix-ssh-cache configures secret-key-files itself), then run pulumi up again. Nothing was changed"
  done
}

# nsc_check_signing_effective KEYFILE...: staging signs with exactly these key files: each is in
# the effective secret-key-files (as the files read, and as `nix show-config` shows with
# nix-daemon's environment), and no other key is; else fail naming the file and line that win.
nsc_check_signing_effective() {
  nsc_check_signing_foreign "$@"
  _nsc_require_effective secret-key-files "$@"
  [ -n "${NSC_CONF_PENDING_PATH:-}${NSC_CONF_PENDING_APPEND:-}" ] || _nsc_require_shown secret-key-files "$@"
}

# nsc_check_substituter_effective URL PUBLIC_KEY...: production's effective substituters include
# URL and its trusted-public-keys include every PUBLIC_KEY (other values are kept); else fail
# naming the file and line that win.
nsc_check_substituter_effective() {
  local url=$1
  shift
  _nsc_require_effective substituters "$url"
  [ "$#" = 0 ] || _nsc_require_effective trusted-public-keys "$@"
  if [ -z "${NSC_CONF_PENDING_PATH:-}${NSC_CONF_PENDING_APPEND:-}" ]; then
    _nsc_require_shown substituters "$url"
    [ "$#" = 0 ] || _nsc_require_shown trusted-public-keys "$@"
  fi
}

# nsc_check_nix_fragment FILE: every setting of the nix.conf fragment FILE (`[extra-]NAME = v...`)
# is in force: secret-key-files through nsc_check_signing_effective, substituters and
# trusted-public-keys through nsc_check_substituter_effective.
nsc_check_nix_fragment() {
  local name eq rest
  local -a keyfiles=() subs=() keys=() words
  while read -r name eq rest; do
    [ "$eq" = "=" ] || continue
    read -r -a words <<<"$rest" || true
    case "${name#extra-}" in
    secret-key-files) keyfiles+=("${words[@]}") ;;
    substituters) subs+=("${words[@]}") ;;
    trusted-public-keys) keys+=("${words[@]}") ;;
    esac
  done < <(sed 's/#.*//' "$1")
  [ "${#keyfiles[@]}" = 0 ] || nsc_check_signing_effective "${keyfiles[@]}"
  local s
  for s in "${subs[@]}"; do nsc_check_substituter_effective "$s" "${keys[@]}"; done
  if [ "${#subs[@]}" = 0 ] && [ "${#keys[@]}" -gt 0 ]; then
    _nsc_require_effective trusted-public-keys "${keys[@]}"
  fi
}

# nsc_check_ssh_pin FRAGMENT: the ssh_config FRAGMENT's `Host NAME` settings (StrictHostKeyChecking,
# UserKnownHostsFile, Port) are what root's ssh really uses for NAME (`ssh -G NAME` as root, which
# reads root's ~/.ssh/config before /etc/ssh/ssh_config and keeps the first value), and no global
# known-hosts file accepts another key for NAME; else fail naming the overriding file.
nsc_check_ssh_pin() {
  local fragment=$1 host="" want_known="" want_port="" g key want value f lookup
  host=$(awk 'tolower($1) == "host" {print $2; exit}' "$fragment")
  [ -n "$host" ] || return 0
  want_known=$(awk 'tolower($1) == "userknownhostsfile" {print $2; exit}' "$fragment")
  want_port=$(awk 'tolower($1) == "port" {print $2; exit}' "$fragment")
  g=$(ssh -G "$host" 2>&1 </dev/null) || nsc_die "ssh -G ${host} failed as root: $(printf '%s' "$g" | tail -n 2 | tr '\n' ' ')"
  for key in stricthostkeychecking userknownhostsfile port; do
    case "$key" in
    stricthostkeychecking) want=true ;;
    userknownhostsfile) want=$want_known ;;
    port) want=${want_port:-22} ;;
    esac
    [ -n "$want" ] || continue
    value=$(printf '%s\n' "$g" | awk -v k="$key" '$1 == k && !n++ {$1 = ""; sub(/^ /, ""); print}')
    [ "$value" = "$want" ] && continue
    nsc_die "the pin of ${host}'s host key does not hold: root's ssh uses ${key} '${value}' for ${host} (ssh -G ${host}), not '${want}' from ${fragment}, because $(nsc_ssh_option_origin "$key" "$fragment") is read first and OpenSSH keeps the first value. Remove that line, or put a 'Host ${host}' block with 'StrictHostKeyChecking yes' and 'UserKnownHostsFile ${want_known}' before it, then run pulumi up again"
  done
  lookup=$host
  [ -z "$want_port" ] || [ "$want_port" = 22 ] || lookup="[$host]:$want_port"
  for f in $(printf '%s\n' "$g" | awk '$1 == "globalknownhostsfile" {$1 = ""; print}'); do
    [ -r "$f" ] || continue
    if ssh-keygen -F "$lookup" -f "$f" 2>/dev/null | grep -qv '^#'; then
      nsc_die "${f} (a global known-hosts file root's ssh reads) lists a host key for ${lookup}: ssh would accept that key besides the pinned one. Remove the entry (ssh-keygen -R '${lookup}' -f ${f}), then run pulumi up again"
    fi
  done
  nsc_log "checked: root's ssh uses StrictHostKeyChecking yes and ${want_known} for ${host}"
}

# nsc_ssh_option_origin KEYWORD FRAGMENT: where an ssh client option is set before FRAGMENT
# ("FILE line N ('TEXT')"): root's ~/.ssh/config, /etc/ssh/ssh_config, drop-ins sorted before ours.
nsc_ssh_option_origin() {
  local key=$1 fragment=$2 f hit
  local -a files=("$NSC_ROOT_HOME/.ssh/config")
  for f in /etc/ssh/ssh_config.d/*.conf; do
    [ "$f" = "$fragment" ] && break
    files+=("$f")
  done
  files+=(/etc/ssh/ssh_config)
  for f in "${files[@]}"; do
    [ -r "$f" ] || continue
    hit=$(grep -inE "^[[:space:]]*${key}([[:space:]]|=)" -- "$f" | sed -n 1p) || hit=""
    if [ -n "$hit" ]; then
      printf "%s line %s ('%s')" "$f" "${hit%%:*}" "$(printf '%s' "${hit#*:}" | sed 's/^[[:space:]]*//')"
      return 0
    fi
  done
  printf 'another setting (root'"'"'s ~/.ssh/config or /etc/ssh/ssh_config, or an Include they name)'
}

# nsc_unsafe_dir DIR: why a non-root user could change what DIR holds (nothing when none can):
# DIR is a symlink or not a directory, or DIR or a directory above it (through symlinks: the
# directory each path component resolves to, and every parent of DIR's real path) is not owned by
# root or is writable by its group or others (a sticky bit does not count: such a user could still
# add names there).
nsc_unsafe_dir() {
  local dir=$1 p prefix="" comp uid mode
  local -a check=() parts=()
  if [ -L "$dir" ]; then
    printf '%s is a symlink (to %s)' "$dir" "$(readlink -- "$dir")"
    return 0
  fi
  if [ ! -d "$dir" ]; then
    printf '%s is not a directory' "$dir"
    return 0
  fi
  check+=("$dir")
  # each directory the lexical path goes through, resolved (a symlinked component is replaceable
  # by whoever can write the directory it sits in)
  IFS=/ read -r -a parts <<<"${dir#/}"
  for comp in "${parts[@]}"; do
    check+=("$(readlink -f -- "${prefix:-/}")")
    prefix=$prefix/$comp
  done
  p=$(readlink -f -- "$dir")
  while :; do
    check+=("$p")
    [ "$p" = / ] && break
    p=$(dirname -- "$p")
  done
  for p in "${check[@]}"; do
    read -r uid mode < <(stat -c '%u %a' -- "$p") || {
      printf 'cannot stat %s' "$p"
      return 0
    }
    if [ "$uid" != 0 ]; then
      printf '%s is owned by %s, not root' "$p" "$(stat -c '%U' -- "$p")"
      return 0
    fi
    if (((8#$mode & 8#022) != 0)); then
      printf '%s is writable by its group or by others (mode %s)' "$p" "$mode"
      return 0
    fi
  done
}

# nsc_lock NAME: take an exclusive lock (fd 9) for the rest of the script, waiting up to 120 s.
# The lock files live in a root-only directory (/run/nix-ssh-cache, 0700 root:root; without
# /run, /var/lib/nix-ssh-cache/locks), never in the world-writable /run/lock: there any local
# user could hold our lock, or plant a symlink for root to open.
nsc_lock() {
  local dir=/run/nix-ssh-cache file problem
  if [ ! -d /run ] || [ -L /run ]; then dir=$NSC_STATE_DIR/locks; fi
  if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then
    mkdir -p -- "$(dirname -- "$dir")"
    mkdir -m 0700 -- "$dir" 2>/dev/null || [ -d "$dir" ] ||
      nsc_die "cannot create the lock directory ${dir}"
  fi
  problem=$(nsc_unsafe_dir "$dir")
  [ -z "$problem" ] ||
    nsc_die "the lock directory ${dir} is not root-only: ${problem}; remove ${dir} (nix-ssh-cache creates it again, 0700 root:root) and run pulumi up again"
  file=$dir/$1.lock
  # the directory is root's alone: nothing else can have put a symlink there, but say so if one is
  [ ! -L "$file" ] || nsc_die "${file} is a symlink (to $(readlink -- "$file")); remove it and run pulumi up again"
  exec 9>>"$file"
  flock -w 120 9 || nsc_die "another nix-ssh-cache run holds ${file} for over 120 s; retry later"
}

# nsc_signatures PATH [STORE-ARGS...]: PATH's signatures (NAME:BASE64), one a line.
# `nix path-info --sigs` prints `PATH  [ultimate] [ca:...] sig...` on 2.8.
nsc_signatures() {
  local path=$1
  shift
  nix --extra-experimental-features nix-command path-info "$@" --sigs "$path" 2>/dev/null |
    awk '{for (i = 2; i <= NF; i++) if ($i !~ /^ca:/ && $i ~ /^[^:]+:[A-Za-z0-9+\/]+=*$/) print $i}'
}

# nsc_make_parent DIR: create DIR (0755) and its missing parents, recording each one created.
nsc_make_parent() {
  local d=$1
  local -a missing=()
  while [ ! -d "$d" ]; do
    missing+=("$d")
    d=$(dirname -- "$d")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  mkdir -p -- "$1"
  for d in "${missing[@]}"; do nsc_ensure_line "$NSC_CREATED_DIRS" "$d" || true; done
}

# nsc_remove_created_parents DIR: delete DIR and its parents that a step created, while empty;
# then the record and the state directory once empty.
nsc_remove_created_parents() {
  local d=$1
  while [ -f "$NSC_CREATED_DIRS" ] && grep -qxF -- "$d" "$NSC_CREATED_DIRS"; do
    rmdir -- "$d" 2>/dev/null || break # not empty: another file still lives there
    nsc_remove_line "$NSC_CREATED_DIRS" "$d" || true
    nsc_log "deleted directory ${d} (created by nix-ssh-cache)"
    d=$(dirname -- "$d")
  done
  if [ -f "$NSC_CREATED_DIRS" ] && [ ! -s "$NSC_CREATED_DIRS" ]; then rm -f -- "$NSC_CREATED_DIRS"; fi
  rmdir -- "$NSC_STATE_DIR" 2>/dev/null || true
}
