/**
 * The configuration reference cannot drift from the code: the option tables in
 * `docs/configuration.md` are what `npm run docs:options` generates from the components'
 * argument types (read with the TypeScript compiler API), every option in them exists in the
 * types and every argument is in them with its TSDoc `@defaultValue`; the README's option names
 * and the example stack's config keys are real too.
 */
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import {
  CONFIGURATION_PAGE,
  OptionsModel,
  optionProblems,
  readOptions,
  renderOptions,
  replaceGenerated,
  splitRow,
} from "../../scripts/docs-options";

const root = path.join(__dirname, "..", "..", "..");
const read = (file: string) => fs.readFileSync(path.join(root, file), "utf8");

/** The first cells of the rows of the table after `marker` (or after the heading `marker`). */
function firstColumn(page: string, marker: string): string[] {
  const lines = page.split("\n");
  const start = lines.findIndex((l) => l.startsWith(marker));
  assert.ok(start >= 0, `no "${marker}"`);
  const rows: string[] = [];
  let inTable = false;
  for (const line of lines.slice(start + 1)) {
    const cells = splitRow(line);
    if (!cells) {
      if (inTable) break;
      continue;
    }
    inTable = true;
    if (/^-+$/.test(cells[0])) continue;
    rows.push(cells[0]);
  }
  return rows.slice(1); // without the header
}

describe("docs/configuration.md: the option reference", () => {
  let model: OptionsModel;
  let page: string;
  before(() => {
    model = readOptions(root);
    page = read(CONFIGURATION_PAGE);
  });

  it("is what `npm run docs:options` generates from the TSDoc", () => {
    const want = replaceGenerated(page, renderOptions(model));
    assert.ok(
      want === page,
      `${CONFIGURATION_PAGE}: the generated option tables differ from the TSDoc; run: npm run docs:options`,
    );
  });

  it("lists every argument of every component, no other, each with its @defaultValue", () => {
    assert.ok(
      model.components.find((c) => c.args === "NixSshCacheArgs")?.rows.length,
      "NixSshCacheArgs read",
    );
    assert.deepEqual(optionProblems(page, model), []);
  });

  it("reports an option the types lack, a missing argument and a wrong default", () => {
    const edited = page
      .replace("| `write` | `false` |", "| `write` | `true` |")
      .replace(/^\| `priority` \|.*\n/m, "")
      .replace(
        "| `keyName` | staging's",
        "| `keyNames` | — | `string` | not an option |\n| `keyName` | staging's",
      );
    const already = optionProblems(page, model);
    const found = optionProblems(edited, model).filter((p) => !already.includes(p));
    assert.deepEqual(found, [
      `${CONFIGURATION_PAGE}: option keyNames of NixSshCache is not in NixSshCacheArgs (components/nixSshCache.ts)`,
      `${CONFIGURATION_PAGE}: default of NixSshCache write is "\`true\`", its TSDoc in components/nixSshCache.ts says "\`false\`"`,
      `NixSshCacheArgs.priority (components/nixSshCache.ts) is missing from ${CONFIGURATION_PAGE}`,
    ]);
  });

  it("names in the README's 'Most used options' are options of NixSshCacheArgs", () => {
    const known = new Set(
      model.components.find((c) => c.args === "NixSshCacheArgs")!.rows.map((r) => r.path),
    );
    const names = firstColumn(read("README.md"), "## Most used options").flatMap((cell) =>
      [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]),
    );
    assert.ok(names.length >= 5, `README option names: ${names.join(", ")}`);
    assert.deepEqual(
      names.filter((n) => !known.has(n)),
      [],
      "README.md's 'Most used options' names options that NixSshCacheArgs does not have",
    );
  });

  it("the example stack's config table lists exactly the keys index.ts reads", () => {
    const read_ = [
      ...read("index.ts").matchAll(/\bcfg\.(?:get|require)\w*(?:<[^>]*>)?\(\s*"([^"]+)"/g),
    ].map((m) => m[1]);
    const documented = firstColumn(page, "<!-- config keys: index.ts -->").map(
      (c) => /^`([^`]+)`/.exec(c)?.[1] ?? c,
    );
    assert.ok(read_.length >= 5, `keys read by index.ts: ${read_.join(", ")}`);
    assert.deepEqual([...new Set(documented)].sort(), [...new Set(read_)].sort());
  });
});
