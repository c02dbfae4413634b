#!/usr/bin/env bash
# host-services.sh: start and stop a test host's sshd and nix-daemon, inside the host, for every
# flavour. Processes are found the way an administrator would, by what they listen on (the
# /proc socket tables), not by pid files. Copied into the host as /run/nsc/host-services.sh.
# Usage: host-services.sh start-sshd|stop-sshd|sshd-pid|start-nix-daemon|stop-nix-daemon|nix-daemon-pid
# On a host whose PID 1 is systemd (systemd-* flavours), starting and stopping go through
# systemctl and the flavour's units (sshd_units, nix_daemon_units in /run/nsc/services.env).
set -euo pipefail
export PATH=/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
socket=/nix/var/nix/daemon-socket/socket
nix_daemon_cmd=nix-daemon
nix_daemon_pidfile=/run/nix-daemon.pid
sshd_units=""
nix_daemon_units=""
# shellcheck source=/dev/null
[ -r /run/nsc/services.env ] && source /run/nsc/services.env

# holders INODE...: PIDs with an fd on one of these sockets (one pass over /proc/*/fd).
holders() {
  [ "$#" -gt 0 ] || return 0
  { find /proc/[0-9]*/fd -maxdepth 1 -lname 'socket:*' -printf '%h %l\n' 2>/dev/null || true; } |
    awk -v want=" $* " '{ gsub(/[^0-9]/, "", $2); if (index(want, " " $2 " ")) { split($1, p, "/"); print p[3] } }' |
    sort -un
}

# sshd_config_of PID: the configuration an sshd process reads (its -f, else the default), also
# from the process title a running sshd puts over its argv ("sshd: /usr/sbin/sshd -f X [listener] ...").
sshd_config_of() {
  local -a argv=()
  local i
  mapfile -d '' -t argv <"/proc/$1/cmdline" 2>/dev/null || true
  if [ "${#argv[@]}" = 1 ] && [[ ${argv[0]} == "sshd: "* ]]; then read -r -a argv <<<"${argv[0]#sshd: }"; fi
  for ((i = 0; i < ${#argv[@]}; i++)); do
    case "${argv[i]}" in
    "[listener]") break ;;
    -f) echo "${argv[i + 1]:-}" && return 0 ;;
    -f?*) echo "${argv[i]#-f}" && return 0 ;;
    esac
  done
  echo /etc/ssh/sshd_config
}

# sshd_pids: the sshd processes holding a listening TCP socket that read /etc/ssh/sshd_config
# (the host's sshd on port 22; not another instance with its own -f, e.g. flavour second-sshd).
sshd_pids() {
  local -a inodes
  local pid
  mapfile -t inodes < <(awk 'NR > 1 && $4 == "0A" {print $10}' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [ "${#inodes[@]}" -gt 0 ] || return 0
  for pid in $(holders "${inodes[@]}"); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] && [ "$(sshd_config_of "$pid")" = /etc/ssh/sshd_config ]; then
      echo "$pid"
    fi
  done
}

# nix_daemon_pids: the processes holding the daemon socket's listening socket (not systemd, which
# holds it for socket activation).
nix_daemon_pids() {
  local -a inodes
  local pid
  mapfile -t inodes < <(awk -v p="$socket" 'NR > 1 && $NF == p && $4 == "00010000" {print $7}' /proc/net/unix)
  [ "${#inodes[@]}" -gt 0 ] || return 0
  for pid in $(holders "${inodes[@]}"); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != systemd ]; then echo "$pid"; fi
  done
}

# systemd: true when this host's PID 1 is systemd (and the flavour named its units).
systemd() { [ -d /run/systemd/system ] && [ -n "$sshd_units$nix_daemon_units" ]; }

# stop PID...: TERM, wait up to 5 s, then KILL.
stop() {
  local pid i alive
  [ "$#" -gt 0 ] || return 0
  kill "$@" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive=0
    for pid in "$@"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    [ "$alive" = 1 ] || return 0
    sleep 0.05
  done
  kill -9 "$@" 2>/dev/null || true
}

case "${1:-}" in
start-sshd)
  # shellcheck disable=SC2086 # a list of unit names
  if systemd; then systemctl start $sshd_units; else /usr/sbin/sshd -E /var/log/sshd.log; fi ;;
sshd-pid) sshd_pids | sed -n 1p ;;
stop-sshd)
  if systemd; then
    # shellcheck disable=SC2086 # a list of unit names
    systemctl stop $sshd_units
    exit 0
  fi
  mapfile -t pids < <(sshd_pids)
  stop "${pids[@]}"
  pidfile=$(/usr/sbin/sshd -T 2>/dev/null | awk '$1 == "pidfile" {print $2}') || pidfile=""
  if [ -n "$pidfile" ] && [ "$pidfile" != none ]; then rm -f "$pidfile"; fi
  ;;
start-nix-daemon)
  if systemd; then
    # shellcheck disable=SC2086 # a list of unit names
    systemctl start $nix_daemon_units
    exit 0
  fi
  # shellcheck disable=SC2086 # the command may carry arguments
  setsid $nix_daemon_cmd </dev/null >>/var/log/nix-daemon.log 2>&1 &
  if [ -n "$nix_daemon_pidfile" ]; then echo $! >"$nix_daemon_pidfile"; fi
  ;;
nix-daemon-pid) nix_daemon_pids | sed -n 1p ;;
stop-nix-daemon)
  if systemd; then
    # shellcheck disable=SC2086 # a list of unit names
    systemctl stop $nix_daemon_units
    exit 0
  fi
  mapfile -t pids < <(nix_daemon_pids)
  stop "${pids[@]}"
  if [ -n "$nix_daemon_pidfile" ]; then rm -f "$nix_daemon_pidfile"; fi
  rm -f "$socket"
  ;;
*)
  echo "usage: $0 start-sshd|stop-sshd|sshd-pid|start-nix-daemon|stop-nix-daemon|nix-daemon-pid" >&2
  exit 2
  ;;
esac
