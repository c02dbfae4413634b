import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { nixAttrName, nixList, nixString, sortedUnique } from "../../components/render/nix";
import { NO_NIX, nixEval } from "./fixtures";

const TRICKY = [
  "",
  "plain",
  'say "hi"',
  "back\\slash",
  "${builtins.currentTime}",
  "$${x}",
  "$",
  "a$",
  "\\${x}",
  "\\",
  "''${x}",
  "line1\nline2\ttab\rcr",
  'all: " \\ ${ } $ $$ \\$ ${}',
];

describe("nixString", () => {
  it("escapes backslash, quote and interpolation", () => {
    assert.equal(nixString('a"b'), '"a\\"b"');
    assert.equal(nixString("a\\b"), '"a\\\\b"');
    assert.equal(nixString("${x}"), '"\\${x}"');
    assert.equal(nixString("$x"), '"$x"');
    assert.equal(nixString("a\nb"), '"a\\nb"');
  });

  it("round-trips tricky strings through real Nix", { skip: NO_NIX }, () => {
    const expr = `[ ${TRICKY.map(nixString).join(" ")} ]`;
    assert.deepEqual(nixEval(expr), TRICKY);
  });
});

describe("nixList", () => {
  it("renders one quoted element per line and an empty list", () => {
    assert.equal(nixList([], 4), "[ ]");
    assert.equal(nixList(["a", 'b"'], 4), '[\n    "a"\n    "b\\""\n  ]');
  });

  it("evaluates to the same list in real Nix", { skip: NO_NIX }, () => {
    assert.deepEqual(nixEval(nixList(TRICKY, 2)), TRICKY);
  });
});

describe("nixAttrName", () => {
  it("leaves identifiers bare and quotes everything else", () => {
    assert.equal(nixAttrName("hostNames"), "hostNames");
    assert.equal(nixAttrName("secret-key-files"), "secret-key-files");
    assert.equal(nixAttrName("nix-ssh-cache-stage.test"), '"nix-ssh-cache-stage.test"');
    assert.equal(nixAttrName("in"), '"in"');
    assert.equal(nixAttrName("1abc"), '"1abc"');
  });
});

describe("sortedUnique", () => {
  it("sorts by code unit and removes duplicates", () => {
    assert.deepEqual(sortedUnique(["b", "a", "B", "a"]), ["B", "a", "b"]);
  });
});
