# shellcheck shell=bash
# serve-user.sh (staging): the account production hosts log in as to run `nix-store --serve`.
# Inputs: ACTION=apply|remove, SERVE_USER (default nix-ssh).
# Output (apply):  {"user":"nix-ssh","created":bool,"unlocked":bool,"daemonRunning":true}
# Output (remove): {"user":"nix-ssh","removed":bool}

nsc_require_env ACTION
user=${SERVE_USER:-nix-ssh}
case "$user" in
[a-z_]*) ;;
*) nsc_die "serve user '${user}' is not a valid user name (e.g. nix-ssh)" ;;
esac
case "$user" in *[!a-z0-9_-]*) nsc_die "serve user '${user}' is not a valid user name (e.g. nix-ssh)" ;; esac
record=$NSC_STATE_DIR/created-users

nsc_lock serve-user

case "$ACTION" in
apply)
  created=false
  unlocked=false
  if ! getent passwd "$user" >/dev/null; then
    nsc_is_nixos && nsc_die "user ${user} does not exist on this NixOS host; it is created by nix.sshServe.enable in the NixOS module (rebuild first)"
    home=/var/empty
    if [ ! -d "$home" ]; then
      mkdir -p "$home"
      chmod 0555 "$home"
    fi
    useradd --system --home-dir "$home" --no-create-home --shell /bin/sh \
      --comment "Nix binary cache over SSH (nix-ssh-cache)" "$user" >&2 ||
      nsc_die "useradd ${user} failed; see the messages above"
    created=true
    nsc_ensure_line "$record" "$user" || true
    nsc_log "created user ${user}"
  fi
  # sshd refuses locked accounts ('!' in the password field) even for key logins without PAM
  pw=$(getent shadow "$user" | cut -d: -f2) || pw=""
  case "$pw" in
  '!'*)
    usermod -p '*' "$user" >&2 || nsc_die "usermod -p '*' ${user} failed; sshd refuses locked accounts"
    unlocked=true
    nsc_log "unlocked ${user} (password-less, key login only)"
    ;;
  esac
  shell=$(getent passwd "$user" | cut -d: -f7)
  case "$shell" in
  */nologin | */false | "")
    nsc_log "warning: ${user} has shell '${shell}'; sshd's ForceCommand runs through the login shell, so serving will fail (usermod -s /bin/sh ${user})"
    ;;
  esac
  if ! nsc_nix_daemon_running; then
    nsc_die "nix-daemon is not running on this host; nix-store --serve needs it. Start it (systemctl start nix-daemon) and run pulumi up again."
  fi
  printf '{"user":%s,"created":%s,"unlocked":%s,"daemonRunning":true}\n' "$(nsc_json_string "$user")" "$created" "$unlocked"
  ;;
remove)
  removed=false
  if [ -f "$record" ] && grep -qxF -- "$user" "$record"; then
    if getent passwd "$user" >/dev/null; then
      # systemd-logind keeps a user manager (user@UID.service) and /run/user/UID for 10 s after the
      # last session (UserStopDelaySec): userdel refuses while it runs, and its stop fails once the
      # user is gone. End them first, while the user still exists.
      uid=$(id -u -- "$user")
      if nsc_has_systemd && command -v loginctl >/dev/null 2>&1 && loginctl show-user "$uid" >/dev/null 2>&1; then
        loginctl terminate-user "$uid" >&2 || true
        for ((i = 0; i < 100; i++)); do
          systemctl show -p ActiveState --value "user@${uid}.service" "user-runtime-dir@${uid}.service" 2>/dev/null |
            grep -qvxE 'inactive|failed|' || break
          sleep 0.1
        done
        nsc_log "ended ${user}'s systemd-logind sessions and user manager"
      fi
      userdel "$user" >&2 || nsc_die "userdel ${user} failed (still logged in? see above); stop its sessions and run pulumi destroy again"
      removed=true
      nsc_log "deleted user ${user}"
    fi
    nsc_remove_line "$record" "$user" || true
    if [ ! -s "$record" ]; then rm -f -- "$record"; fi
    rmdir -- "$NSC_STATE_DIR" 2>/dev/null || true
  elif getent passwd "$user" >/dev/null; then
    nsc_log "kept user ${user}: nix-ssh-cache did not create it"
  fi
  printf '{"user":%s,"removed":%s}\n' "$(nsc_json_string "$user")" "$removed"
  ;;
*) nsc_die "internal error: ACTION must be apply or remove, got '${ACTION}'" ;;
esac
