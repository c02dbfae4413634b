/**
 * The option reference in `docs/configuration.md`, generated from the components' argument types
 * and their TSDoc, so it cannot drift from the code: one table per component (every argument,
 * nested objects such as `staging.connection` or `signingKey.generation` expanded, the default
 * from `@defaultValue`), and the connection tables from `@pulumi/command`'s declarations.
 *
 * Usage: `npm run docs:options` writes the tables between the markers in
 * `docs/configuration.md`; `node build/scripts/docs-options.js --check` exits 1 when the
 * committed tables differ from the generated ones. `tests/unit/docs.options.test.ts` runs the
 * same check.
 */
import * as fs from "fs";
import * as path from "path";
import * as ts from "typescript";
import { repoRoot } from "../tests/e2e/pulumi";

/** The page that holds the generated tables, relative to the repository root. */
export const CONFIGURATION_PAGE = "docs/configuration.md";
/** Markers around the generated part of {@link CONFIGURATION_PAGE}. */
export const BEGIN_MARKER = "<!-- BEGIN GENERATED OPTIONS: npm run docs:options -->";
/** See {@link BEGIN_MARKER}. */
export const END_MARKER = "<!-- END GENERATED OPTIONS -->";

/** The components whose arguments are documented, in the order of the page. */
export const COMPONENTS = [
  { component: "NixSshCache", args: "NixSshCacheArgs" },
  { component: "CacheServer", args: "CacheServerArgs" },
  { component: "CacheClient", args: "CacheClientArgs" },
  { component: "ClientIdentity", args: "ClientIdentityArgs" },
  { component: "ClosureFetch", args: "ClosureFetchArgs" },
  { component: "CachePin", args: "CachePinArgs" },
] as const;

/** The connection types (from `@pulumi/command`), documented as their own tables. */
export const CONNECTION_TYPES = [
  { title: "Connection", alias: "ConnectionArgs" },
  { title: "Jump host", alias: "ProxyConnectionArgs" },
] as const;

/**
 * Connection fields whose upstream (`@pulumi/command`) description is not what this component
 * does with them: the table shows this text instead.
 */
export const CONNECTION_OVERRIDES: Record<string, string> = {
  hostKey:
    "The host's SSH public key line (`ssh-ed25519 AAAA...`). Unlike `remote.Command`, a host is never reached unverified: without `hostKey`, the key comes from the operator's known_hosts (`~/.ssh/known_hosts`, `~/.ssh/known_hosts2`, `/etc/ssh/ssh_known_hosts`, `/etc/ssh/ssh_known_hosts2`; hashed entries, `[host]:port`, `@revoked`), and a host with neither is an error that says how to get and check its key.",
};

/** One argument of a component: a row of its table. */
export interface OptionRow {
  /** Path from the component's arguments, e.g. `staging.connection`, `production[].name`. */
  path: string;
  /** The declared type, as written (`pulumi.Input<X>` shown as `Input<X>`). */
  type: string;
  /** Whether the argument must be given (no `?`). */
  required: boolean;
  /** `@defaultValue` of its TSDoc; `undefined` when it has none. */
  defaultValue?: string;
  /** Its TSDoc text (one line), plus a one-line `@example` when there is one. */
  description: string;
}

/** A component's arguments, in declaration order (own members first, then each base's). */
export interface ComponentOptions {
  /** The component, e.g. `NixSshCache`. */
  component: string;
  /** Its arguments interface, e.g. `NixSshCacheArgs`. */
  args: string;
  /** The source file of the interface, relative to the repository root. */
  file: string;
  /** Its rows. */
  rows: OptionRow[];
}

/** An interface declared outside the project (a connection type), documented field by field. */
export interface ExternalTable {
  title: string;
  /** The project's alias, e.g. `ConnectionArgs`. */
  alias: string;
  /** The alias's TSDoc (the project's words about it). */
  intro: string;
  rows: OptionRow[];
}

/** Everything the page's generated part is made of. */
export interface OptionsModel {
  components: ComponentOptions[];
  connections: ExternalTable[];
}

/** A TypeScript program over the public entry point, with the project's compiler options. */
function loadProgram(root: string): ts.Program {
  const configPath = path.join(root, "tsconfig.json");
  const config = ts.readConfigFile(configPath, (f) => ts.sys.readFile(f));
  if (config.error)
    throw new Error(
      `${configPath}: ${ts.flattenDiagnosticMessageText(config.error.messageText, "\n")}`,
    );
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, root);
  return ts.createProgram([path.join(root, "components", "index.ts")], parsed.options);
}

/** The exported interface or type alias `name` declared in `components/` (exactly one). */
function findDeclaration(
  program: ts.Program,
  root: string,
  name: string,
): ts.InterfaceDeclaration | ts.TypeAliasDeclaration {
  const found: (ts.InterfaceDeclaration | ts.TypeAliasDeclaration)[] = [];
  for (const sf of program.getSourceFiles()) {
    if (!isProjectFile(sf.fileName, root)) continue;
    for (const st of sf.statements) {
      if (
        (ts.isInterfaceDeclaration(st) || ts.isTypeAliasDeclaration(st)) &&
        st.name.text === name
      ) {
        found.push(st);
      }
    }
  }
  if (found.length !== 1) {
    throw new Error(`expected one declaration of ${name} in components/, found ${found.length}`);
  }
  return found[0];
}

function isProjectFile(fileName: string, root: string): boolean {
  const rel = path.relative(root, fileName);
  return rel.startsWith(`components${path.sep}`) && !rel.endsWith(".d.ts");
}

/** Whitespace collapsed to single spaces. */
function oneLine(s: string): string {
  return s.replace(/\s+/g, " ").trim();
}

/** `{@link X}` / `{@link X | text}` as Markdown: a link to X's table when there is one. */
function renderLinks(text: string, anchors: Map<string, string>): string {
  return text.replace(
    /\{@link(?:code|plain)?\s+([^}|\s]+)\s*(?:\|\s*([^}]*))?\}/g,
    (_m, target: string, label?: string) => {
      const shown = label && label.trim() ? label.trim() : target;
      const anchor = anchors.get(target);
      return anchor ? `[\`${shown}\`](#${anchor})` : `\`${shown}\``;
    },
  );
}

/** The TSDoc of a declaration: text, tags by name (first of each). */
function docOf(node: ts.Node): { text: string; tags: Map<string, string> } {
  const tags = new Map<string, string>();
  for (const tag of ts.getJSDocTags(node)) {
    const name = tag.tagName.text;
    if (!tags.has(name)) tags.set(name, oneLine(ts.getTextOfJSDocComment(tag.comment) ?? ""));
  }
  const text = ts
    .getJSDocCommentsAndTags(node)
    .filter(ts.isJSDoc)
    .map((d) => ts.getTextOfJSDocComment(d.comment) ?? "")
    .join(" ");
  return { text: oneLine(text), tags };
}

/** The type as written, `pulumi.Input<X>` as `Input<X>`, on one line. */
function typeText(node: ts.TypeNode | undefined): string {
  return node ? oneLine(node.getText().replace(/\bpulumi\.Input</g, "Input<")) : "";
}

/**
 * The project interface an argument's type holds, for expanding its fields (`Input<X>`, `X[]`
 * and `Input<X>[]` unwrapped); `undefined` for anything else (unions, classes, outside types).
 */
function nestedInterface(
  node: ts.TypeNode | undefined,
  checker: ts.TypeChecker,
  root: string,
): { decl: ts.InterfaceDeclaration; array: boolean } | undefined {
  let array = false;
  let n = node;
  for (;;) {
    if (!n) return undefined;
    if (ts.isArrayTypeNode(n)) {
      if (array) return undefined;
      array = true;
      n = n.elementType;
    } else if (
      ts.isTypeReferenceNode(n) &&
      /(^|\.)Input$/.test(n.typeName.getText()) &&
      n.typeArguments?.length === 1
    ) {
      n = n.typeArguments[0];
    } else break;
  }
  if (!ts.isTypeReferenceNode(n)) return undefined;
  let symbol = checker.getSymbolAtLocation(n.typeName);
  if (symbol && symbol.flags & ts.SymbolFlags.Alias) symbol = checker.getAliasedSymbol(symbol);
  const decl = symbol?.declarations?.find(ts.isInterfaceDeclaration);
  if (!decl || !isProjectFile(decl.getSourceFile().fileName, root)) return undefined;
  return { decl, array };
}

/** Rows of an interface's members under `prefix`, nested project interfaces expanded. */
function collectRows(
  decl: ts.InterfaceDeclaration,
  prefix: string,
  checker: ts.TypeChecker,
  root: string,
  anchors: Map<string, string>,
  out: OptionRow[],
  expand: boolean,
): void {
  for (const member of decl.members) {
    if (!ts.isPropertySignature(member)) continue;
    const doc = docOf(member);
    if (doc.tags.has("internal") || doc.tags.has("hidden")) continue;
    const name = member.name.getText();
    const example = doc.tags.get("example");
    const description = renderLinks(
      doc.text + (example && !example.includes("```") ? ` Example: ${example}` : ""),
      anchors,
    );
    const row: OptionRow = {
      path: prefix + name,
      type: typeText(member.type),
      required: !member.questionToken,
      defaultValue: doc.tags.get("defaultValue"),
      description,
    };
    out.push(row);
    const nested = expand ? nestedInterface(member.type, checker, root) : undefined;
    if (nested) {
      collectRows(
        nested.decl,
        `${row.path}${nested.array ? "[]" : ""}.`,
        checker,
        root,
        anchors,
        out,
        expand,
      );
    }
  }
  for (const clause of decl.heritageClauses ?? []) {
    for (const t of clause.types) {
      let symbol = checker.getSymbolAtLocation(t.expression);
      if (symbol && symbol.flags & ts.SymbolFlags.Alias) symbol = checker.getAliasedSymbol(symbol);
      const base = symbol?.declarations?.find(ts.isInterfaceDeclaration);
      if (!base) throw new Error(`${decl.name.text} extends ${t.getText()}: not an interface`);
      collectRows(base, prefix, checker, root, anchors, out, expand);
    }
  }
}

/** GitHub's anchor for a heading text (lower case, punctuation dropped, spaces as `-`). */
export function githubSlug(heading: string): string {
  return heading
    .toLowerCase()
    .trim()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
    .replace(/ /g, "-");
}

/** The heading of a component's table (its anchor is the slug). */
function componentHeading(c: { component: string; args: string }): string {
  return `${c.component} (${c.args})`;
}

/** Reads the components' argument types and the connection types with the compiler API. */
export function readOptions(root: string = repoRoot): OptionsModel {
  const program = loadProgram(root);
  const checker = program.getTypeChecker();
  const anchors = new Map<string, string>();
  for (const c of COMPONENTS) {
    anchors.set(c.args, githubSlug(componentHeading(c)));
    anchors.set(c.component, githubSlug(componentHeading(c)));
  }
  for (const c of CONNECTION_TYPES) anchors.set(c.alias, githubSlug(`${c.title} (${c.alias})`));

  const components = COMPONENTS.map((c) => {
    const decl = findDeclaration(program, root, c.args);
    if (!ts.isInterfaceDeclaration(decl)) throw new Error(`${c.args} is not an interface`);
    const rows: OptionRow[] = [];
    collectRows(decl, "", checker, root, anchors, rows, true);
    return { ...c, file: path.relative(root, decl.getSourceFile().fileName), rows };
  });

  const connections = CONNECTION_TYPES.map((c) => {
    const alias = findDeclaration(program, root, c.alias);
    if (!ts.isTypeAliasDeclaration(alias)) throw new Error(`${c.alias} is not a type alias`);
    const target = checker.getTypeAtLocation(alias.type).getSymbol();
    const decl = target?.declarations?.find(ts.isInterfaceDeclaration);
    if (!decl) throw new Error(`${c.alias}: cannot find the interface it names`);
    const rows: OptionRow[] = [];
    collectRows(decl, "", checker, root, anchors, rows, false);
    for (const r of rows) r.description = CONNECTION_OVERRIDES[r.path] ?? r.description;
    rows.sort((a, b) => Number(b.required) - Number(a.required) || a.path.localeCompare(b.path));
    return { ...c, intro: renderLinks(docOf(alias).text, anchors), rows };
  });
  return { components, connections };
}

/** A table cell: pipes escaped (GitHub splits cells on `|`, even inside code spans). */
function cell(s: string): string {
  return s.replace(/\|/g, "\\|");
}

/** The default column of a row: `required`, the `@defaultValue`, or `—` (none documented). */
export function defaultCell(row: OptionRow): string {
  if (row.required) return "required";
  return row.defaultValue ?? "—";
}

/** The generated Markdown (between the markers, markers excluded). */
export function renderOptions(model: OptionsModel): string {
  const out: string[] = [];
  for (const c of model.components) {
    out.push(`### ${componentHeading(c)}`, "");
    out.push(`<!-- args: ${c.args} (${c.file}) -->`, "");
    out.push("| option | default | type | description |", "| --- | --- | --- | --- |");
    for (const r of c.rows) {
      out.push(
        `| \`${cell(r.path)}\` | ${cell(defaultCell(r))} | \`${cell(r.type)}\` | ${cell(r.description)} |`,
      );
    }
    out.push("");
  }
  for (const t of model.connections) {
    out.push(`### ${t.title} (${t.alias})`, "");
    out.push(`<!-- connection: ${t.alias} (@pulumi/command) -->`, "");
    out.push(t.intro, "");
    out.push("Fields, as `@pulumi/command` documents them:", "");
    out.push("| field | required | type | description |", "| --- | --- | --- | --- |");
    for (const r of t.rows) {
      out.push(
        `| \`${cell(r.path)}\` | ${r.required ? "yes" : "no"} | \`${cell(r.type)}\` | ${cell(r.description)} |`,
      );
    }
    out.push("");
  }
  return out.join("\n");
}

/** The option tables of a page: args interface → option path → default cell (unescaped). */
export function parseOptionTables(page: string): Map<string, Map<string, string>> {
  const tables = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const line of page.split("\n")) {
    const marker = /^<!-- args: (\w+) /.exec(line);
    if (marker) {
      current = new Map();
      tables.set(marker[1], current);
      continue;
    }
    if (!current) continue;
    if (/^#/.test(line) || /^<!-- (connection|END)/.test(line)) {
      current = undefined;
      continue;
    }
    const cells = splitRow(line);
    if (!cells || cells[0] === "option" || /^-+$/.test(cells[0])) continue;
    const name = /^`(.*)`$/.exec(cells[0]);
    if (name) current.set(name[1], cells[1]);
  }
  return tables;
}

/** The cells of a Markdown table row (`\|` unescaped), or `undefined` for any other line. */
export function splitRow(line: string): string[] | undefined {
  if (!/^\|.*\|\s*$/.test(line)) return undefined;
  return line
    .trim()
    .slice(1, -1)
    .split(/(?<!\\)\|/)
    .map((c) => c.trim().replace(/\\\|/g, "|"));
}

/**
 * What differs between the option tables of `page` and the argument types: an option in a table
 * that no type has, an argument missing from its table, a default that is not the TSDoc's
 * `@defaultValue`. Empty when they agree.
 */
export function optionProblems(page: string, model: OptionsModel): string[] {
  const problems: string[] = [];
  const tables = parseOptionTables(page);
  for (const c of model.components) {
    const table = tables.get(c.args);
    if (!table) {
      problems.push(`${c.args} (${c.file}): no table in ${CONFIGURATION_PAGE}`);
      continue;
    }
    const rows = new Map(c.rows.map((r) => [r.path, r]));
    for (const [option, shown] of table) {
      const row = rows.get(option);
      if (!row) {
        problems.push(
          `${CONFIGURATION_PAGE}: option ${option} of ${c.component} is not in ${c.args} (${c.file})`,
        );
      } else if (shown !== defaultCell(row)) {
        problems.push(
          `${CONFIGURATION_PAGE}: default of ${c.component} ${option} is "${shown}", its TSDoc in ${c.file} says "${defaultCell(row)}"`,
        );
      }
    }
    for (const row of c.rows) {
      if (!table.has(row.path)) {
        problems.push(`${c.args}.${row.path} (${c.file}) is missing from ${CONFIGURATION_PAGE}`);
      }
    }
  }
  for (const args of tables.keys()) {
    if (!model.components.some((c) => c.args === args)) {
      problems.push(
        `${CONFIGURATION_PAGE}: a table for ${args}, which is not a documented component's arguments`,
      );
    }
  }
  return problems;
}

/** The page with its generated part replaced by `generated`. */
export function replaceGenerated(page: string, generated: string): string {
  const begin = page.indexOf(BEGIN_MARKER);
  const end = page.indexOf(END_MARKER);
  if (begin < 0 || end < begin) {
    throw new Error(`${CONFIGURATION_PAGE}: markers "${BEGIN_MARKER}" … "${END_MARKER}" not found`);
  }
  return `${page.slice(0, begin + BEGIN_MARKER.length)}\n\n${generated}\n${page.slice(end)}`;
}

function main(): void {
  const file = path.join(repoRoot, CONFIGURATION_PAGE);
  const page = fs.readFileSync(file, "utf8");
  const want = replaceGenerated(page, renderOptions(readOptions(repoRoot)));
  if (process.argv.includes("--check")) {
    if (want !== page) {
      console.error(
        `${CONFIGURATION_PAGE}: the option tables differ from the TSDoc; run: npm run docs:options`,
      );
      process.exit(1);
    }
    console.log(`${CONFIGURATION_PAGE}: option tables up to date`);
    return;
  }
  if (want !== page) fs.writeFileSync(`${file}.tmp`, want);
  if (want !== page) fs.renameSync(`${file}.tmp`, file);
  console.log(`${CONFIGURATION_PAGE}: ${want === page ? "up to date" : "tables written"}`);
}

if (require.main === module) main();
