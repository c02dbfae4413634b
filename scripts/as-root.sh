# shellcheck shell=bash
# Sourced by scripts/demo, scripts/test and scripts/bench: they need root (the test hosts are
# Linux namespaces with their own sshd, Nix store and /etc; set-up installs Debian packages).
#
#   nsc_as_root TAG SCRIPT [ARGS...]
#
# As root: returns, the script goes on. Otherwise, when sudo is installed: runs SCRIPT again as
# root through sudo (`sudo -H`: root's HOME, so npm's and the toolchain's caches stay root's),
# keeping the caller's PATH (Node.js and npm may live outside sudo's secure_path, e.g. under
# nvm) and the project's own settings (NSC_*, NIX_SSH_CACHE_*). A fresh minimal image is root
# without sudo, a workstation a user with sudo: `npm run demo` and `npm test` work on both.
# Not root and no sudo: exits 1 saying what to do.
nsc_as_root() {
  local tag=$1 script=$2 name
  shift 2
  [ "$(id -u)" -eq 0 ] && return 0
  if ! command -v sudo >/dev/null 2>&1; then
    printf '[%s] ERROR: needs root (the test hosts are Linux namespaces with their own sshd and Nix store), and sudo is not installed: run it as root, or install sudo\n' "$tag" >&2
    exit 1
  fi
  local keep=("PATH=$PATH")
  for name in $(compgen -e); do
    case $name in
      NSC_* | NIX_SSH_CACHE_*) keep+=("$name=${!name}") ;;
    esac
  done
  printf '[%s] not root: running %s again as root through sudo (the test hosts need root)\n' "$tag" "$script" >&2
  exec sudo -H -- env "${keep[@]}" bash "$script" "$@"
}
