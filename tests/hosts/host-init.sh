#!/usr/bin/env bash
# PID 1 of one test host. Started by tests/hosts/harness.ts as
#   unshare --pid --fork --kill-child --mount --propagation private --mount-proc --uts \
#     bash tests/hosts/host-init.sh
# Inputs (environment):
#   NSC_STATE        this host's state dir (outer path), e.g. /tmp/nsc-hosts-XXXX/stage
#   NSC_NAME         short name ("stage"); NSC_FQDN: "stage.test"
#   NSC_ADDRESS      loopback address sshd listens on (127.0.0.2, ...)
#   NSC_LOGIN_USER   "root" or a user name to create with password-less sudo
#   NSC_ROOT_KEY     1: root gets /root/.ssh/id_ed25519; 0: root has no SSH key
#   NSC_NIX_DAEMON   1: run nix-daemon; 0: don't
#   NSC_RUNNER_PUB   file with the runner's public key (goes to authorized_keys)
#   NSC_HOSTS_FILE   file with the /etc/hosts content for every host
#   NSC_LOGIN_SHELL  optional: sh|bash|zsh|fish, the login user's shell (default bash)
#   NSC_SUDO_POLICY  optional: nopasswd|requiretty|use_pty (default nopasswd)
#   NSC_SECURE_PATH  optional: sudo's secure_path (default: Debian's)
#   NSC_HOST_DIR     absolute path of tests/hosts (flavours/, host-services.sh; copied into the
#                    host's /run/nsc before the mounts, as a checkout under /tmp is hidden then)
#   NSC_FLAVOURS     space-separated flavours: tests/hosts/flavours/<name>.sh, sourced inside the
#                    host after users and Nix dirs are set up, before services start
# Inside the host (no systemd), by default ("today's" flavour):
#   sshd:       pid in /run/sshd.pid, log /var/log/sshd.log; reload = kill -HUP "$(cat /run/sshd.pid)"
#   nix-daemon: pid in /run/nix-daemon.pid, log /var/log/nix-daemon.log
# Flavours change that as real servers differ (no pid files, Nix only in a profile, ...). The
# harness starts and stops services with /run/nsc/host-services.sh (copied from tests/hosts),
# which finds them the way an administrator would (by what they listen on), for every flavour.
set -euo pipefail

: "${NSC_STATE:?}" "${NSC_NAME:?}" "${NSC_FQDN:?}" "${NSC_ADDRESS:?}" "${NSC_LOGIN_USER:?}"
: "${NSC_ROOT_KEY:?}" "${NSC_NIX_DAEMON:?}" "${NSC_RUNNER_PUB:?}" "${NSC_HOSTS_FILE:?}" "${NSC_HOST_DIR:?}"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022

log() { printf '[host-init %s %s] %s\n' "$NSC_NAME" "$(date +%T.%3N)" "$*"; }
trap 'log "FAILED (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

S=$NSC_STATE

# --- Phase 1: prepare this host's state dirs (outer paths, before any mount) ---
log "preparing state in $S"
mkdir -p "$S"
cp -a /etc "$S/etc"
log "etc copied"
rm -f "$S"/etc/ssh/ssh_host_*
mkdir -p "$S/etc/ssh/sshd_config.d"
cat >"$S/etc/ssh/sshd_config.d/00-test-host.conf" <<EOF
# Test host $NSC_FQDN (written by tests/hosts/host-init.sh)
ListenAddress $NSC_ADDRESS:22
PidFile /run/sshd.pid
PasswordAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
EOF
cp "$NSC_HOSTS_FILE" "$S/etc/hosts"
echo "$NSC_FQDN" >"$S/etc/hostname"
printf '\n# test host: no network, no substituters\nsubstituters =\n' >>"$S/etc/nix/nix.conf"

install -d -m 0755 "$S/nix" "$S/var-lib" "$S/var-log" "$S/run" "$S/home" "$S/usr-local-sbin"
install -d -m 0700 "$S/root" "$S/root/.ssh"
install -d -m 1777 "$S/tmp" "$S/var-tmp"
install -m 0600 "$NSC_RUNNER_PUB" "$S/root/.ssh/authorized_keys"
# The harness's own files go into the host's /run/nsc: the checkout may live under /tmp (a CI
# clone), which the host's own /tmp hides once mounted.
install -d -m 0755 "$S/run/nsc"
# init.log, seen from inside (a hard link): systemd's console when it is this host's PID 1
if [ -f "$S/init.log" ]; then ln -f "$S/init.log" "$S/run/nsc/console"; fi
install -m 0755 "$NSC_HOST_DIR/host-services.sh" "$S/run/nsc/host-services.sh"
cp -a "$NSC_HOST_DIR/flavours" "$S/run/nsc/flavours"
runner_pub=$(cat "$NSC_RUNNER_PUB")

# --- Phase 2: bind the host's own dirs over the machine's (/tmp last: the sources live there) ---
mount --bind "$S/etc" /etc
mount --bind "$S/nix" /nix
mount --bind "$S/root" /root
mount --bind "$S/var-lib" /var/lib
mount --bind "$S/var-log" /var/log
mount --bind "$S/var-tmp" /var/tmp
mount --bind "$S/run" /run
mount --bind "$S/home" /home
# its own, empty /usr/local/sbin: nix-ssh-cache installs the closure fetcher there, and two test
# runs at once (or two hosts of one run) must not replace or delete each other's
mount --bind "$S/usr-local-sbin" /usr/local/sbin
mount --bind "$S/tmp" /tmp
cd /
hostname "$NSC_FQDN"
NSC_HOST_DIR=/run/nsc # host-services.sh and flavours/, copied above
log "mounted"

# exec_systemd: replace this script by systemd as the namespace's PID 1 (systemd-* flavours), the
# way systemd-nspawn starts a container: a private /dev (tmpfs with the device nodes a server
# needs, its own devpts; /dev/console is init.log), the host's own cgroup2 tree at
# /sys/fs/cgroup (the harness put this namespace into a cgroup of its own and a cgroup
# namespace), its own empty /usr/local/sbin, and /sys, /proc/sys and the machine's root
# read-only: only the host's own bind mounts stay writable, so systemd's boot units (e.g.
# systemd-tmpfiles' `D /tmp`, which empties /tmp) never reach the machine. `container=` is set.
# It boots multi-user.target with only the units the flavour enabled; units that touch the kernel
# or machine-wide state (sysctl, binfmt, modules, clock, tmpfiles, fstab, timers) are masked in
# the host's own /etc.
exec_systemd() {
  local unit target wants dev=/run/nsc/dev node
  # units: nothing the machine's /etc enabled; only what the flavour enables
  rm -rf /etc/systemd/system/*.wants /etc/systemd/system/default.target
  for unit in systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service \
    systemd-tmpfiles-clean.service systemd-tmpfiles-clean.timer systemd-sysctl.service \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
    systemd-modules-load.service kmod-static-nodes.service systemd-timesyncd.service \
    systemd-pstore.service systemd-random-seed.service systemd-repart.service \
    systemd-firstboot.service systemd-sysusers.service systemd-machine-id-commit.service \
    systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-update-utmp.service \
    systemd-update-utmp-runlevel.service systemd-journald-audit.socket systemd-journal-flush.service \
    dev-hugepages.mount dev-mqueue.mount sys-kernel-config.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount sys-fs-fuse-connections.mount getty.target console-getty.service \
    systemd-ask-password-wall.path systemd-ask-password-console.path timers.target \
    cryptsetup.target veritysetup.target integritysetup.target remote-fs.target; do
    ln -sfn /dev/null "/etc/systemd/system/$unit"
  done
  ln -sfn /dev/null /etc/systemd/system/systemd-remount-fs.service
  printf '# test host %s: no file systems to mount (tests/hosts/host-init.sh)\n' "$NSC_FQDN" >/etc/fstab
  ln -sfn /lib/systemd/system/multi-user.target /etc/systemd/system/default.target
  for unit in $systemd_enable; do
    case $unit in *.socket) target=sockets.target ;; *) target=multi-user.target ;; esac
    wants=/etc/systemd/system/$target.wants
    install -d -m 0755 "$wants"
    if [ -e "/etc/systemd/system/$unit" ]; then
      ln -sfn "/etc/systemd/system/$unit" "$wants/$unit"
    else
      ln -sfn "/lib/systemd/system/$unit" "$wants/$unit"
    fi
  done
  # /dev: a tmpfs with the nodes a server needs, its own devpts, /dev/console = init.log
  install -d -m 0755 "$dev"
  mount -t tmpfs -o mode=0755,nosuid,size=1m nsc-dev "$dev"
  for node in null zero full random urandom tty; do
    touch "$dev/$node"
    mount --bind "/dev/$node" "$dev/$node"
  done
  install -d -m 0755 "$dev/pts" "$dev/shm" "$dev/mqueue"
  chmod 1777 "$dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 nsc-devpts "$dev/pts"
  ln -s pts/ptmx "$dev/ptmx"
  ln -s /proc/self/fd "$dev/fd"
  ln -s /proc/self/fd/0 "$dev/stdin"
  ln -s /proc/self/fd/1 "$dev/stdout"
  ln -s /proc/self/fd/2 "$dev/stderr"
  touch "$dev/console"
  mount --bind /run/nsc/console "$dev/console"
  mount --move "$dev" /dev
  # /run: a tmpfs, as systemd expects (systemd-user-runtime-dir refuses to remove /run/user/UID
  # from a disk file system), holding what this script put into the host's /run so far
  mount -t tmpfs -o mode=0755,nosuid,nodev,size=64m nsc-run /tmp/.nsc-run 2>/dev/null ||
    { install -d -m 0700 /tmp/.nsc-run && mount -t tmpfs -o mode=0755,nosuid,nodev,size=64m nsc-run /tmp/.nsc-run; }
  cp -a /run/. /tmp/.nsc-run/
  mount --move /tmp/.nsc-run /run
  rmdir /tmp/.nsc-run
  # cgroup2: this namespace's own subtree (the harness made it its root)
  mount -t cgroup2 -o nsdelegate nsc-cgroup /sys/fs/cgroup
  # /usr/local/sbin: the host's own, empty (where nix-ssh-cache installs its closure fetcher)
  install -d -m 0755 /run/nsc/usr-local-sbin
  mount --bind /run/nsc/usr-local-sbin /usr/local/sbin
  # the kernel's and the machine's state stay out of reach
  mount -o remount,bind,ro /sys
  mount --bind /proc/sys /proc/sys
  mount -o remount,bind,ro /proc/sys
  if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
  fi
  mount -o remount,bind,ro /
  log "exec systemd (enabled: $systemd_enable)"
  trap - ERR
  exec env -i container=nsc-test-host LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --show-status=no --log-target=console --log-level=notice
}

# --- Phase 3: users, keys, nix, services (inside the host's view) ---
# Fresh host key. Only ed25519 (RSA generation costs ~1 s CPU per host); sshd quietly skips
# its other default HostKey files when they are missing.
ssh-keygen -q -t ed25519 -N '' -C "root@$NSC_FQDN" -f /etc/ssh/ssh_host_ed25519_key
log "host key generated"
install -d -m 0755 /run/sshd

if [[ $NSC_ROOT_KEY == 1 ]]; then
  ssh-keygen -q -t ed25519 -N '' -C "root@$NSC_FQDN" -f /root/.ssh/id_ed25519
fi

login_shell=$(command -v "${NSC_LOGIN_SHELL:-bash}")
grep -qx "$login_shell" /etc/shells || echo "$login_shell" >>/etc/shells
if [[ $NSC_LOGIN_USER == root ]]; then
  usermod -s "$login_shell" root
else
  u=$NSC_LOGIN_USER
  useradd -m -s "$login_shell" "$u"
  usermod -p '*' "$u" # not locked: key login works, no password login
  install -d -m 0700 -o "$u" -g "$u" "/home/$u/.ssh"
  printf '%s\n' "$runner_pub" >"/home/$u/.ssh/authorized_keys"
  chown "$u:$u" "/home/$u/.ssh/authorized_keys"
  chmod 0600 "/home/$u/.ssh/authorized_keys"
  {
    printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$u"
    case ${NSC_SUDO_POLICY:-nopasswd} in
      nopasswd) ;;
      requiretty) printf 'Defaults requiretty\n' ;;
      use_pty) printf 'Defaults use_pty\n' ;;
      *) log "unknown NSC_SUDO_POLICY ${NSC_SUDO_POLICY}" && exit 1 ;;
    esac
    if [[ -n ${NSC_SECURE_PATH:-} ]]; then
      printf 'Defaults secure_path="%s"\n' "$NSC_SECURE_PATH"
    fi
  } >"/etc/sudoers.d/$u"
  chmod 0440 "/etc/sudoers.d/$u"
  visudo -cq
fi
log "login user $NSC_LOGIN_USER: shell $login_shell, sudo ${NSC_SUDO_POLICY:-nopasswd}${NSC_SECURE_PATH:+, secure_path $NSC_SECURE_PATH}"

# Nix: /nix starts empty.
install -d -m 0755 /nix/var /nix/var/nix /nix/var/log /nix/var/log/nix
install -d -m 1775 -o root -g nixbld /nix/store
install -d -m 0755 /nix/var/nix/db /nix/var/nix/gcroots /nix/var/nix/profiles \
  /nix/var/nix/temproots /nix/var/nix/userpool /nix/var/nix/daemon-socket
install -d -m 1777 /nix/var/nix/gcroots/per-user /nix/var/nix/profiles/per-user

log "users and nix dirs done"

# How services start; a flavour may change these (and edit files such as the sshd drop-in).
# shellcheck disable=SC2034 # read by host-services.sh through /run/nsc/services.env
nix_daemon_cmd=nix-daemon          # command that starts nix-daemon
nix_daemon_pidfile=/run/nix-daemon.pid # "" = no pid file (a daemon started by hand)
host_init=script     # "systemd": a systemd-* flavour makes systemd this host's PID 1
systemd_enable=""    # systemd: units enabled (multi-user.target or sockets.target wants them)
sshd_units=""        # systemd: the units that run sshd (host-services.sh starts/stops them)
nix_daemon_units=""  # systemd: the units that run nix-daemon
for flavour in ${NSC_FLAVOURS:-}; do
  # shellcheck source=/dev/null
  source "$NSC_HOST_DIR/flavours/$flavour.sh"
  log "flavour $flavour applied"
done
printf 'nix_daemon_cmd=%q\nnix_daemon_pidfile=%q\nsshd_units=%q\nnix_daemon_units=%q\n' \
  "$nix_daemon_cmd" "$nix_daemon_pidfile" "$sshd_units" "$nix_daemon_units" >/run/nsc/services.env

if [[ $host_init == systemd ]]; then
  /usr/sbin/sshd -t
  exec_systemd # does not return: systemd becomes this namespace's PID 1
fi

/usr/sbin/sshd -t
bash /run/nsc/host-services.sh start-sshd
log "sshd started on $NSC_ADDRESS:22 (pid $(bash /run/nsc/host-services.sh sshd-pid))"

if [[ $NSC_NIX_DAEMON == 1 ]]; then
  bash /run/nsc/host-services.sh start-nix-daemon
  log "nix-daemon started ($nix_daemon_cmd, pid file: ${nix_daemon_pidfile:-none})"
fi

# --- Phase 4: stay as the namespace's child reaper ---
# bash reaps every child (also re-parented orphans) while it waits. On TERM/INT: stop
# everything in the namespace; when PID 1 exits the kernel SIGKILLs whatever is left.
shutdown() {
  log "shutting down"
  kill -TERM -1 2>/dev/null || true
  sleep 0.2
  exit 0
}
trap shutdown TERM INT HUP
log "ready"
while :; do
  sleep 3600 &
  wait $! || true
done
