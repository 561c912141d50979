# The typed option keys of `services.mcrecover.settings`, as dotted paths in
# mcrecover's own notation (`platform.name`, `stages.*.timeout`,
# `services.*.checks.*.url`): one list of strings, sorted.
#
#   nix-instantiate --eval --strict --json nixos-module/option-keys.nix
#
# Needs no nixpkgs: ./settings.nix is evaluated with a stub `lib` that
# records what each option is instead of building the real module system.
# Used by the drift test (tests/nix_module.rs), which compares the result with
# `mcrecover config-keys`. When settings.nix starts using another `lib`
# function or type, add its stub here (the evaluation says which is missing).
let
  tag = kind: extra: { _stubType = kind; } // extra;
  leaf = kind: tag kind { };
  wrap = kind: elem: tag kind { inherit elem; };

  types = {
    str = leaf "str";
    bool = leaf "bool";
    int = leaf "int";
    path = leaf "path";
    port = leaf "port";
    ints = {
      u32 = leaf "u32";
      unsigned = leaf "unsigned";
      positive = leaf "positive";
      between = lo: hi: leaf "between";
    };
    strMatching = re: leaf "strMatching";
    enum = values: leaf "enum";
    either = a: b: leaf "either";
    oneOf = ts: leaf "oneOf";
    nullOr = wrap "nullOr";
    listOf = wrap "listOf";
    nonEmptyListOf = wrap "listOf";
    attrsOf = wrap "attrsOf";
    submodule = module: tag "submodule" { inherit module; };
  };

  lib = {
    inherit types;
    mkOption = args: args // { _isOption = true; };
    literalExpression = text: text;
  };

  settings = import ./settings.nix {
    inherit lib;
    freeformType = leaf "freeform";
  };

  # The options of a submodule (a function or an attribute set).
  subOptions =
    module:
    let
      m = if builtins.isFunction module then module { inherit lib; name = "*"; config = { }; } else module;
    in
    m.options or { };

  # Keys below a type found at `path`: a submodule (possibly inside nullOr /
  # listOf / attrsOf, where list and attribute set elements are `*`) is
  # descended into; anything else is a leaf key.
  typeKeys =
    path: t:
    if t._stubType == "nullOr" then
      typeKeys path t.elem
    else if (t._stubType == "listOf" || t._stubType == "attrsOf") && isSub t.elem then
      typeKeys "${path}.*" t.elem
    else if t._stubType == "submodule" then
      treeKeys path (subOptions t.module)
    else
      [ path ];

  isSub = t: t._stubType == "submodule" || (t._stubType == "nullOr" && isSub t.elem);

  treeKeys =
    prefix: tree:
    builtins.concatLists (
      map (
        n:
        let
          v = tree.${n};
          path = if prefix == "" then n else "${prefix}.${n}";
        in
        if v ? _isOption then typeKeys path v.type else treeKeys path v
      ) (builtins.attrNames tree)
    );
in
builtins.sort builtins.lessThan (treeKeys "" settings)
