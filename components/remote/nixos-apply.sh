# shellcheck shell=bash
# nixos-apply.sh (NixOS only): make configuration.nix import the rendered module, then rebuild.
# Inputs: MODULE_PATH (default /etc/nixos/nix-ssh-cache.nix), REBUILD=switch|boot|none (default
#   switch), ADD_IMPORT=0|1 (default 0), NIXOS_CONFIG (default /etc/nixos/configuration.nix),
#   after `switch` the configuration in force is checked: CHECK_SIGNING_KEYS (staging: key files,
#   space-separated, must be in secret-key-files), CHECK_SUBSTITUTER + CHECK_PUBLIC_KEYS
#   (production: the URL must be a substituter, the keys trusted).
# Output: {"rebuilt":bool,"importAdded":bool,"checked":bool}
#
# ADD_IMPORT=1 edits configuration.nix (through a symlink, to its target; never replacing the link)
# once (idempotent: nothing happens when the module's file
# name already appears in it): the module path is put right after the first `[` following the
# first `imports =`; without an `imports` attribute, the line `imports = [ <path> ];` is put
# after the first line that is only `{` (the start of the module's attribute set). The path is
# `./<name>` when the module sits beside configuration.nix, else absolute. The edit is checked
# with `nix-instantiate --parse` and undone when it does not parse.

module=${MODULE_PATH:-/etc/nixos/nix-ssh-cache.nix}
rebuild=${REBUILD:-switch}
config=${NIXOS_CONFIG:-/etc/nixos/configuration.nix}
case "$rebuild" in switch | boot | none) ;; *) nsc_die "internal error: REBUILD must be switch, boot or none, got '${rebuild}'" ;; esac
nsc_is_nixos || nsc_die "this host is not NixOS (/etc/NIXOS is missing); use the plain-Linux configuration instead"
[ -f "$config" ] || nsc_die "${config} does not exist; is this host managed with /etc/nixos (flakes are not supported: import ${module} in your flake's modules instead)"
[ -f "$module" ] || nsc_die "internal error: ${module} does not exist (write the module before nixos-apply)"

name=$(basename -- "$module")
# A symlinked configuration.nix is read from its target's directory (Nix follows the link for
# relative paths): then the import is absolute.
if [ "$(dirname -- "$module")" = "$(dirname -- "$config")" ] && [ ! -L "$config" ]; then ref=./$name; else ref=$module; fi
added=false

nsc_lock nixos-apply
if ! grep -qF -- "$name" "$config"; then
  if [ "${ADD_IMPORT:-0}" != 1 ]; then
    nsc_die "${config} does not import ${module}; add it to imports, e.g.  imports = [ ${ref} ];  (or set addImport: true)"
  fi
  # never replace a symlink: edit its target, or change nothing and say what to add there
  target=$(nsc_edit_target "$config")
  nsc_writable_in_place "$target" ||
    nsc_die "${config}$(nsc_describe_link "$config") cannot be edited (${target} is not writable: read-only filesystem or managed by another tool); nothing was changed. Add ${ref} to the imports of ${target} yourself, e.g.  imports = [ ${ref} ];"
  edited=$(mktemp)
  trap 'rm -f "$edited"' EXIT
  awk -v ref="$ref" '
    done == 0 && seen == 0 && /^[ \t]*imports[ \t]*=/ { seen = 1 }
    done == 0 && seen == 1 && index($0, "[") > 0 {
      i = index($0, "["); $0 = substr($0, 1, i) " " ref substr($0, i + 1); done = 1
    }
    { print }
  ' "$config" >"$edited"
  if ! grep -qF -- "$ref" "$edited"; then
    awk -v ref="$ref" '
      done == 0 && /^[ \t]*\{[ \t]*$/ { print; print "  imports = [ " ref " ]; # added by nix-ssh-cache"; done = 1; next }
      { print }
    ' "$config" >"$edited"
  fi
  grep -qF -- "$ref" "$edited" ||
    nsc_die "could not find where to add the import in ${config}; add it by hand:  imports = [ ${ref} ];"
  if command -v nix-instantiate >/dev/null 2>&1 && ! nix-instantiate --parse "$edited" >/dev/null 2>&1; then
    nsc_die "adding the import would break ${config} (it does not parse); add it by hand:  imports = [ ${ref} ];"
  fi
  nsc_rewrite_keep_attrs "$config" <"$edited"
  added=true
  nsc_log "added ${ref} to the imports of ${config}"
fi

# mentions WORD: "FILE:LINE: TEXT" of the lines of the NixOS configuration (the .nix files under
# configuration.nix's directory, this module excluded) that contain WORD, `; `-separated.
mentions() {
  { grep -rnF --include='*.nix' -- "$1" "$(dirname -- "$config")" 2>/dev/null || true; } |
    { grep -vF -- "${module}:" || true; } | head -n 5 | sed 's/:\([0-9][0-9]*\):[[:space:]]*/:\1: /' |
    paste -sd ';' - | sed 's/;/; /g'
}

rebuilt=false
checked=false
if [ "$rebuild" != none ]; then
  nsc_log "running nixos-rebuild ${rebuild}"
  rebuild_log=$(mktemp)
  trap 'rm -f "${edited:-}" "$rebuild_log"' EXIT
  if ! nixos-rebuild "$rebuild" </dev/null 2>&1 | tee "$rebuild_log" >&2; then
    # NixOS: "The option `a.b' is defined multiple times ..." (older: "The unique option ...";
    # newer: "... has conflicting definition values")
    option=$(sed -n "s/.*option \`\([^']*\)' \(is defined multiple times\|has conflicting definition values\).*/\1/p" "$rebuild_log" | head -n 1)
    if [ -n "$option" ]; then
      where=$(mentions "${option##*.}")
      nsc_die "nixos-rebuild ${rebuild} failed: the option ${option} is defined multiple times, by ${module} and by your configuration${where:+ (${where})}; remove your own definition (e.g. the tutorial's ${option} left in configuration.nix): the module sets it (the configuration is left as is)"
    fi
    nsc_die "nixos-rebuild ${rebuild} failed; see its messages above (the configuration is left as is)"
  fi
  rebuilt=true
fi

# After a switch, what is in force must be what the module says: a setting in nix.extraOptions
# (the tutorial put secret-key-files there) is appended after nix.settings and wins.
check() {
  local setting=$1 msg where
  shift
  if ! msg=$( ("$@") 2>&1); then
    case "$msg" in *trusted-public-keys*) setting=trusted-public-keys ;; esac
    msg=${msg#nix-ssh-cache: }
    # nix.conf is generated here: the fix is in the configuration, not in that file
    msg=${msg%%. Remove that line*}
    where=$(mentions "$setting")
    nsc_die "after nixos-rebuild ${rebuild}: ${msg}. nix.conf is generated on NixOS: the line comes from your configuration${where:+ (${where})}; remove it there (a left-over of the tutorial? nix.extraOptions is appended after the module's nix.settings and wins)"
  fi
}
if [ "$rebuild" = switch ]; then
  if [ -n "${CHECK_SIGNING_KEYS:-}" ]; then
    read -r -a keys <<<"$CHECK_SIGNING_KEYS"
    check secret-key-files nsc_check_signing_effective "${keys[@]}"
    checked=true
  fi
  if [ -n "${CHECK_SUBSTITUTER:-}" ]; then
    read -r -a keys <<<"${CHECK_PUBLIC_KEYS:-}"
    check substituters nsc_check_substituter_effective "$CHECK_SUBSTITUTER" "${keys[@]}"
    checked=true
  fi
fi
printf '{"rebuilt":%s,"importAdded":%s,"checked":%s}\n' "$rebuilt" "$added" "$checked"
