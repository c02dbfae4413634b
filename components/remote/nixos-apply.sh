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

# Left-overs of the tutorial, found before any rebuild by evaluating the configuration the way
# NixOS does (`import <nixpkgs/nixos> { configuration = …; }`) and reading what `options` says
# of the definitions of each option concerned (definitionsWithLocations: the file of each
# definition that survived mkIf and priorities, its value as written, a mkForce inside kept).
# The line reported is the first line of that file that mentions the setting. Roles: staging
# when CHECK_SIGNING_KEYS is set, production when CHECK_SUBSTITUTER is. Without
# <nixpkgs/nixos> (NIX_PATH, else root's `nixos` channel) or when that evaluation fails, nothing
# is reported here and a failed rebuild's own message is explained below instead.
# shellcheck disable=SC2016 # Nix, not shell
leftovers_nix='
{ nixpkgs, configFile, module, staging, production }:
let
  inherit (builtins) any concatLists filter isAttrs isString map match substring;
  o = (import (nixpkgs + "/nixos") { configuration = /. + configFile; }).options;
  # the definitions a user wrote: neither the module nor the modules of NixOS itself
  mine = opt: filter (d: d.file != module && substring 0 11 d.file != "/nix/store/" && substring 0 9 d.file != "<nixpkgs>")
    (opt.definitionsWithLocations or [ ]);
  each = opt: f: concatLists (map f (mine opt));
  hit = kind: d: [ (kind + "|" + d.file) ];
  prop = v: if isAttrs v then v._type or "" else "";
  forced = v: let t = prop v; in
    (t == "override" && v.priority < 100) || (t == "if" && forced v.content) || (t == "merge" && any forced v.contents);
  sets = re: v: isString v && match "(.*\n)?[ \t]*(${re})[ \t]*=.*" v != null;
  keysFileLine = v: isString v && match "(.*\n)?[ \t]*[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Ee][Dd][Kk][Ee][Yy][Ss][Ff][Ii][Ll][Ee]([ \t=].*)?" v != null;
  has = n: d: isAttrs d.value && d.value ? ${n};
  forcedIn = n: each o.nix.settings (d: if has n d && forced d.value.${n} then hit "mkForce:${n}" d else [ ]);
in concatLists (
  (if staging then [
    (each o.nix.extraOptions (d: if sets "secret-key-files" d.value then hit "extraOptions:secret-key-files" d else [ ]))
    (each o.nix.settings (d: if has "secret-key-files" d && !forced d.value.secret-key-files then hit "settings:secret-key-files" d else [ ]))
    (forcedIn "secret-key-files")
    (each o.nix.sshServe.enable (hit "sshServe:enable"))
    (each o.nix.sshServe.keys (hit "sshServe:keys"))
    (each o.nix.sshServe.protocol (hit "sshServe:protocol"))
    (each o.nix.sshServe.write (hit "sshServe:write"))
    (each o.services.openssh.extraConfig (d: if keysFileLine d.value then hit "sshd:AuthorizedKeysFile" d else [ ]))
    (each o.services.openssh.settings (d: if has "AuthorizedKeysFile" d then hit "sshd:AuthorizedKeysFile" d else [ ]))
  ] else [ ])
  ++ (if production then [
    (each o.nix.extraOptions (d: if sets "substituters|trusted-public-keys" d.value then hit "extraOptions:substituters" d else [ ]))
    (forcedIn "substituters")
    (forcedIn "trusted-public-keys")
  ] else [ ])
  ++ [ (if o.nix.settings.highestPrio < 100 then each o.nix.settings (hit "mkForce:settings") else [ ]) ])
'

# nixos_channel: the nixpkgs that <nixpkgs/nixos> names here, or nothing
nixos_channel() {
  local p
  p=$(nix-instantiate --find-file nixpkgs/nixos 2>/dev/null) && [ -f "$p/default.nix" ] && {
    dirname -- "$p"
    return 0
  }
  for p in /nix/var/nix/profiles/per-user/root/channels/nixos /root/.nix-defexpr/channels/nixos; do
    [ -f "$p/nixos/default.nix" ] && {
      echo "$p"
      return 0
    }
  done
  return 1
}

# line_of FILE REGEX...: "FILE:LINE" of the first line of FILE matching the first REGEX that
# matches any (grep -E, any case); "FILE:?" when none does
line_of() {
  local file=$1 n=""
  shift
  for re in "$@"; do
    n=$(grep -niE -m 1 -- "$re" "$file" 2>/dev/null | cut -d: -f1) || true
    [ -z "$n" ] || break
  done
  echo "${file}:${n:-?}"
}

# leftover_text KIND FILE: where, what is wrong and the exact edit, one sentence
leftover_text() {
  local kind=$1 file=$2 name
  case "$kind" in
  extraOptions:secret-key-files)
    echo "$(line_of "$file" 'secret-key-files') sets secret-key-files in nix.extraOptions, which is appended to nix.conf after the module's nix.settings and wins (paths would be signed with that key, not the cache's): delete that line (the module sets nix.settings.secret-key-files)"
    ;;
  settings:secret-key-files)
    echo "$(line_of "$file" 'secret-key-files') defines nix.settings.secret-key-files beside the module's (a string conflicts with its list; a list adds a key staging signs with): delete that definition (the module sets nix.settings.secret-key-files)"
    ;;
  extraOptions:substituters)
    echo "$(line_of "$file" '(substituters|trusted-public-keys)[[:space:]]*=') sets substituters or trusted-public-keys in nix.extraOptions, which is appended to nix.conf after nix.settings and replaces the module's staging substituter: delete that line, or write it as nix.settings.substituters / nix.settings.trusted-public-keys (lists merge)"
    ;;
  mkForce:settings)
    echo "$(line_of "$file" 'nix\.settings[[:space:]]*=.*mk(Force|Override)' 'settings[[:space:]]*=.*mk(Force|Override)' 'mk(Force|Override)') forces the whole of nix.settings (lib.mkForce): NixOS then drops every other definition, the module's included: remove lib.mkForce there (nix.settings merges across modules)"
    ;;
  mkForce:*)
    name=${kind#mkForce:}
    echo "$(line_of "$file" "${name}.*mk(Force|Override)" "${name}[[:space:]]*=" "${name}") defines nix.settings.${name} with lib.mkForce: NixOS then drops every other definition, the module's included (its value would silently be gone): write the plain list instead, e.g.  nix.settings.${name} = [ … ];  (lists merge)"
    ;;
  sshServe:keys)
    echo "$(line_of "$file" 'sshServe\.keys' 'sshServe[[:space:]]*=' '(^|[^.a-z])keys[[:space:]]*=') defines nix.sshServe.keys: NixOS accepts it but sshd never reads those keys for nix-ssh (the module's AuthorizedKeysFile for nix-ssh replaces /etc/ssh/authorized_keys.d/nix-ssh), so they would stop working silently: delete that definition and give each production host to nix-ssh-cache instead (its key is then authorised)"
    ;;
  sshServe:*)
    name=${kind#sshServe:}
    echo "$(line_of "$file" "sshServe\\.${name}" 'sshServe[[:space:]]*=' "(^|[^.a-z])${name}[[:space:]]*=") defines nix.sshServe.${name}, which the module sets: delete that definition"
    ;;
  sshd:AuthorizedKeysFile)
    echo "$(line_of "$file" 'AuthorizedKeysFile') sets AuthorizedKeysFile in services.openssh: the module's Match block sets nix-ssh's, and sshd takes the first value it reads for a user: delete that line, or set the global list with services.openssh.authorizedKeysFiles"
    ;;
  *) echo "${file}: ${kind}" ;;
  esac
}

# check_leftovers: fails naming every left-over, before anything is rebuilt
check_leftovers() {
  local channel staging=false production=false out kind file
  local -a found=()
  [ -n "${CHECK_SIGNING_KEYS:-}" ] && staging=true
  [ -n "${CHECK_SUBSTITUTER:-}" ] && production=true
  [ "$staging" = true ] || [ "$production" = true ] || return 0
  if ! channel=$(nixos_channel); then
    nsc_log "no <nixpkgs/nixos> here (NIX_PATH, root's nixos channel): configuration.nix is not checked for left-overs before the rebuild"
    return 0
  fi
  if ! out=$(nix-instantiate --readonly-mode --eval --strict -E "$leftovers_nix" \
    --argstr nixpkgs "$channel" --argstr configFile "$config" --argstr module "$module" \
    --arg staging "$staging" --arg production "$production" 2>&1); then
    nsc_log "could not evaluate ${config} to look for left-overs (nixos-rebuild will say why): $(printf '%s' "$out" | grep -m 1 'error:' || true)"
    return 0
  fi
  # a list of "KIND|FILE" strings: [ "a|/etc/nixos/x.nix" "b|…" ]
  while IFS= read -r item; do
    [ -n "$item" ] || continue
    kind=${item%%|*}
    file=${item#*|}
    found+=("$(leftover_text "$kind" "$file")")
  done < <(printf '%s\n' "$out" | tr -d '[]' | grep -oE '"[^"]*"' | tr -d '"' | awk '!seen[$0]++')
  [ "${#found[@]}" -eq 0 ] && return 0
  local msg="" i=1
  for item in "${found[@]}"; do
    msg+="${msg:+; }(${i}) ${item}"
    i=$((i + 1))
  done
  nsc_die "your NixOS configuration has left-overs that conflict with ${module} (nothing was rebuilt): ${msg}"
}

rebuilt=false
checked=false
if [ "$rebuild" != none ]; then
  check_leftovers
  nsc_log "running nixos-rebuild ${rebuild}"
  rebuild_log=$(mktemp)
  trap 'rm -f "${edited:-}" "$rebuild_log"' EXIT
  if ! nixos-rebuild "$rebuild" </dev/null 2>&1 | tee "$rebuild_log" >&2; then
    # NixOS: "The option `a.b' is defined multiple times ..." (older: "The unique option ...";
    # newer: "... has conflicting definition values")
    # older: "is defined multiple times"; current: "has conflicting definition values",
    # "A definition for option `a.b' is not of type `…'", "The option `a.b' does not exist"
    option=$(sed -n \
      -e "s/.*option \`\([^']*\)' \(is defined multiple times\|has conflicting definition values\).*/\1 conflict/p" \
      -e "s/.*A definition for option \`\([^']*\)' is not of type.*/\1 type/p" \
      -e "s/.*The option \`\([^']*\)' does not exist.*/\1 missing/p" "$rebuild_log" | head -n 1)
    if [ -n "$option" ]; then
      what=${option##* }
      option=${option% *}
      # a list element's location: nix.settings.x."[definition 1-entry 1]" names nix.settings.x
      option=${option%%.\"\[definition*}
      where=$(mentions "$(printf '%s' "${option##*.}" | tr -d '"')")
      case "$what" in
      conflict) nsc_die "nixos-rebuild ${rebuild} failed: the option ${option} is defined multiple times, by ${module} and by your configuration${where:+ (${where})}; remove your own definition (e.g. the tutorial's ${option} left in configuration.nix): the module sets it (the configuration is left as is)" ;;
      type) nsc_die "nixos-rebuild ${rebuild} failed: a definition of the option ${option} has the wrong type${where:+ (${where})}; fix or remove it (the configuration is left as is)" ;;
      missing) nsc_die "nixos-rebuild ${rebuild} failed: the option ${option} does not exist in this NixOS${where:+ (${where})}; remove that definition (an option of another NixOS release?; the configuration is left as is)" ;;
      esac
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
