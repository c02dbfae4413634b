/**
 * Relative links in the Markdown documentation (`README.md`, `docs/**.md`): every target file
 * must exist and every `#anchor` must name a heading of the target page (GitHub's anchors).
 * Used by `tests/unit/docs.links.test.ts`; `node build/scripts/docs-links.js` prints the broken
 * ones and exits 1 when there are any.
 */
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../tests/e2e/pulumi";
import { githubSlug } from "./docs-options";

/** A link that does not resolve. */
export interface BrokenLink {
  /** The page holding it, relative to the root. */
  file: string;
  /** Its 1-based line. */
  line: number;
  /** The link target as written. */
  target: string;
  /** Why it does not resolve. */
  reason: string;
}

/** The documentation pages: `README.md` and every `.md` under `docs/`, relative to `root`. */
export function docPages(root: string = repoRoot): string[] {
  const pages = ["README.md"];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith(".md")) pages.push(rel);
    }
  };
  if (fs.existsSync(path.join(root, "docs"))) walk("docs");
  return pages.sort();
}

/**
 * The page's lines with fenced code blocks blanked and inline code spans removed, so that
 * neither a link-like text in code nor a `#` comment in a shell block counts. Line numbers
 * are kept.
 */
function proseLines(text: string): string[] {
  let fence: string | undefined;
  return text.split("\n").map((line) => {
    const m = /^\s*(`{3,}|~{3,})/.exec(line);
    if (m) {
      if (!fence) fence = m[1][0];
      else if (m[1][0] === fence) fence = undefined;
      return "";
    }
    if (fence) return "";
    return line.replace(/(`+)(?:(?!\1)[\s\S])*?\1/g, "");
  });
}

/** GitHub's anchors of a page: one per heading (repeats get `-1`, `-2`, …), plus `id`/`name`. */
export function anchorsOf(text: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  let fence: string | undefined;
  for (const line of text.split("\n")) {
    const f = /^\s*(`{3,}|~{3,})/.exec(line);
    if (f) {
      if (!fence) fence = f[1][0];
      else if (f[1][0] === fence) fence = undefined;
      continue;
    }
    if (fence) continue;
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1]);
    const h = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const shown = h[1]
      .replace(/!\[([^\]]*)\]\([^)]*\)/g, "$1")
      .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
      .replace(/<[^>]+>/g, "");
    const base = githubSlug(shown);
    const n = counts.get(base) ?? 0;
    counts.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** The link targets of a page with their lines: inline links, images, reference definitions. */
export function linksOf(text: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  proseLines(text).forEach((line, i) => {
    for (const m of line.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      out.push({ line: i + 1, target: m[1] });
    }
    const def = /^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/.exec(line);
    if (def) out.push({ line: i + 1, target: def[1] });
  });
  return out;
}

/** The broken relative links of `pages` (paths relative to `root`). */
export function brokenLinks(pages: string[], root: string = repoRoot): BrokenLink[] {
  const broken: BrokenLink[] = [];
  const anchorCache = new Map<string, Set<string>>();
  const anchorsAt = (abs: string): Set<string> => {
    let a = anchorCache.get(abs);
    if (!a) anchorCache.set(abs, (a = anchorsOf(fs.readFileSync(abs, "utf8"))));
    return a;
  };
  for (const page of pages) {
    const abs = path.join(root, page);
    for (const { line, target } of linksOf(fs.readFileSync(abs, "utf8"))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …: not ours to check
      const bad = (reason: string) => broken.push({ file: page, line, target, reason });
      const hash = target.indexOf("#");
      const filePart = decodeURIComponent(hash < 0 ? target : target.slice(0, hash));
      const anchor = hash < 0 ? undefined : decodeURIComponent(target.slice(hash + 1));
      const dest = filePart === "" ? abs : path.resolve(path.dirname(abs), filePart);
      if (path.relative(root, dest).startsWith("..")) {
        bad("points outside the repository");
        continue;
      }
      if (!fs.existsSync(dest)) {
        bad(`${path.relative(root, dest)} does not exist`);
        continue;
      }
      if (anchor === undefined) continue;
      if (!dest.endsWith(".md") || !fs.statSync(dest).isFile()) {
        bad(`#${anchor}: anchors are only checked in Markdown pages`);
        continue;
      }
      if (!anchorsAt(dest).has(anchor)) {
        bad(`no heading with anchor #${anchor} in ${path.relative(root, dest)}`);
      }
    }
  }
  return broken;
}

/** `file:line: target: reason`, one per line. */
export function formatBroken(broken: BrokenLink[]): string {
  return broken.map((b) => `${b.file}:${b.line}: ${b.target}: ${b.reason}`).join("\n");
}

if (require.main === module) {
  const broken = brokenLinks(docPages());
  if (broken.length > 0) {
    console.error(formatBroken(broken));
    process.exit(1);
  }
  console.log(`${docPages().length} pages: every relative link resolves`);
}
