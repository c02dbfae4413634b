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

/**
 * Throws unless `value` is a token safe in every file this project writes it to: not empty, no
 * whitespace, quotes, backslash, `$`, backtick, `#` or control characters. Stricter than
 * {@link assertToken}: `#` starts a comment in nix.conf (anywhere on a line) and in ssh
 * configuration, and `$` / backtick are expanded where NixOS copies `services.openssh.extraConfig`
 * into sshd_config (an unquoted shell here-document in nixpkgs' sshd module) and in Nix strings.
 *
 * @param what - names the value in the error message, e.g. `"substituter URL"`
 * @example
 * ```ts
 * assertConfigToken("ssh://nix-ssh@stage.test", "substituter URL"); // ok
 * assertConfigToken("ssh://x#y", "substituter URL"); // throws
 * ```
 */
export function assertConfigToken(value: string, what: string): void {
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (typeof value !== "string" || value === "" || /[\s"'\\$`#\0-\x1f\x7f]/.test(value)) {
    throw new Error(
      `${what} must be non-empty without whitespace, quotes, "\\", "$", "\`", "#" or control characters, got ${JSON.stringify(value)}`,
    );
  }
}

/** A DNS name (letters, digits, `-`, `.`), an IPv4 address, or an IPv6 address (bracketed or not). */
const HOST_NAME =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$/;

/**
 * Throws unless `value` looks like a host name or address: letters, digits, `-` and `.` (not
 * starting with `-`), or an IPv6 address. A host name is written into `Host` and `Match`
 * patterns and known_hosts lines, where `*`, `?`, `!`, `,` and whitespace have meanings of
 * their own (`Host *` would apply to every host). The full check (RFC 1123 labels) is the
 * input validation's; this one keeps a renderer from writing a pattern.
 *
 * @param what - names the value in the error message, e.g. `"stagingHostName"`
 */
export function assertHostName(value: string, what: string): void {
  if (typeof value !== "string" || value.length > 253 || !HOST_NAME.test(value)) {
    throw new Error(
      `${what} must be a host name or IP address (letters, digits, "-", "."), got ${JSON.stringify(value)}`,
    );
  }
}

/**
 * Throws unless `value` is a TCP port: an integer from 1 to 65535 (a number, not a string: a
 * string could carry a line break into a config file).
 *
 * @param what - names the value in the error message, e.g. `"ssh Port"`
 */
export function assertPort(value: unknown, what: string): asserts value is number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new Error(
      `${what} must be an integer from 1 to 65535, got ${typeof value === "string" ? JSON.stringify(value) : String(value)}`,
    );
  }
}
