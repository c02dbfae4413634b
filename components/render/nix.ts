/**
 * Nix expression helpers: escaping strings, rendering lists and attribute names.
 * @packageDocumentation
 */

/**
 * Renders `s` as a Nix double-quoted string literal that evaluates to exactly `s`.
 *
 * Escapes `\`, `"` and `${` (interpolation), and renders newline, carriage return and tab as
 * `\n`, `\r`, `\t`.
 *
 * @example
 * ```ts
 * nixString('say "hi" ${x}'); // => "\"say \\\"hi\\\" \\${x}\""
 * ```
 */
export function nixString(s: string): string {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "\\") out += "\\\\";
    else if (c === '"') out += '\\"';
    else if (c === "\n") out += "\\n";
    else if (c === "\r") out += "\\r";
    else if (c === "\t") out += "\\t";
    else if (c === "$" && s[i + 1] === "{") out += "\\$";
    else out += c;
  }
  return `"${out}"`;
}

/**
 * Renders a list of strings as a Nix list, one element per line, indented by `indent`
 * spaces for the elements (the closing bracket gets `indent - 2`). An empty list is `[ ]`.
 *
 * @example
 * ```ts
 * nixList(["a", "b"], 4); // => '[\n    "a"\n    "b"\n  ]'
 * ```
 */
export function nixList(items: readonly string[], indent = 2): string {
  if (items.length === 0) return "[ ]";
  const pad = " ".repeat(indent);
  const closePad = " ".repeat(Math.max(0, indent - 2));
  return `[\n${items.map((item) => `${pad}${nixString(item)}\n`).join("")}${closePad}]`;
}

/**
 * Renders an attribute name: bare when it is a plain Nix identifier (and not a keyword),
 * otherwise quoted with {@link nixString}.
 *
 * @example
 * ```ts
 * nixAttrName("hostNames"); // => "hostNames"
 * nixAttrName("nix-ssh-cache-stage.test"); // => "\"nix-ssh-cache-stage.test\""
 * ```
 */
export function nixAttrName(name: string): string {
  const keywords = new Set([
    "if",
    "then",
    "else",
    "assert",
    "with",
    "let",
    "in",
    "rec",
    "inherit",
    "or",
  ]);
  return /^[A-Za-z_][A-Za-z0-9_'-]*$/.test(name) && !keywords.has(name) ? name : nixString(name);
}

/** Sorts strings by code unit and drops duplicates; used for deterministic output. */
export function sortedUnique(items: readonly string[]): string[] {
  return [...new Set(items)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Throws when `value` contains a line break or NUL, which would let a value escape its line in
 * a line-oriented config file (sshd_config, ssh_config, nix.conf, authorized_keys).
 *
 * @param what - names the value in the error message, e.g. `"AuthorizedKeysFile"`
 */
export function assertSingleLine(value: string, what: string): void {
  if (/[\r\n\0]/.test(value)) {
    throw new Error(`${what} must be a single line without NUL, got ${JSON.stringify(value)}`);
  }
}

/**
 * Throws when `value` is empty or contains whitespace, quotes or control characters: such a
 * value would be split or misread as a single token of a whitespace-separated config value.
 *
 * @param what - names the value in the error message
 */
export function assertToken(value: string, what: string): void {
  if (value === "" || /[\s"'\\\0]/.test(value)) {
    throw new Error(
      `${what} must be non-empty without whitespace, quotes or backslashes, got ${JSON.stringify(value)}`,
    );
  }
}
