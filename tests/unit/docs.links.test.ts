/**
 * The documentation's relative links resolve: every file a link in `README.md` or `docs/**.md`
 * names exists, and every `#anchor` names a heading of the target page, as GitHub makes anchors
 * (lower case, punctuation dropped, spaces as `-`, repeats numbered). Moving a section or a page
 * without its links fails here, naming the page, line and target.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { anchorsOf, brokenLinks, docPages, formatBroken } from "../../scripts/docs-links";

describe("documentation links", () => {
  it("every relative link in README.md and docs/ resolves, anchors included", () => {
    const pages = docPages();
    assert.ok(
      pages.includes("README.md") && pages.includes(path.join("docs", "configuration.md")),
      pages.join(", "),
    );
    const broken = brokenLinks(pages);
    assert.equal(
      broken.length,
      0,
      `broken links (fix the link or the heading):\n${formatBroken(broken)}`,
    );
  });

  it("the README links every page under docs/", () => {
    const readme = fs.readFileSync(path.join(__dirname, "..", "..", "..", "README.md"), "utf8");
    const unlinked = docPages()
      .filter((p) => p.startsWith(`docs${path.sep}`))
      .filter((p) => !readme.includes(`](${p.split(path.sep).join("/")}`));
    assert.deepEqual(unlinked, [], "pages under docs/ that README.md does not link");
  });

  it("uses GitHub's anchors: punctuation dropped, code kept, repeats numbered", () => {
    const anchors = anchorsOf(
      [
        "# Operations",
        "## Rotating the operator's SSH key (or any connection setting)",
        "## Fetching a whole closure in one session: `nix-ssh-cache-fetch`",
        "### NixSshCache (NixSshCacheArgs)",
        "## 3. Security: the signing key stays on staging, `nix-ssh` can only serve",
        "## Notes",
        "## Notes",
        "```sh",
        "# not a heading: a comment in a code block",
        "```",
      ].join("\n"),
    );
    assert.deepEqual(
      [...anchors],
      [
        "operations",
        "rotating-the-operators-ssh-key-or-any-connection-setting",
        "fetching-a-whole-closure-in-one-session-nix-ssh-cache-fetch",
        "nixsshcache-nixsshcacheargs",
        "3-security-the-signing-key-stays-on-staging-nix-ssh-can-only-serve",
        "notes",
        "notes-1",
      ],
    );
  });

  it("reports a missing page, a missing anchor and a link out of the repository; ignores code", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-docs-links-"));
    try {
      fs.mkdirSync(path.join(root, "docs"));
      fs.writeFileSync(path.join(root, "docs", "b.md"), "# B\n\n## A heading\n");
      fs.writeFileSync(
        path.join(root, "README.md"),
        [
          "# Top",
          "[fine](docs/b.md) [fine too](docs/b.md#a-heading) [here](#top) [web](https://example.com/x.md)",
          "[gone](docs/missing.md)",
          "[no such heading](docs/b.md#a-headin)",
          "[outside](../elsewhere.md)",
          "`[in code](docs/missing.md)`",
          "```md",
          "[in a block](docs/missing.md)",
          "```",
          "[ref]: docs/nothing.md",
        ].join("\n"),
      );
      const broken = brokenLinks(docPages(root), root);
      assert.deepEqual(
        broken.map((b) => `${b.file}:${b.line}: ${b.target}`),
        [
          "README.md:3: docs/missing.md",
          "README.md:4: docs/b.md#a-headin",
          "README.md:5: ../elsewhere.md",
          "README.md:10: docs/nothing.md",
        ],
        formatBroken(broken),
      );
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
