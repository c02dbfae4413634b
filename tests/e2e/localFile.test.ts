/**
 * `fragments: "local"`: a NixOS module written into the operator's repository is a tracked
 * resource; an edit or a deletion out of band is shown by `preview --refresh` and undone by
 * `up --refresh`. Real engine, no hosts needed.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = pulumiSkipReason();
const CONTENT = '{ ... }: { nix.settings.substituters = [ "ssh://nix-ssh@stage.test" ]; }\n';

describe("LocalFile: a tracked file on the operator's machine", { skip }, () => {
  let stack: PulumiStack;
  let file: string;

  before(async () => {
    const trackedFile = JSON.stringify(
      path.join(repoRoot, "build", "components", "trackedFile.js"),
    );
    const dir = makeProgram(
      "localfile",
      `const { LocalFile } = require(${trackedFile});
new LocalFile("module", { path: "nixos/production.nix", content: ${JSON.stringify(CONTENT)} });
`,
    );
    file = path.join(dir, "nixos", "production.nix");
    stack = new PulumiStack(dir);
    await stack.init();
  });

  after(async () => {
    const dir = stack?.projectDir;
    await stack?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("up writes the file, relative to the program directory", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal(fs.readFileSync(file, "utf8"), CONTENT);
    assert.equal((await stack.preview(["--expect-no-changes"])).code, 0);
  });

  it("an edit is drift: preview --refresh shows it, up --refresh restores the file", async () => {
    fs.appendFileSync(file, "# edited by hand\n");
    const preview = await stack.preview(["--refresh", "--expect-no-changes"]);
    assert.notEqual(preview.code, 0, preview.output);
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    assert.equal(fs.readFileSync(file, "utf8"), CONTENT);
  });

  it("a deletion is drift too, and destroy removes the file", async () => {
    fs.rmSync(file);
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    assert.equal(fs.readFileSync(file, "utf8"), CONTENT);
    const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
    assert.equal(destroy.code, 0, destroy.output);
    assert.equal(fs.existsSync(file), false);
  });
});
