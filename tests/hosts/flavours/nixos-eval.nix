# A stand-in for the NixOS module system, for tests only (no nixpkgs on the test machines).
#
# Written from what nixpkgs' lib/modules.nix, lib/types.nix and lib/options.nix do (read with
# the library's search tool; nothing is copied), restricted to the options nix-ssh-cache and
# its tests touch. Where the real thing surprises, this follows it:
#   - module collection: `imports` are walked breadth first with builtins.genericClosure, each
#     module once by key (a file's path, or "<parent>:anon-<n>"), base modules before
#     configuration.nix, and the list is then REVERSED (collectModules + `reverseList collected`
#     in evalModules): an imported module's definitions come before the importing file's, the
#     last import of a list first, NixOS's own modules last;
#   - a submodule option (`nix.settings`, `services.openssh.settings`, each
#     `programs.ssh.knownHosts.<n>`, `users.users.<n>`) evaluates its definitions as modules of
#     a nested evalModules, which reverses them again (types.submoduleWith + evalModules): there
#     the importing file's definitions come first. So `nix.settings.substituters` is the user's,
#     then ours, then nix.nix's `mkAfter [ "https://cache.nixos.org/" ]`, while a `lines`
#     option such as `services.openssh.extraConfig` is ours, then the user's, then NixOS's;
#   - properties (mergeDefinitions): mkIf/mkMerge discharged (dischargeProperties, after
#     pushDownProperties at attribute-set level), then only the definitions of the highest
#     priority kept (filterOverrides: mkForce 50, plain 100, mkDefault 1000, option default
#     1500), then mkBefore/mkOrder/mkAfter sorted, stably (sortProperties);
#   - types: `check` of every remaining definition first ("A definition for option `x' is not
#     of type `<description>'. Definition values: ..."), then the type's merge: listOf
#     concatenates (each element merged on its own, `[definition n-entry m]`), lines joins with
#     "\n", bool/str/enum/int need equal values ("The option `x' has conflicting definition
#     values: ..." of mergeEqualOption), `either` takes the branch every definition fits or
#     else needs a single definition ("The option `x' is defined multiple times while it's
#     expected to be unique." of mergeUniqueOption);
#   - a definition no option declares: "The option `x' does not exist. Definition values: ..."
#     (evalModules' checkUnmatched), unless a freeformType takes it (nix.settings'
#     semanticConfType, services.openssh.settings);
#   - `options.<path>` carries value, definitions, files, definitionsWithLocations,
#     highestPrio and isDefined as in evalOptionValue, so code that inspects a user's
#     configuration through `options` works the same here and on a real NixOS.
# The NixOS modules themselves are small stand-ins written here (nix.nix, nix-ssh-serve.nix,
# sshd.nix, programs/ssh.nix, users-groups.nix), each declaring only the options listed in it.
# Not modelled: disabledModules, _module.args/specialArgs beyond `config options lib pkgs
# modulesPath`, readOnly, apply, renamed options, the defaults of nix.settings' declared
# options (the host's own nix.conf stands for them), anything else NixOS does.
#
# `configuration` is a configuration.nix (a path). `result` selects what is returned:
#   "build" (default): { config; files; serve; users; } — JSON-safe; `files` is what NixOS
#      would put in /etc from the options above. The test hosts have no network: nix.conf as
#      written here leaves out nix.nix's cache.nixos.org substituter and key (they stay in
#      `config`), so that a build on a test host does not try to reach it.
#   "nixos": { config; options; } — what `import <nixpkgs/nixos> { }` gives on NixOS.
{ configuration, baseNixConf ? "", result ? "build" }:
let
  inherit (builtins)
    all any attrNames concatLists concatMap concatStringsSep elem elemAt filter foldl' genericClosure
    head isAttrs isBool isFloat isFunction isInt isList isPath isString length listToAttrs
    mapAttrs match replaceStrings sort split tail toJSON typeOf;

  # ---- small helpers (lib/lists.nix, lib/attrsets.nix, lib/strings.nix)
  imap1 = f: list: builtins.genList (n: f (n + 1) (elemAt list n)) (length list);
  reverseList = l: builtins.genList (n: elemAt l (length l - n - 1)) (length l);
  last = l: elemAt l (length l - 1);
  take = n: l: builtins.genList (i: elemAt l i) (if n < length l then n else length l);
  setAttrByPath = path: value: if path == [ ] then value else { ${head path} = setAttrByPath (tail path) value; };
  recursiveUpdate = a: b:
    a // mapAttrs (n: v: if isAttrs v && isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v) b;
  zipDefs = defsList: builtins.zipAttrsWith (n: vs: concatLists vs) defsList;
  isOption = x: isAttrs x && (x._type or "") == "option";

  # ---- lib/options.nix: showOption, showDefs (a short toPretty)
  showPart = p:
    if elem p [ "<name>" "*" "<function body>" ] || match "[a-zA-Z_][a-zA-Z0-9_'-]*" p != null then p
    else toJSON p;
  showOption = loc: concatStringsSep "." (map showPart loc);
  # lib/generators.nix toPretty: a string of several lines as an indented '' string
  prettyString = indent: v:
    let
      lines = filter isString (split "\n" v);
      escaped = map (replaceStrings [ "\${" "''" ] [ "''\${" "'''" ]) lines;
      lastLine = last escaped;
      firsts = take (length escaped - 1) escaped;
    in
    if length lines < 2 then toJSON v
    else "''" + concatStringsSep "" (map (l: "\n${indent}  " + l) firsts)
      + (if lastLine == "" then "\n${indent}" else "\n${indent}  " + lastLine) + "''";
  pretty = indent: v:
    if isString v then prettyString indent v
    else if isBool v then (if v then "true" else "false")
    else if isInt v || isFloat v then toString v
    else if v == null then "null"
    else if isPath v then toString v
    else if isFunction v then "<function>"
    else if isList v then
      (if v == [ ] then "[ ]" else "[\n" + concatStringsSep "" (map (x: "${indent}  ${pretty "${indent}  " x}\n") v) + "${indent}]")
    else if isAttrs v then
      (if (v._type or "") == "override" then "<mkOverride ${toString v.priority}> " + pretty indent v.content
       else if v == { } then "{ }"
       else "{\n" + concatStringsSep "" (map (n: "${indent}  ${showPart n} = ${pretty "${indent}  " v.${n}};\n") (attrNames v)) + "${indent}}")
    else "<${typeOf v}>";
  showDefs = defs: concatStringsSep "" (map (def:
    let
      lines = filter isString (split "\n" (pretty "" def.value));
      shown = concatStringsSep "\n    " (take 5 lines ++ (if length lines > 5 then [ "..." ] else [ ]));
    in "\n- In `${def.file}'" + (if length lines > 1 then ":\n    " + shown else ": " + shown)) defs);
  prioritySuggestion = "\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.\n";

  # ---- lib/modules.nix: properties
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOrder = priority: content: { _type = "order"; inherit priority content; };
  mkOptionDefault = mkOverride 1500;
  lib = builtins // {
    inherit mkIf mkMerge mkOverride mkOrder mkOptionDefault;
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    filterAttrs = pred: set: listToAttrs (concatMap (n: if pred n set.${n} then [{ name = n; value = set.${n}; }] else [ ]) (attrNames set));
  };

  typeOfProp = v: if isAttrs v then v._type or "" else "";
  # pushDownProperties: mkMerge/mkIf/mkOverride at attribute-set level pushed into the attributes
  pushDown = cfg:
    let t = typeOfProp cfg; in
    if t == "merge" then concatMap pushDown cfg.contents
    else if t == "if" then map (mapAttrs (n: v: mkIf cfg.condition v)) (pushDown cfg.content)
    else if t == "override" then map (mapAttrs (n: v: mkOverride cfg.priority v)) (pushDown cfg.content)
    else [ cfg ];
  # dischargeProperties: mkMerge expanded, mkIf evaluated
  discharge = def:
    let t = typeOfProp def; in
    if t == "merge" then concatMap discharge def.contents
    else if t == "if" then
      (if !isBool def.condition then throw "‘mkIf’ called with a non-Boolean condition"
       else if def.condition then discharge def.content else [ ])
    else [ def ];
  prioOf = def: if typeOfProp def.value == "override" then def.value.priority else 100;
  # filterOverrides': the definitions of the highest (numerically lowest) priority
  filterOverrides = defs:
    let highestPrio = foldl' (p: d: let q = prioOf d; in if q < p then q else p) 9999 defs; in {
      inherit highestPrio;
      values = concatMap (d: if prioOf d == highestPrio then [ (if typeOfProp d.value == "override" then d // { value = d.value.content; } else d) ] else [ ]) defs;
    };
  # sortProperties: mkOrder priorities (default 1000), stable (builtins.sort is stable)
  sortProperties = defs:
    let
      strip = d: if typeOfProp d.value == "order" then d // { value = d.value.content; inherit (d.value) priority; } else d;
    in sort (a: b: (a.priority or 1000) < (b.priority or 1000)) (map strip defs);

  # mergeDefinitions
  mergeDefinitions = loc: type: defs: rec {
    discharged = concatMap (d: map (value: { inherit (d) file; inherit value; }) (discharge d.value)) defs;
    overridden = filterOverrides discharged;
    defsFinal = if any (d: typeOfProp d.value == "order") overridden.values then sortProperties overridden.values else overridden.values;
    highestPrio = overridden.highestPrio;
    isDefined = defsFinal != [ ];
    mergedValue =
      if !isDefined then throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option."
      else if all (d: type.check d.value) defsFinal then type.merge loc defsFinal
      else throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs (filter (d: !type.check d.value) defsFinal)}";
    optionalValue = if isDefined then { value = mergedValue; } else { };
  };

  # ---- lib/types.nix (the types used here)
  mergeEqualOption = loc: defs:
    if length defs == 1 then (head defs).value
    else (foldl' (first: def:
      if def.value != first.value
      then throw "The option `${showOption loc}' has conflicting definition values:${showDefs [ first def ]}${prioritySuggestion}"
      else first) (head defs) (tail defs)).value;
  mergeOneOption = loc: defs:
    if length defs == 1 then (head defs).value
    else throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.\n\nDefinition values:${showDefs defs}${prioritySuggestion}";
  phrase = ok: t: if elem (t.descriptionClass or null) ok then t.description else "(${t.description})";
  mkType = t: { descriptionClass = "noun"; } // t;
  types = rec {
    anything = mkType { name = "anything"; description = "anything"; check = x: true; merge = mergeEqualOption; };
    bool = mkType { name = "bool"; description = "boolean"; check = isBool; merge = mergeEqualOption; };
    int = mkType { name = "int"; description = "signed integer"; check = isInt; merge = mergeEqualOption; };
    float = mkType { name = "float"; description = "floating point number"; check = isFloat; merge = mergeEqualOption; };
    str = mkType { name = "str"; description = "string"; check = isString; merge = mergeEqualOption; };
    singleLineStr = mkType {
      name = "singleLineStr"; description = "(optionally newline-terminated) single-line string";
      check = x: isString x && match "[^\n\r]*\n?" x != null;
      merge = loc: defs: let v = mergeEqualOption loc defs; in
        if match ".*\n" v != null then builtins.substring 0 (builtins.stringLength v - 1) v else v;
    };
    path = mkType { name = "path"; description = "path"; check = x: (isPath x || isString x) && builtins.substring 0 1 (toString x) == "/"; merge = mergeEqualOption; };
    package = mkType { name = "package"; description = "package"; check = x: isAttrs x && x ? outPath; merge = mergeOneOption; };
    lines = mkType {
      name = "separatedString"; description = "strings concatenated with \"\\n\"";
      check = isString; merge = loc: defs: concatStringsSep "\n" (map (d: d.value) defs);
    };
    enum = values: mkType {
      name = "enum"; descriptionClass = "conjunction";
      description = "one of ${concatStringsSep ", " (map toJSON values)}";
      check = x: elem x values; merge = mergeEqualOption;
    };
    listOf = elemType: mkType {
      name = "listOf"; descriptionClass = "composite";
      description = "list of ${phrase [ "noun" "composite" ] elemType}";
      check = isList;
      merge = loc: defs: map (x: x.value) (filter (x: x ? value) (concatLists (imap1 (n: def:
        imap1 (m: v: (mergeDefinitions (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType [{ inherit (def) file; value = v; }]).optionalValue) def.value) defs)));
    };
    attrsOf = elemType: mkType {
      name = "attrsOf"; descriptionClass = "composite";
      description = "attribute set of ${phrase [ "noun" "composite" ] elemType}";
      check = isAttrs;
      merge = loc: defs: mapAttrs (n: v: v.value) (lib.filterAttrs (n: v: v ? value) (builtins.zipAttrsWith
        (name: ds: (mergeDefinitions (loc ++ [ name ]) elemType ds).optionalValue)
        (map (def: mapAttrs (n: v: { inherit (def) file; value = v; }) def.value) defs)));
    };
    nullOr = elemType: mkType {
      name = "nullOr"; descriptionClass = "conjunction";
      description = "null or ${phrase [ "noun" "conjunction" ] elemType}";
      check = x: x == null || elemType.check x;
      merge = loc: defs:
        let nulls = length (filter (d: d.value == null) defs); in
        if nulls == length defs then null
        else if nulls != 0 then throw "The option `${showOption loc}` is defined both null and not null, in ${concatStringsSep ", " (map (d: "`${d.file}'") defs)}."
        else elemType.merge loc defs;
    };
    either = t1: t2: mkType {
      name = "either"; descriptionClass = "conjunction";
      description = "${phrase [ "noun" "conjunction" ] t1} or ${phrase [ "noun" "conjunction" "composite" ] t2}";
      check = x: t1.check x || t2.check x;
      merge = loc: defs:
        if all (d: t1.check d.value) defs then t1.merge loc defs
        else if all (d: t2.check d.value) defs then t2.merge loc defs
        else mergeOneOption loc defs;
    };
    oneOf = ts: foldl' either (head ts) (tail ts);
    # submoduleWith { shorthandOnlyDefinesConfig = true; }: each definition is a module of a
    # nested evaluation, which (like any evalModules) reverses its module list.
    submodule = { options, freeformType ? null }: mkType {
      name = "submodule";
      description = if freeformType != null then freeformType.description else "submodule";
      check = x: isAttrs x || isFunction x;
      merge = loc: defs: (evalTree {
        prefix = loc;
        sparse = true;
        decls = options;
        inherit freeformType;
        configs = concatMap (d: map (c: { inherit (d) file; config = c; })
          (pushDown (if isFunction d.value then d.value (moduleArgs // { name = last loc; }) else d.value)))
          (reverseList defs);
      }).config;
    };
  };
  # nix.nix's semanticConfType (freeformType of nix.settings)
  confAtom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path types.package ])
    // { description = "Nix config atom (null, bool, int, float, str, path or package)"; };
  semanticConfType = types.attrsOf (types.either confAtom (types.listOf confAtom));

  mkOption = o: o // { _type = "option"; };

  # ---- evalOptionValue: the option's value and what `options.<path>` shows of it
  evalOptionValue = loc: opt: defs:
    let
      defs' = (if opt ? default then [{ file = opt.declaredIn; value = mkOptionDefault opt.default; }] else [ ]) ++ defs;
      res = mergeDefinitions loc opt.type defs';
    in {
      _type = "option";
      inherit loc;
      inherit (opt) type;
      declarations = [ opt.declaredIn ];
      value = res.mergedValue;
      inherit (res) highestPrio isDefined;
      definitions = map (d: d.value) res.defsFinal;
      files = map (d: d.file) res.defsFinal;
      definitionsWithLocations = res.defsFinal;
    };

  # ---- mergeModules': walk the declarations with the definitions (configs: [{ file; config; }])
  evalTree = { prefix, decls, freeformType ? null, configs, sparse ? false }:
    let
      walk = prefix: decls: configs:
        let
          defsByName = zipDefs (map (c: mapAttrs (n: v: [{ inherit (c) file; value = v; }]) c.config) configs);
          results = mapAttrs (name: decl:
            let loc = prefix ++ [ name ]; defs = defsByName.${name} or [ ]; in
            if isOption decl then { option = evalOptionValue loc decl defs; unmatched = [ ]; }
            else
              let sub = walk loc decl (concatMap (d: map (c: { inherit (d) file; config = c; }) (pushDown d.value)) defs);
              in { option = sub.options; inherit (sub) unmatched; }) decls;
          here = concatLists (map (n: map (d: d // { prefix = [ n ]; }) defsByName.${n}) (filter (n: !(decls ? ${n})) (attrNames defsByName)));
          nested = concatLists (map (n: map (d: d // { prefix = [ n ] ++ d.prefix; }) results.${n}.unmatched) (attrNames results));
        in {
          options = mapAttrs (n: r: r.option) results;
          unmatched = nested ++ here;
        };
      walked = walk prefix decls configs;
      unmatched = walked.unmatched;
      # evalModules' checkUnmatched
      checkUnmatched =
        if unmatched != [ ] && freeformType == null
        then throw "The option `${showOption (prefix ++ (head unmatched).prefix)}' does not exist. Definition values:${showDefs [ (head unmatched) ]}"
        else null;
      # the top level: every declared option, lazily (an undefined one throws when read); a
      # submodule (sparse): only the options that have a value, so that it can be shown whole
      values = opts: mapAttrs (n: o: if isOption o then o.value else values o) opts;
      sparseValues = opts: listToAttrs (concatMap (n:
        let o = opts.${n}; in
        if isOption o then (if o.isDefined then [{ name = n; value = o.value; }] else [ ])
        else [{ name = n; value = sparseValues o; }]) (attrNames opts));
      declared = if sparse then sparseValues walked.options else values walked.options;
      freeformConfig =
        if unmatched == [ ] || freeformType == null then { }
        else freeformType.merge prefix (map (d: { inherit (d) file; value = setAttrByPath d.prefix d.value; }) unmatched);
    in {
      inherit (walked) options;
      config = builtins.seq checkUnmatched (recursiveUpdate freeformConfig declared);
    };

  # ---- the NixOS modules concerned (stand-ins: declarations and the config they add)
  cacheNixosOrg = "https://cache.nixos.org/";
  cacheNixosOrgKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
  baseModules = [
    # nixos/modules/config/nix.nix
    {
      _file = "<nixpkgs>/nixos/modules/config/nix.nix";
      key = "<nixpkgs>/nixos/modules/config/nix.nix";
      options.nix = {
        enable = mkOption { type = types.bool; default = true; };
        extraOptions = mkOption { type = types.lines; default = ""; };
        settings = mkOption {
          default = { };
          type = types.submodule {
            freeformType = semanticConfType;
            options = {
              substituters = mkOption { type = types.listOf types.str; declaredIn = "<nixpkgs>/nixos/modules/config/nix.nix"; };
              trusted-public-keys = mkOption { type = types.listOf types.str; declaredIn = "<nixpkgs>/nixos/modules/config/nix.nix"; };
              trusted-users = mkOption { type = types.listOf types.str; declaredIn = "<nixpkgs>/nixos/modules/config/nix.nix"; };
              trusted-substituters = mkOption { type = types.listOf types.str; declaredIn = "<nixpkgs>/nixos/modules/config/nix.nix"; };
              require-sigs = mkOption { type = types.bool; declaredIn = "<nixpkgs>/nixos/modules/config/nix.nix"; };
            };
          };
        };
      };
      config = { config, ... }: mkIf config.nix.enable {
        nix.settings = {
          trusted-public-keys = [ cacheNixosOrgKey ];
          trusted-users = [ "root" ];
          substituters = lib.mkAfter [ cacheNixosOrg ];
        };
      };
    }
    # nixos/modules/services/misc/nix-ssh-serve.nix
    {
      _file = "<nixpkgs>/nixos/modules/services/misc/nix-ssh-serve.nix";
      key = "<nixpkgs>/nixos/modules/services/misc/nix-ssh-serve.nix";
      options.nix.sshServe = {
        enable = mkOption { type = types.bool; default = false; };
        write = mkOption { type = types.bool; default = false; };
        trusted = mkOption { type = types.bool; default = false; };
        keys = mkOption { type = types.listOf types.str; default = [ ]; };
        protocol = mkOption { type = types.enum [ "ssh" "ssh-ng" ]; default = "ssh"; };
      };
      config = { config, ... }:
        let cfg = config.nix.sshServe; in
        mkIf cfg.enable {
          users.users.nix-ssh = { description = "Nix SSH store user"; isSystemUser = true; group = "nix-ssh"; useDefaultShell = true; };
          users.groups.nix-ssh = { };
          services.openssh.enable = true;
          services.openssh.extraConfig = ''
            Match User nix-ssh
              AllowAgentForwarding no
              AllowTcpForwarding no
              PermitTTY no
              PermitTunnel no
              X11Forwarding no
              ForceCommand ${if cfg.protocol == "ssh" then "nix-store --serve${lib.optionalString cfg.write " --write"}" else "nix-daemon --stdio"}
            Match All
          '';
          users.users.nix-ssh.openssh.authorizedKeys.keys = cfg.keys;
        };
    }
    # nixos/modules/services/networking/ssh/sshd.nix
    {
      _file = "<nixpkgs>/nixos/modules/services/networking/ssh/sshd.nix";
      key = "<nixpkgs>/nixos/modules/services/networking/ssh/sshd.nix";
      options.services.openssh = {
        enable = mkOption { type = types.bool; default = false; };
        extraConfig = mkOption { type = types.lines; default = ""; };
        authorizedKeysFiles = mkOption { type = types.listOf types.str; default = [ ]; };
        authorizedKeysInHomedir = mkOption { type = types.bool; default = true; };
        ports = mkOption { type = types.listOf types.int; default = [ 22 ]; };
        openFirewall = mkOption { type = types.bool; default = true; };
        settings = mkOption {
          default = { };
          type = types.submodule {
            freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]));
            options = { };
          };
        };
      };
      config = { config, ... }:
        let cfg = config.services.openssh; in
        mkIf cfg.enable {
          services.openssh.authorizedKeysFiles =
            lib.optionals cfg.authorizedKeysInHomedir [ "%h/.ssh/authorized_keys" ] ++ [ "/etc/ssh/authorized_keys.d/%u" ];
          services.openssh.extraConfig = mkOrder 0 ''
            AuthorizedKeysFile ${concatStringsSep " " cfg.authorizedKeysFiles}
          '';
        };
    }
    # nixos/modules/programs/ssh.nix
    {
      _file = "<nixpkgs>/nixos/modules/programs/ssh.nix";
      key = "<nixpkgs>/nixos/modules/programs/ssh.nix";
      options.programs.ssh = {
        extraConfig = mkOption { type = types.lines; default = ""; };
        knownHosts = mkOption {
          default = { };
          type = types.attrsOf (types.submodule {
            options = {
              certAuthority = mkOption { type = types.bool; default = false; declaredIn = "<nixpkgs>/nixos/modules/programs/ssh.nix"; };
              hostNames = mkOption { type = types.listOf types.str; default = [ ]; declaredIn = "<nixpkgs>/nixos/modules/programs/ssh.nix"; };
              extraHostNames = mkOption { type = types.listOf types.str; default = [ ]; declaredIn = "<nixpkgs>/nixos/modules/programs/ssh.nix"; };
              publicKey = mkOption { type = types.nullOr types.str; default = null; declaredIn = "<nixpkgs>/nixos/modules/programs/ssh.nix"; };
            };
          });
        };
      };
      config = { };
    }
    # nixos/modules/config/users-groups.nix (openssh.authorizedKeys from sshd.nix's userOptions)
    {
      _file = "<nixpkgs>/nixos/modules/config/users-groups.nix";
      key = "<nixpkgs>/nixos/modules/config/users-groups.nix";
      options.users = {
        users = mkOption {
          default = { };
          type = types.attrsOf (types.submodule {
            options = let o = t: d: mkOption ({ type = t; declaredIn = "<nixpkgs>/nixos/modules/config/users-groups.nix"; } // d); in {
              description = o types.str { default = ""; };
              isSystemUser = o types.bool { default = false; };
              isNormalUser = o types.bool { default = false; };
              group = o types.str { default = ""; };
              extraGroups = o (types.listOf types.str) { default = [ ]; };
              home = o types.str { default = "/var/empty"; };
              useDefaultShell = o types.bool { default = false; };
              uid = o (types.nullOr types.int) { default = null; };
              hashedPassword = o (types.nullOr types.str) { default = null; };
              openssh.authorizedKeys.keys = o (types.listOf types.singleLineStr) { default = [ ]; };
              openssh.authorizedKeys.keyFiles = o (types.listOf types.path) { default = [ ]; };
            };
          });
        };
        groups = mkOption { default = { }; type = types.attrsOf (types.submodule { options.gid = mkOption { type = types.nullOr types.int; default = null; declaredIn = "<nixpkgs>/nixos/modules/config/users-groups.nix"; }; }); };
      };
      config = { };
    }
    # options a configuration.nix commonly sets that the tests' configurations use (values unused)
    {
      _file = "<nixpkgs>/nixos/modules (other options)";
      key = "<nixpkgs>/nixos/modules (other options)";
      options = {
        networking.hostName = mkOption { type = types.str; default = "nixos"; };
        system.stateVersion = mkOption { type = types.str; default = ""; };
        boot.loader.grub.device = mkOption { type = types.str; default = ""; };
        environment.systemPackages = mkOption { type = types.listOf types.anything; default = [ ]; };
        time.timeZone = mkOption { type = types.nullOr types.str; default = null; };
      };
      config = { };
    }
  ];

  # ---- collectModules + evalModules
  moduleArgs = { inherit config options lib; pkgs = { }; modulesPath = "<nixpkgs>/nixos/modules"; };
  applyArgs = m: if isFunction m then m moduleArgs else m;
  # unifyModuleSyntax: { _file; key; imports; options; config; }
  unify = file: key: m:
    if m ? config || m ? options then {
      _file = m._file or file; key = m.key or key; imports = m.imports or [ ];
      options = m.options or { }; config = applyArgs (m.config or { });
    } else {
      _file = m._file or file; key = m.key or key; imports = m.imports or [ ];
      options = { }; config = removeAttrs m [ "_file" "key" "imports" "disabledModules" ];
    };
  load = parentFile: key: m:
    if isPath m || isString m then unify (toString m) (toString m) (applyArgs (import m))
    else unify parentFile key (applyArgs m);
  structured = parentFile: parentKey: ms: imap1 (n: m:
    let module = load parentFile "${parentKey}:anon-${toString n}" m; in
    { inherit (module) key; inherit module; modules = structured module._file module.key module.imports; }) ms;
  collected = map (s: s.module) (genericClosure {
    startSet = structured "<unknown-file>" "" (baseModules ++ [ configuration ]);
    operator = s: s.modules;
  });
  modules = reverseList collected;

  # declarations: option leaves get the file that declares them
  declTree = file: tree: mapAttrs (n: v: if isOption v then { declaredIn = file; } // v else declTree file v) tree;
  mergeDecls = a: b: a // mapAttrs (n: v: if isAttrs (a.${n} or null) && !(isOption v) then mergeDecls a.${n} v else v) b;
  decls = foldl' (acc: m: mergeDecls acc (declTree m._file m.options)) { } modules;

  evaluated = evalTree {
    prefix = [ ];
    inherit decls;
    configs = concatMap (m: map (c: { file = m._file; config = c; }) (pushDown m.config)) modules;
  };
  inherit (evaluated) options config;

  # ---- what NixOS writes to /etc from these options
  confValue = v:
    if v == null then ""
    else if isList v then concatStringsSep " " (map confValue v)
    else if isBool v then (if v then "true" else "false")
    else toString v;
  # offline test hosts: nix.nix's cache.nixos.org substituter and key stay in `config` only
  offline = { substituters = cacheNixosOrg; trusted-public-keys = cacheNixosOrgKey; };
  settingsWritten = lib.filterAttrs (n: v: !(offline ? ${n}) || v != [ ]) (mapAttrs
    (n: v: if offline ? ${n} then filter (x: x != offline.${n}) v else v) config.nix.settings);
  settingLines = extra: map (n: "${n} = ${confValue settingsWritten.${n}}")
    (filter (n: (match "extra-.*" n != null) == extra) (attrNames settingsWritten));
  nixConf = concatStringsSep "\n" (filter (x: x != "") ([
    "# WARNING: this file is generated from the nix.* options in /etc/nixos/configuration.nix"
    "# (by the test hosts' nixos-rebuild stand-in). Do not edit it!"
    baseNixConf
  ] ++ settingLines false ++ settingLines true ++ [ config.nix.extraOptions ])) + "\n";

  sshd = config.services.openssh;
  sshdValue = v: if isList v then concatStringsSep " " v else if isBool v then (if v then "yes" else "no") else toString v;
  sshdConfig = concatStringsSep "" (
    [ "# Generated by the test hosts' nixos-rebuild stand-in from services.openssh and nix.sshServe.\n" ]
    ++ map (n: "${n} ${sshdValue sshd.settings.${n}}\n") (filter (n: sshd.settings.${n} != null) (attrNames sshd.settings))
    ++ [ sshd.extraConfig "\n" ]);

  sshConfig = ''
    # Custom options from `extraConfig`, to override generated options
    ${config.programs.ssh.extraConfig}

    # Generated options from other settings
    Host *
    GlobalKnownHostsFile /etc/ssh/ssh_known_hosts
  '';
  knownHosts = config.programs.ssh.knownHosts;
  knownHostsText = concatStringsSep "" (map
    (n: let h = knownHosts.${n}; in
      "${concatStringsSep "," ((if h.hostNames == [ ] then [ n ] else h.hostNames) ++ h.extraHostNames)} ${h.publicKey}\n")
    (filter (n: knownHosts.${n}.publicKey != null) (attrNames knownHosts)));

  userKeys = mapAttrs (n: u: u.openssh.authorizedKeys.keys)
    (lib.filterAttrs (n: u: u.openssh.authorizedKeys.keys != [ ]) config.users.users);

  build = {
    # the options the cache concerns (the whole of `config` holds undefined options)
    config = {
      nix = { inherit (config.nix) settings extraOptions sshServe; };
      services.openssh = { inherit (config.services.openssh) enable extraConfig settings authorizedKeysFiles; };
      programs.ssh = { inherit (config.programs.ssh) extraConfig knownHosts; };
      users.users = mapAttrs (n: u: { inherit (u) openssh; }) config.users.users;
    };
    serve = { inherit (config.nix.sshServe) enable; };
    users = mapAttrs (n: keys: { authorizedKeys = keys; }) userKeys;
    files = {
      "/etc/nix/nix.conf" = nixConf;
      "/etc/ssh/sshd_config.d/50-nixos.conf" = sshdConfig;
      "/etc/ssh/ssh_config" = sshConfig;
      "/etc/ssh/ssh_known_hosts" = knownHostsText;
    } // listToAttrs (map (n: {
      name = "/etc/ssh/authorized_keys.d/${n}";
      value = concatStringsSep "" (map (k: k + "\n") userKeys.${n});
    }) (attrNames userKeys));
  };
in
if result == "nixos" then { inherit config options; } else build
