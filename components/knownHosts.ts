/**
 * The operator's `known_hosts`, read as OpenSSH's `ssh` reads them (hostfile.c, match.c), and
 * SHA-256 fingerprints as `ssh-keygen -l` prints them.
 *
 * No maintained npm library parses known_hosts (ssh2 has none; `known-hosts` on npm is one
 * 0.1.0 release that neither hashes nor negates), so this is the part of OpenSSH's behaviour the
 * operator's connection needs:
 * - files: `~/.ssh/known_hosts`, `~/.ssh/known_hosts2`, `/etc/ssh/ssh_known_hosts`,
 *   `/etc/ssh/ssh_known_hosts2` (`~` is `os.homedir()`, i.e. `$HOME`);
 * - the name looked up is the host in lower case, `[host]:port` when the port is not 22;
 * - a line's host field is a hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))` or a
 *   comma list of patterns with `*` and `?`; a matching `!pattern` excludes the line;
 * - `@revoked` lines list keys that are refused whatever else says; `@cert-authority` lines are
 *   ignored (ssh2 does not verify host certificates) and reported as a note.
 *
 * Used by the program (to pin the key at resolution) and by the dynamic provider (to verify a
 * connection stored without a pin, and to refuse a revoked key): only Node built-ins, no
 * module-level state.
 */
import { createHash, createHmac } from "crypto";
import { readFileSync } from "fs";
import { homedir } from "os";

/** One key line of a known_hosts file that names the host looked up. */
export interface KnownHostKey {
  /** `"<type> <base64>"`, e.g. `"ssh-ed25519 AAAAC3Nza…"`. */
  key: string;
  /** Key algorithm, e.g. `"ssh-ed25519"`. */
  type: string;
  /** Where it was found: `"/root/.ssh/known_hosts:3"`. */
  source: string;
}

/** What the known_hosts files say about one host. */
export interface KnownHostsLookup {
  /** Keys of the host (not revoked), in file order. */
  keys: KnownHostKey[];
  /** `@revoked` keys that name the host (or every host). */
  revoked: KnownHostKey[];
  /** Lines that were skipped with a reason (e.g. `@cert-authority`). */
  notes: string[];
}

/** The files `ssh` reads by default, user files first. */
export function knownHostsFiles(home = homedir()): string[] {
  return [
    `${home}/.ssh/known_hosts`,
    `${home}/.ssh/known_hosts2`,
    "/etc/ssh/ssh_known_hosts",
    "/etc/ssh/ssh_known_hosts2",
  ];
}

/** The name `ssh` looks up: lower case, `[host]:port` when the port is not 22. */
export function knownHostsName(host: string, port: number): string {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return port === 22 ? bare : `[${bare}]:${port}`;
}

/** OpenSSH's `match_pattern`: `*` any run, `?` one character, else the character itself. */
function matchPattern(s: string, pattern: string): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${re}$`, "s").test(s);
}

/**
 * Whether a known_hosts host field names `name` (from {@link knownHostsName}): a hashed entry
 * by its HMAC, else OpenSSH's `match_hostname` (comma list, `!` negates and wins, lower case).
 */
export function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|")) {
    const m = /^\|1\|([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)$/.exec(field);
    if (!m) return false;
    const mac = createHmac("sha1", Buffer.from(m[1], "base64")).update(name).digest("base64");
    return mac === m[2];
  }
  let positive = false;
  for (const sub of field.split(",")) {
    const negated = sub.startsWith("!");
    const pattern = (negated ? sub.slice(1) : sub).toLowerCase();
    if (pattern === "" || !matchPattern(name, pattern)) continue;
    if (negated) return false;
    positive = true;
  }
  return positive;
}

/** The keys, revoked keys and notes of `text` (one known_hosts file) for `name`. */
export function parseKnownHosts(text: string, file: string, name: string): KnownHostsLookup {
  const found: KnownHostsLookup = { keys: [], revoked: [], notes: [] };
  text.split("\n").forEach((raw, i) => {
    const words = raw.trim().split(/[ \t]+/);
    if (words[0] === "" || words[0].startsWith("#")) return;
    const marker = words[0].startsWith("@") ? words.shift() : undefined;
    const [hosts, type, base64] = words;
    if (!base64 || !hostFieldMatches(hosts, name)) return;
    const entry: KnownHostKey = { key: `${type} ${base64}`, type, source: `${file}:${i + 1}` };
    if (marker === "@revoked") found.revoked.push(entry);
    else if (marker === "@cert-authority") {
      found.notes.push(
        `${entry.source}: @cert-authority ignored (host certificates are not supported by the operator's SSH client, ssh2); add the host's own key`,
      );
    } else if (marker === undefined) found.keys.push(entry);
  });
  return found;
}

/** Reads every file of `files` (missing ones are skipped) for `host:port`. */
export function lookupKnownHosts(
  host: string,
  port: number,
  files = knownHostsFiles(),
): KnownHostsLookup {
  const name = knownHostsName(host, port);
  const all: KnownHostsLookup = { keys: [], revoked: [], notes: [] };
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    const one = parseKnownHosts(text, file, name);
    all.keys.push(...one.keys);
    all.revoked.push(...one.revoked);
    all.notes.push(...one.notes);
  }
  const revoked = new Set(all.revoked.map((r) => r.key));
  all.keys = all.keys.filter((k) => !revoked.has(k.key));
  return all;
}

/** Key types by preference (ssh2's own order): the one pinned when a host has several. */
const PREFERENCE = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "ssh-rsa",
];

/**
 * The host-key algorithms (as ssh2 names them) that make a server present a key of `type`;
 * none for a type ssh2 cannot verify.
 */
export function hostKeyAlgorithms(type: string): string[] {
  if (type === "ssh-rsa") return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
  return [...PREFERENCE, "ssh-dss"].includes(type) ? [type] : [];
}

/** A host key to verify against, and where it came from (`"hostKey"` or a file). */
export interface ExpectedHostKey {
  /** `"<type> <base64>"`. */
  key: string;
  /** `"hostKey"`, or the known_hosts file the key was found in. */
  source: string;
}

/**
 * The key a hop must present: its `hostKey`, else the preferred key of the host in the
 * operator's known_hosts; a string (the problem) when there is none or it is `@revoked`.
 */
export function expectedHostKey(
  host: string,
  port: number,
  hostKey: string | undefined,
  files = knownHostsFiles(),
): ExpectedHostKey | string {
  const known = lookupKnownHosts(host, port, files);
  const revokedBy = (key: string) => known.revoked.find((r) => r.key === key)?.source;
  if (hostKey !== undefined) {
    const key = hostKey.trim().split(/\s+/).slice(0, 2).join(" ");
    const revoked = revokedBy(key);
    if (revoked) return `its hostKey ${fingerprint(key)} is marked @revoked at ${revoked}`;
    return { key, source: "hostKey" };
  }
  const rank = (t: string) => (PREFERENCE.includes(t) ? PREFERENCE.indexOf(t) : PREFERENCE.length);
  const best = [...known.keys].sort((a, b) => rank(a.type) - rank(b.type))[0];
  if (best) return { key: best.key, source: best.source.replace(/:\d+$/, "") };
  const notes = known.notes.length ? ` (${known.notes.join("; ")})` : "";
  const name = knownHostsName(host, port);
  const revoked = known.revoked.length ? ` (its only keys there are @revoked)` : "";
  return `no hostKey given and no key for ${name} in ${files.join(", ")}${revoked}${notes}`;
}

/** What to do when a host has no key to verify against (see {@link expectedHostKey}). */
export function hostKeyHint(host: string, port: number): string {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  return (
    `get its key with \`ssh-keyscan -p ${port} -t ed25519 ${bare}\`, check the fingerprint of ` +
    "what it prints (pipe it to `ssh-keygen -lf -`) against the one the host's own console shows " +
    "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then set hostKey to its " +
    '"ssh-ed25519 AAAA…" part (or add the scanned line to ~/.ssh/known_hosts)'
  );
}

/**
 * The fingerprint `ssh-keygen -l` prints for a key line (`"<type> <base64> …"`) or blob:
 * `SHA256:<base64 without padding> (ED25519)`.
 */
export function fingerprint(key: string | Buffer): string {
  const blob =
    typeof key === "string" ? Buffer.from(key.trim().split(/\s+/)[1] ?? "", "base64") : key;
  const hash = createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
  const nameLength = blob.length >= 4 ? blob.readUInt32BE(0) : 0;
  const type = blob.subarray(4, 4 + nameLength).toString("latin1");
  const label = /ed25519/.test(type)
    ? "ED25519"
    : /ecdsa/.test(type)
      ? "ECDSA"
      : /rsa/.test(type)
        ? "RSA"
        : type || "unknown type";
  return `SHA256:${hash} (${label})`;
}
