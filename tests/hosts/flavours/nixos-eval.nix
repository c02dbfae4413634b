# A small stand-in for the NixOS module system, for tests only (no nixpkgs here).
#
# Evaluates `configuration` (a configuration.nix) with its `imports` and merges the definitions
# the way the NixOS options concerned do:
#   - lists (listOf: substituters, trusted-public-keys, secret-key-files, sshServe.keys,
#     authorizedKeys.keys, knownHosts.<n>.hostNames) are concatenated;
#   - `lines` options (programs.ssh.extraConfig, nix.extraOptions, services.openssh.extraConfig)
#     are joined with "\n";
#   - attribute sets are merged recursively;
#   - any other value may be defined more than once only with equal values, else evaluation
#     fails with NixOS's message: "The option `a.b' is defined multiple times while it's
#     expected to be unique.", naming the files.
# Definitions of an imported module come before the importing module's (imports first, depth
# first, each file once), as in the nixpkgs module system. Modules get stub arguments
# (`config`, `lib`, `pkgs`, `options` are empty sets): a configuration that reads them does not
# evaluate here.
#
# Result: { config = <merged attribute set>; files = { "<path>" = "<text>"; ... };
#           users = { <name> = { authorizedKeys = [ ... ]; }; }; }
# `files` renders what NixOS would put in /etc from the options the cache uses (nix.conf from
# nix.settings + nix.extraOptions, ssh_config from programs.ssh.extraConfig + a generated
# `Host *`, ssh_known_hosts from programs.ssh.knownHosts, the sshd Match block of
# nix.sshServe + services.openssh.extraConfig, authorized_keys.d/<user>).
{ configuration, baseNixConf ? "" }:
let
  inherit (builtins)
    all attrNames concatLists concatMap concatStringsSep elem filter foldl' groupBy head
    isAttrs isBool isFunction isInt isList isPath isString length mapAttrs tail toJSON;

  stubArgs = { config = { }; lib = { }; pkgs = { }; options = { }; modulesPath = "/"; };
  load = m: if isFunction m then m stubArgs else m;
  isFile = m: isPath m || isString m;

  # Leaves (non-attribute-set values) of a module's body, with their option path.
  leaves = file: path: value:
    if isAttrs value then concatMap (n: leaves file (path ++ [ n ]) value.${n}) (attrNames value)
    else [{ inherit file path value; }];

  # acc = { seen = [ file... ]; defs = [ def... ] }; imports are collected before the module.
  collect = acc: { module, file }:
    if isFile module && elem (toString module) acc.seen then acc
    else
      let
        name = if isFile module then toString module else file;
        body = load (if isFile module then import module else module);
        imports = map (m: { module = m; file = "${name} (an inline import)"; }) (body.imports or [ ]);
        withImports = foldl' collect (acc // { seen = acc.seen ++ [ name ]; }) imports;
        own = removeAttrs body [ "imports" ];
        # a module written as { config = { ... }; } (options are not declared here)
        defs = if own ? config && !(own ? nix || own ? programs || own ? services || own ? users)
          then own.config else own;
      in
      withImports // { defs = withImports.defs ++ leaves name [ ] defs; };

  defs = (collect { seen = [ ]; defs = [ ]; } { module = configuration; file = toString configuration; }).defs;

  linesOptions = [
    [ "programs" "ssh" "extraConfig" ]
    [ "nix" "extraOptions" ]
    [ "services" "openssh" "extraConfig" ]
  ];
  mergeDefs = ds:
    let
      path = (head ds).path;
      values = map (d: d.value) ds;
    in
    if all isList values then concatLists values
    else if elem path linesOptions && all isString values then concatStringsSep "\n" values
    else if all (v: v == head values) values then head values
    else throw ("The option `${concatStringsSep "." path}' is defined multiple times while it's expected to be unique.\n\nDefinition values:\n"
      + concatStringsSep "\n" (map (d: "- In `${d.file}': ${toJSON d.value}") ds));

  setAttrByPath = path: value:
    if path == [ ] then value else { ${head path} = setAttrByPath (tail path) value; };
  recursiveUpdate = a: b:
    a // mapAttrs (n: v: if isAttrs v && isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v) b;

  config = foldl'
    (acc: ds: recursiveUpdate acc (setAttrByPath (head ds).path (mergeDefs ds)))
    { }
    (map (k: (groupBy (d: toJSON d.path) defs).${k}) (attrNames (groupBy (d: toJSON d.path) defs)));

  get = path: default:
    let go = p: v: if p == [ ] then v else if isAttrs v && v ? ${head p} then go (tail p) v.${head p} else default;
    in go path config;

  # nix.conf as NixOS renders it (nixos/modules/config/nix.nix): settings sorted by name, lists
  # space-separated, then extraOptions (so a setting there wins: Nix keeps the last value).
  confValue = v:
    if isList v then concatStringsSep " " (map confValue v)
    else if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else toString v;
  settings = get [ "nix" "settings" ] { };
  nixConf = concatStringsSep "\n" (filter (x: x != "") [
    "# WARNING: this file is generated from the nix.* options in /etc/nixos/configuration.nix"
    "# (by the test hosts' nixos-rebuild stand-in). Do not edit it!"
    baseNixConf
    (concatStringsSep "\n" (map (n: "${n} = ${confValue settings.${n}}") (attrNames settings)))
    (get [ "nix" "extraOptions" ] "")
  ]) + "\n";

  sshServe = get [ "nix" "sshServe" ] { };
  serveEnabled = sshServe.enable or false;
  forceCommand =
    if (sshServe.protocol or "ssh") == "ssh-ng" then "nix-daemon --stdio"
    else "nix-store --serve" + (if sshServe.write or false then " --write" else "");
  # nixos/modules/services/misc/nix-ssh-serve.nix
  serveMatch = ''
    Match User nix-ssh
      AllowAgentForwarding no
      AllowTcpForwarding no
      PermitTTY no
      PermitTunnel no
      X11Forwarding no
      ForceCommand ${forceCommand}
    Match All
  '';
  sshdExtra = concatStringsSep "\n" (filter (x: x != "") [
    (if serveEnabled then serveMatch else "")
    (get [ "services" "openssh" "extraConfig" ] "")
  ]);
  sshdConfig = ''
    # Generated by the test hosts' nixos-rebuild stand-in from services.openssh and nix.sshServe.
    AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u
    ${sshdExtra}
  '';

  # nixos/modules/programs/ssh.nix: extraConfig first, then the generated `Host *`.
  sshConfig = ''
    # Custom options from `extraConfig`, to override generated options
    ${get [ "programs" "ssh" "extraConfig" ] ""}

    # Generated options from other settings
    Host *
    GlobalKnownHostsFile /etc/ssh/ssh_known_hosts
  '';
  knownHosts = get [ "programs" "ssh" "knownHosts" ] { };
  knownHostsText = concatStringsSep "" (map
    (n: "${concatStringsSep "," (knownHosts.${n}.hostNames or [ n ])} ${knownHosts.${n}.publicKey}\n")
    (attrNames knownHosts));

  userKeys = mapAttrs (n: u: u.openssh.authorizedKeys.keys or [ ]) (get [ "users" "users" ] { })
    // (if serveEnabled then { nix-ssh = (get [ "users" "users" "nix-ssh" "openssh" "authorizedKeys" "keys" ] [ ]) ++ (sshServe.keys or [ ]); } else { });
in
{
  inherit config;
  serve = { enable = serveEnabled; };
  users = mapAttrs (n: keys: { authorizedKeys = keys; }) userKeys;
  files = {
    "/etc/nix/nix.conf" = nixConf;
    "/etc/ssh/sshd_config.d/50-nixos.conf" = sshdConfig;
    "/etc/ssh/ssh_config" = sshConfig;
    "/etc/ssh/ssh_known_hosts" = knownHostsText;
  } // builtins.listToAttrs (map (n: { name = "/etc/ssh/authorized_keys.d/${n}"; value = concatStringsSep "" (map (k: k + "\n") userKeys.${n}); }) (attrNames userKeys));
}
