/**
 * Input validation, on plain values, for every public component. Every problem is reported at
 * once, one line each, naming the field path, the host and what to do.
 *
 * Values not known yet when a component is constructed (Pulumi Outputs, e.g. a secret from
 * config) are {@link LATER} in the first pass and checked once resolved (see `host.ts`).
 * @packageDocumentation
 */
import { isIPv4, isIPv6 } from "node:net";
import { utils as sshUtils } from "ssh2";
import { expectedHostKey, hostKeyHint } from "./knownHosts";
import { parseCachePublicKey, parsePublicKeyLine } from "./render/publicKey";
import {
  BECOME_MODES,
  CLIENT_IDENTITY_MODES,
  FRAGMENTS_MODES,
  PROTOCOLS,
  REBUILD_MODES,
} from "./types";

/** Stands for a value that is not known yet (an Output or a Promise): checked once resolved. */
export const LATER: unique symbol = Symbol("nix-ssh-cache: known later");

/** A value known now (not {@link LATER}), given or not. */
type Now<T> = T | typeof LATER;

/** One hop of a connection, resolved to plain values (see `ConnectionArgs`). */
export interface PlainConnection {
  /** DNS name or IP address. */
  host: Now<string>;
  /** SSH port, 1..65535. */
  port?: Now<number>;
  /** Login user. */
  user?: Now<string>;
  /** OpenSSH/PEM private key block. */
  privateKey?: Now<string>;
  /** Passphrase of an encrypted private key. */
  privateKeyPassword?: Now<string>;
  /** Login password. */
  password?: Now<string>;
  /** ssh-agent socket path. */
  agentSocketPath?: Now<string>;
  /** Pinned host public key line. */
  hostKey?: Now<string>;
  /** Dial attempts (`-1`: unlimited). */
  dialErrorLimit?: Now<number>;
  /** Seconds per dial attempt. */
  perDialTimeout?: Now<number>;
  /** Jump host. */
  proxy?: Now<PlainConnection>;
}

/** A host resolved to plain values (see `HostArgs`). */
export interface PlainHost {
  /** How the operator reaches the host. */
  connection: Now<PlainConnection>;
  /** `"sudo"` or `"none"`. */
  become?: Now<string>;
  /** Staging only: the name production uses for staging. */
  cacheHost?: string;
  /** Production only: resource-name part. */
  name?: string;
}

/** Options of a role, resolved to plain values (shared by the component validators). */
export interface PlainRoleOptions {
  /** `"remote"`, `"local"` or `"none"`. */
  fragments?: string;
  /** Where fragments are written on the hosts, absolute. */
  fragmentPath?: string;
  /** Where fragments are written on the operator's machine (`fragments: "local"`). */
  localFragmentsDir?: string;
  /** `"switch"`, `"boot"` or `"none"`. */
  rebuild?: string;
  /** Add the module to configuration.nix imports. */
  addImport?: boolean;
}

/** Staging's options, resolved to plain values. */
export interface PlainServerOptions extends PlainRoleOptions {
  /** Name of the cache signing key, e.g. `"stage.example.com-1"`. */
  keyName?: Now<string>;
  /** Directory of the signing key on staging, absolute. */
  keyDirectory?: string;
  /** `"ssh"` or `"ssh-ng"`. */
  protocol?: string;
  /** Let production upload to staging. */
  write?: boolean;
  /** Signing key generation and the older generations still trusted. */
  signingKey?: { generation?: number; previousGenerations?: number[]; adoptExisting?: boolean };
  /** Substituter URL `compress=`. */
  compress?: boolean;
  /** Substituter URL `max-connections=`. */
  maxConnections?: number;
  /** Substituter URL `priority=`. */
  priority?: number;
  /** Extra SSH public keys authorised on staging. */
  authorizedKeys?: Now<Now<string>[]>;
  /** Production hosts' keys by name, each authorised on its own. */
  clients?: Record<string, Now<string>>;
}

/** All NixSshCache arguments, resolved to plain values (the input of {@link validateArgs}). */
export interface PlainNixSshCacheArgs extends PlainServerOptions {
  /** The staging (serving) host. */
  staging: PlainHost;
  /** The production (substituting) hosts; at least one. */
  production: PlainHost[];
  /** `"root"` or `"dedicated"`. */
  clientIdentity?: string;
  /** Install the one-session closure fetcher on production. */
  fetcher?: boolean;
  /** Store paths of the release staging keeps as GC roots (checked by `CachePin`). */
  pins?: unknown;
  /** With `pins`: how many releases staging keeps (checked by `CachePin`). */
  keepReleases?: unknown;
}

/**
 * Thrown by {@link validateArgs}: lists every invalid input, one per line.
 *
 * @example
 * ```ts
 * try { validateArgs(args); } catch (e) {
 *   if (e instanceof NixSshCacheInputError) console.error(e.problems.join("\n"));
 * }
 * ```
 */
export class NixSshCacheInputError extends Error {
  /** One line per problem, e.g. `production[1].host ("bad host!"): not a valid host name…`. */
  readonly problems: readonly string[];

  /** @param problems - the problem lines, at least one */
  constructor(problems: readonly string[]) {
    super(
      `nix-ssh-cache: ${problems.length} invalid input${problems.length === 1 ? "" : "s"}:\n` +
        problems.map((p) => `  - ${p}`).join("\n"),
    );
    this.name = "NixSshCacheInputError";
    this.problems = problems;
  }
}

const HOST_HINT = 'use a DNS name like "prod1.example.com" or an IP address like "203.0.113.7"';
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const PRIVATE_KEY =
  /^-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY)-----\r?\n[\s\S]+?\r?\n-----END \1-----$/;

/**
 * Whether `host` is an RFC 1123 host name, an IPv4 address, or an IPv6 address (bracketed or
 * not).
 *
 * @example
 * ```ts
 * isValidHost("stage.example.com"); // true
 * isValidHost("[::1]"); // true
 * isValidHost("bad host!"); // false
 * ```
 */
export function isValidHost(host: string): boolean {
  if (typeof host !== "string" || host === "") return false;
  if (isIPv4(host) || isIPv6(host)) return true;
  const bracketed = /^\[(.*)\]$/.exec(host);
  if (bracketed) return isIPv6(bracketed[1]);
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split(".");
  if (!labels.every((l) => LABEL.test(l))) return false;
  // An all-numeric last label is a malformed IPv4 address ("256.1.1.1", "10.0.0"), not a name.
  return !/^[0-9]+$/.test(labels[labels.length - 1]);
}

/** Canonical host for duplicate detection: lower case, IPv6 brackets removed. */
function hostIdentity(host: string, port: number | undefined): string {
  return `${host.toLowerCase().replace(/^\[(.*)\]$/, "$1")}#${port ?? 22}`;
}

function show(value: unknown): string {
  if (value === LATER) return "<not known yet>";
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function checkAbsolutePath(
  value: unknown,
  field: string,
  where: string,
  problems: string[],
  mustBeAbsolute = true,
): void {
  if (value === undefined) return;
  const at = `${field} (${show(value)}${where})`;
  if (typeof value !== "string" || value === "") {
    problems.push(`${at}: must be a non-empty path string`);
    return;
  }
  if (mustBeAbsolute && !value.startsWith("/")) {
    problems.push(`${at}: must be an absolute path, e.g. "/etc/nix-ssh-cache"`);
  }
  if (value.split("/").includes("..")) {
    problems.push(`${at}: must not contain a ".." segment; give the resolved path`);
  }
  if (/[\s"'`\\$\0]/.test(value)) {
    problems.push(`${at}: must not contain whitespace, newlines, quotes, "\\" or "$"`);
  }
}

/** Whether a value is given and known now. */
function known<T>(value: T | typeof LATER | undefined): value is T {
  return value !== undefined && value !== LATER;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Checks one hop of a connection (the host's own, or its `proxy`). */
function checkConnection(
  c: PlainConnection,
  at: string,
  problems: string[],
  isProxy: boolean,
): void {
  if (!isObject(c)) {
    problems.push(
      `${at}: must be an object like { host: "prod1.example.com", privateKey } (the connection of @pulumi/command's remote.Command)`,
    );
    return;
  }
  if (known(c.host) || c.host === undefined) {
    if (!(typeof c.host === "string" && isValidHost(c.host))) {
      problems.push(
        `${at}.host (${show(c.host)}): not a valid host name or IP address; ${HOST_HINT}`,
      );
    }
  }
  const on = `, host ${c.host === LATER ? "<not known yet>" : show(c.host)}`;
  if (known(c.port) && !isInt(c.port, 1, 65535)) {
    problems.push(`${at}.port (${show(c.port)}${on}): must be an integer from 1 to 65535, e.g. 22`);
  }
  if (known(c.user) && (typeof c.user !== "string" || !/^[a-z_][a-z0-9_-]*$/.test(c.user))) {
    problems.push(
      `${at}.user (${show(c.user)}${on}): not a valid user name; use lower-case letters, digits, "_" and "-", e.g. "root" or "deploy"`,
    );
  }
  const agent = c.agentSocketPath !== undefined || Boolean(process.env.SSH_AUTH_SOCK);
  if (c.privateKey === undefined && c.password === undefined && !agent) {
    problems.push(
      `${at} (host ${show(c.host)}): no credentials; set privateKey (an OpenSSH/PEM private key, as a Pulumi secret), password, or agentSocketPath (an ssh-agent${isProxy ? "" : "; or run with SSH_AUTH_SOCK set"})`,
    );
  }
  checkPrivateKey(c, at, on, problems);
  for (const field of ["password", "privateKeyPassword"] as const) {
    const v = c[field];
    if (known(v) && (typeof v !== "string" || v === "")) {
      problems.push(`${at}.${field} (<secret>${on}): must be a non-empty string`);
    }
  }
  if (known(c.agentSocketPath)) {
    checkAbsolutePath(c.agentSocketPath, `${at}.agentSocketPath`, on, problems);
  }
  if (known(c.hostKey)) checkHostKey(c.hostKey, `${at}.hostKey`, on, problems);
  checkHostKeyKnown(c, at, problems);
  if (known(c.dialErrorLimit) && !(isInt(c.dialErrorLimit, 1, 1000) || c.dialErrorLimit === -1)) {
    problems.push(
      `${at}.dialErrorLimit (${show(c.dialErrorLimit)}${on}): must be an integer from 1 to 1000, or -1 for no limit, e.g. 10`,
    );
  }
  if (known(c.perDialTimeout) && !isInt(c.perDialTimeout, 0, 3600)) {
    problems.push(
      `${at}.perDialTimeout (${show(c.perDialTimeout)}${on}): must be a number of seconds from 0 (no limit) to 3600, e.g. 15`,
    );
  }
  if (known(c.proxy)) {
    if (isProxy) {
      problems.push(`${at}.proxy${on}: a jump host cannot have a proxy of its own; give one hop`);
    } else {
      checkConnection(c.proxy, `${at}.proxy`, problems, true);
    }
  }
}

function checkPrivateKey(c: PlainConnection, at: string, on: string, problems: string[]): void {
  if (!known(c.privateKey)) return;
  if (typeof c.privateKey !== "string" || !PRIVATE_KEY.test(c.privateKey.trim())) {
    problems.push(
      `${at}.privateKey (<secret>${on}): not an OpenSSH/PEM private key; expected a "-----BEGIN ... PRIVATE KEY-----" block (the key file's contents, not its path)`,
    );
    return;
  }
  if (c.privateKeyPassword === LATER) return;
  // A well-formed block can still be unreadable (truncated, corrupted, wrong passphrase): ssh2
  // would only fail when connecting, after other hosts were already changed. ssh2's own
  // message is not shown: it can quote bytes of the key.
  const passphrase = typeof c.privateKeyPassword === "string" ? c.privateKeyPassword : undefined;
  const parsed = sshUtils.parseKey(c.privateKey, passphrase);
  if (parsed instanceof Error) {
    const hint = /encrypted|passphrase/i.test(parsed.message)
      ? passphrase === undefined
        ? "it is passphrase-protected: set privateKeyPassword (a Pulumi secret)"
        : "privateKeyPassword does not decrypt it"
      : "corrupted or truncated; give the key file's complete contents";
    problems.push(`${at}.privateKey (<secret>${on}): cannot be read: ${hint}`);
  }
}

function checkHostKey(hostKey: unknown, at: string, on: string, problems: string[]): void {
  try {
    if (typeof hostKey !== "string") throw new Error("must be a string");
    parsePublicKeyLine(hostKey);
    // the key blob itself must decode (a truncated line can still look like base64)
    const parsed = sshUtils.parseKey(hostKey.trim().split(/\s+/).slice(0, 2).join(" "));
    if (parsed instanceof Error) throw new Error(parsed.message.replace(/\.$/, ""));
  } catch (e) {
    problems.push(
      `${at} (${show(hostKey)}${on}): not a valid SSH public host key: ${(e as Error).message}; copy a line of /etc/ssh/ssh_host_ed25519_key.pub`,
    );
  }
}

/**
 * Checks that the hop's host key can be verified: its `hostKey` (not `@revoked` in the
 * operator's known_hosts), else a key of the host in the operator's known_hosts (see
 * `knownHosts.ts`). Nothing is reached without one: a key read over an unverified connection
 * (staging's host key, the cache's public key) would be trusted by every production host.
 */
function checkHostKeyKnown(c: PlainConnection, at: string, problems: string[]): void {
  if (c.hostKey === LATER || c.port === LATER || typeof c.host !== "string") return;
  if (!isValidHost(c.host) || (c.port !== undefined && !isInt(c.port, 1, 65535))) return;
  if (c.hostKey !== undefined && typeof c.hostKey !== "string") return;
  const port = (c.port as number | undefined) ?? 22;
  const expected = expectedHostKey(c.host, port, c.hostKey);
  if (typeof expected !== "string") return;
  const where = `host ${show(c.host)}${port === 22 ? "" : `, port ${port}`}`;
  problems.push(
    `${at}.hostKey (${where}): ${expected}; the host's key cannot be verified, so it is not reached: ${hostKeyHint(c.host, port)}`,
  );
}

/**
 * Checks a host (`HostArgs`): its connection (and proxy), `become`, `cacheHost` (staging) and
 * `name` (production). `at` is the field path, e.g. `production[1]`.
 */
export function checkHost(
  h: PlainHost,
  at: string,
  problems: string[],
  role: "staging" | "production",
): void {
  if (!isObject(h)) {
    problems.push(
      `${at}: must be an object like { connection: { host: "prod1.example.com", privateKey } }`,
    );
    return;
  }
  if (h.connection === undefined) {
    problems.push(
      `${at}.connection: required; give how to reach the host, e.g. { host: "prod1.example.com", privateKey }`,
    );
    return;
  }
  if (known(h.connection)) checkConnection(h.connection, `${at}.connection`, problems, false);
  const c = known(h.connection) && isObject(h.connection) ? h.connection : undefined;
  const on = `, host ${c && c.host !== LATER ? show(c.host) : "<not known yet>"}`;
  if (known(h.become)) checkEnum(h.become, `${at}.become`, BECOME_MODES, on, problems);
  if (h.cacheHost !== undefined) {
    if (role !== "staging") {
      problems.push(
        `${at}.cacheHost (${show(h.cacheHost)}${on}): only staging has a cacheHost; remove it`,
      );
    } else if (!(typeof h.cacheHost === "string" && isValidHost(h.cacheHost))) {
      problems.push(
        `${at}.cacheHost (${show(h.cacheHost)}${on}): not a valid host name or IP address; ${HOST_HINT}`,
      );
    }
  }
  if (
    h.name !== undefined &&
    (typeof h.name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(h.name))
  ) {
    problems.push(
      `${at}.name (${show(h.name)}${on}): must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit, e.g. "web1"`,
    );
  }
}

function checkEnum(
  value: unknown,
  field: string,
  allowed: readonly string[],
  where: string,
  problems: string[],
): void {
  if (value !== undefined && !allowed.includes(value as string)) {
    problems.push(
      `${field} (${show(value)}${where}): must be one of ${allowed.map((a) => `"${a}"`).join(", ")}`,
    );
  }
}

function isInt(value: unknown, min: number, max: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

const MAX_GENERATION = 1_000_000;

function checkSigningKey(
  signingKey: PlainServerOptions["signingKey"],
  where: string,
  problems: string[],
): void {
  if (signingKey === undefined) return;
  if (signingKey === null || typeof signingKey !== "object") {
    problems.push(
      `signingKey (${show(signingKey)}${where}): must be an object like { generation: 1, previousGenerations: [0] }`,
    );
    return;
  }
  checkBoolean(signingKey.adoptExisting, "signingKey.adoptExisting", where, problems);
  const generation = signingKey.generation ?? 0;
  if (!isInt(generation, 0, MAX_GENERATION)) {
    problems.push(
      `signingKey.generation (${show(signingKey.generation)}${where}): must be an integer from 0 to ${MAX_GENERATION}, e.g. 1`,
    );
  }
  const previous = signingKey.previousGenerations;
  if (previous === undefined) return;
  if (!Array.isArray(previous)) {
    problems.push(
      `signingKey.previousGenerations (${show(previous)}${where}): must be a list of generations, e.g. [0]`,
    );
    return;
  }
  const seen = new Set<number>();
  previous.forEach((g, i) => {
    const at = `signingKey.previousGenerations[${i}] (${show(g)}${where})`;
    if (!isInt(g, 0, MAX_GENERATION)) {
      problems.push(`${at}: must be an integer from 0 to ${MAX_GENERATION}, e.g. 0`);
    } else if (g === generation) {
      problems.push(
        `${at}: is the current generation; list only older generations still trusted during the overlap`,
      );
    } else if (seen.has(g)) {
      problems.push(`${at}: listed twice; list each generation once`);
    }
    seen.add(g);
  });
}

function checkSubstituterOptions(
  args: PlainServerOptions,
  where: string,
  problems: string[],
): void {
  if (args?.compress !== undefined && typeof args.compress !== "boolean") {
    problems.push(`compress (${show(args.compress)}${where}): must be true or false`);
  }
  const max = args?.maxConnections;
  if (max !== undefined) {
    if (!isInt(max, 1, 64)) {
      problems.push(`maxConnections (${show(max)}${where}): must be an integer from 1 to 64`);
    } else if (max > 1) {
      // bench/results.md: max-connections=8 hung on Nix 2.8 for ssh:// and ssh-ng:// alike.
      problems.push(
        `maxConnections (${max}${where}): more than 1 connection per substituter hung on Nix 2.8 (ssh:// and ssh-ng://, see bench/results.md); use 1 or leave it unset`,
      );
    }
  }
  if (args?.priority !== undefined && !isInt(args.priority, 0, 1000)) {
    problems.push(
      `priority (${show(args.priority)}${where}): must be an integer from 0 to 1000 (lower is preferred; cache.nixos.org is 40), e.g. 30`,
    );
  }
}

/** Checks the fragment options every role has. */
function checkRoleOptions(args: PlainRoleOptions, where: string, problems: string[]): void {
  checkAbsolutePath(args?.fragmentPath, "fragmentPath", where, problems);
  checkAbsolutePath(args?.localFragmentsDir, "localFragmentsDir", where, problems, false);
  checkEnum(args?.rebuild, "rebuild", REBUILD_MODES, where, problems);
  checkEnum(args?.fragments, "fragments", FRAGMENTS_MODES, where, problems);
  checkBoolean(args?.addImport, "addImport", where, problems);
}

function checkBoolean(value: unknown, field: string, where: string, problems: string[]): void {
  if (value !== undefined && typeof value !== "boolean") {
    problems.push(`${field} (${show(value)}${where}): must be true or false`);
  }
}

function checkAuthorizedKeys(
  keys: Now<Now<string>[]> | Record<string, Now<string>> | undefined,
  field: "authorizedKeys" | "clients",
  where: string,
  problems: string[],
): void {
  if (!known(keys)) return;
  if (field === "authorizedKeys" ? !Array.isArray(keys) : !isObject(keys)) {
    problems.push(
      field === "authorizedKeys"
        ? `authorizedKeys (${show(keys)}${where}): must be a list of SSH public key lines`
        : `clients (${show(keys)}${where}): must be an object of SSH public key lines by host name, e.g. { web: "ssh-ed25519 AAAA..." }`,
    );
    return;
  }
  if (field === "clients") {
    for (const n of Object.keys(keys)) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(n)) {
        problems.push(
          `clients.${n} (${show(n)}${where}): a client name must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit, e.g. "web1"`,
        );
      }
    }
  }
  const entries = Array.isArray(keys)
    ? keys.map((k, i): [string, unknown] => [`[${i}]`, k])
    : Object.entries(keys).map(([n, k]): [string, unknown] => [`.${n}`, k]);
  for (const [at, k] of entries) {
    if (k === LATER) continue;
    try {
      if (typeof k !== "string") throw new Error("must be a string");
      parsePublicKeyLine(k);
    } catch (e) {
      problems.push(
        `${field}${at} (${show(k)}${where}): not a valid SSH public key: ${(e as Error).message}; give a line like "ssh-ed25519 AAAA... root@prod1"`,
      );
    }
  }
}

/**
 * Directories shared by users or managed by something else, refused as `keyDirectory` with
 * everything under them: world-writable temporary directories (`/tmp`, `/var/tmp`, `/dev/shm`,
 * `/run/shm`, `/run/lock`, `/var/lock`: anyone can add names there), per-user directories
 * (`/run/user/<uid>`, `/home`: their owners can replace what they hold), virtual filesystems
 * (`/dev`, `/proc`, `/sys`), and `/nix` (the store is readable by every user, the rest is Nix's).
 */
export const SHARED_KEY_DIRECTORY_TREES = [
  "/tmp",
  "/var/tmp",
  "/dev",
  "/run/shm",
  "/run/lock",
  "/var/lock",
  "/run/user",
  "/home",
  "/proc",
  "/sys",
  "/nix",
];

/**
 * System directories refused as `keyDirectory` themselves (a subdirectory is fine, e.g. the
 * default `/etc/shipnix/binary`): the key files and their record would sit among the host's own
 * files, in a directory many tools write.
 */
export const SHARED_KEY_DIRECTORIES = [
  "/",
  "/etc",
  "/usr",
  "/usr/local",
  "/var",
  "/var/lib",
  "/var/cache",
  "/run",
  "/root",
  "/bin",
  "/sbin",
  "/lib",
  "/boot",
  "/opt",
  "/srv",
  "/mnt",
  "/media",
];

/**
 * Checks `keyDirectory`, the signing key's directory on staging: an absolute path of safe
 * characters (letters, digits, `.`, `_`, `-`, `+`, `@`, `/`: the path goes into nix.conf's
 * space-separated `secret-key-files`, a Nix string and shell messages), without `.`, `..` or
 * empty segments, and not a shared directory ({@link SHARED_KEY_DIRECTORY_TREES},
 * {@link SHARED_KEY_DIRECTORIES}). The host script also refuses a directory that a non-root
 * user could change.
 */
function checkKeyDirectory(value: unknown, where: string, problems: string[]): void {
  if (value === undefined || value === LATER) return;
  const at = `keyDirectory (${show(value)}${where})`;
  const example = 'e.g. "/etc/nix-ssh-cache" (the default is "/etc/shipnix/binary")';
  if (typeof value !== "string" || value === "") {
    problems.push(`${at}: must be a non-empty path string, ${example}`);
    return;
  }
  if (!value.startsWith("/")) {
    problems.push(`${at}: must be an absolute path, ${example}`);
    return;
  }
  if (/[^A-Za-z0-9._+@/-]/.test(value)) {
    problems.push(
      `${at}: may only contain letters, digits, ".", "_", "-", "+", "@" and "/" (no whitespace, "#", quotes, "$" or control characters), ${example}`,
    );
    return;
  }
  const segments = value.replace(/\/+$/, "").split("/").slice(1);
  if (value !== "/" && segments.some((s) => s === "" || s === "." || s === "..")) {
    problems.push(`${at}: must not contain ".", ".." or empty segments; give the resolved path`);
    return;
  }
  const dir = value === "/" ? "/" : `/${segments.join("/")}`;
  const tree = SHARED_KEY_DIRECTORY_TREES.find((t) => dir === t || dir.startsWith(`${t}/`));
  if (tree) {
    problems.push(
      `${at}: is ${dir === tree ? "" : "under "}${tree}, a directory other users (or the system) share; the signing key needs a directory only root can change, ${example}`,
    );
  } else if (SHARED_KEY_DIRECTORIES.includes(dir)) {
    problems.push(
      `${at}: is a system directory shared with the host's own files; use a directory of its own, ${example}`,
    );
  }
}

/** Checks staging's options (`CacheServer`'s, and `NixSshCache`'s of staging). */
function checkServerOptions(args: PlainServerOptions, where: string, problems: string[]): void {
  if (
    known(args?.keyName) &&
    (typeof args.keyName !== "string" || !CACHE_KEY_NAME.test(args.keyName))
  ) {
    problems.push(
      `keyName (${show(args.keyName)}${where}): ${CACHE_KEY_NAME_RULE}, e.g. "stage.example.com-1"`,
    );
  }
  checkKeyDirectory(args?.keyDirectory, where, problems);
  checkRoleOptions(args, where, problems);
  checkEnum(args?.protocol, "protocol", PROTOCOLS, where, problems);
  checkBoolean(args?.write, "write", where, problems);
  if (args?.protocol === "ssh-ng" && args?.write === false) {
    problems.push(
      `write (false${where}): protocol "ssh-ng" cannot be read-only: staging's serve user runs nix-daemon --stdio, so every authorised production key is a Nix daemon client that can add derivations and have staging build them, and staging signs the outputs. Use protocol "ssh" for a read-only cache, or remove write: false to accept that with ssh-ng`,
    );
  }
  checkSigningKey(args?.signingKey, where, problems);
  checkSubstituterOptions(args, where, problems);
  checkAuthorizedKeys(args?.authorizedKeys, "authorizedKeys", where, problems);
  checkAuthorizedKeys(args?.clients, "clients", where, problems);
}

/** `, staging host "…"` for messages about options, when the host is known. */
function hostSuffix(h: PlainHost | undefined, role: string): string {
  const c =
    h && isObject(h) && known(h.connection) && isObject(h.connection) ? h.connection : undefined;
  return c && c.host !== undefined ? `, ${role} host ${show(c.host)}` : "";
}

/** Canonical identity of a host for duplicate detection, when its address is known. */
function identityOf(h: PlainHost): string | undefined {
  const c = isObject(h) && known(h.connection) && isObject(h.connection) ? h.connection : undefined;
  if (!c || typeof c.host !== "string" || c.port === LATER) return undefined;
  return hostIdentity(c.host, typeof c.port === "number" ? c.port : undefined);
}

function checkProductionList(
  args: PlainNixSshCacheArgs,
  stagingAt: string,
  problems: string[],
): void {
  if (!Array.isArray(args?.production) || args.production.length === 0) {
    problems.push(
      `production (${show(args?.production)}${stagingAt}): needs at least one production host, e.g. [{ connection: { host: "prod1.example.com", privateKey } }]`,
    );
    return;
  }
  const seen = new Map<string, number>();
  const names = new Map<string, number>();
  const stagingId = args.staging ? identityOf(args.staging) : undefined;
  args.production.forEach((p, i) => {
    const at = `production[${i}]`;
    checkHost(p, at, problems, "production");
    const id = identityOf(p);
    if (id === undefined) return;
    const host = show((p.connection as PlainConnection).host);
    const first = seen.get(id);
    if (first !== undefined) {
      problems.push(
        `${at}.connection.host (${host}): duplicates production[${first}] (same host and port); list each production host once`,
      );
    } else {
      seen.set(id, i);
    }
    if (id === stagingId) {
      problems.push(
        `${at}.connection.host (${host}): is also the staging host; a host cannot substitute from itself, remove it from production`,
      );
    }
    if (typeof p.name === "string") {
      const firstName = names.get(p.name);
      if (firstName !== undefined) {
        problems.push(
          `${at}.name (${show(p.name)}, host ${host}): duplicates production[${firstName}].name; resource names must be unique`,
        );
      } else {
        names.set(p.name, i);
      }
    }
  });
}

/**
 * Validates resolved NixSshCache arguments. Collects every problem and throws one
 * {@link NixSshCacheInputError} listing them, one line each, of the form
 * `<field path> (<value>, host "<host>"): <what is wrong>; <what to do>`. Secret values
 * (`privateKey`, `password`, `privateKeyPassword`) are never echoed. Values that are
 * {@link LATER} are skipped (checked again once known).
 *
 * Checks each host's connection (host names: RFC 1123, IPv4, IPv6; ports; user names;
 * credentials: a private key block that ssh2 can read, with its passphrase when encrypted, a
 * password or an ssh-agent; host keys; dial limits; the jump host), `become`, `cacheHost`,
 * `name`; `keyName`, absolute paths, the `protocol`, `rebuild` and `fragments` enums,
 * `clientIdentity`, `signingKey` generations, the substituter options (`compress`,
 * `maxConnections` — at most 1 — and `priority`), `keepReleases` only with `pins`, extra
 * `authorizedKeys`, a non-empty production list, duplicate production hosts and names, and
 * staging listed as production.
 *
 * @throws NixSshCacheInputError when any input is invalid
 * @example
 * ```ts
 * validateArgs({
 *   staging: { connection: { host: "stage.example.com", privateKey } },
 *   production: [{ connection: { host: "prod1.example.com", privateKey } }],
 * });
 * ```
 */
export function validateArgs(args: PlainNixSshCacheArgs): void {
  const problems: string[] = [];
  const staging = args?.staging;
  if (staging === undefined || staging === null) {
    problems.push(
      'staging: required; give the staging host, e.g. { connection: { host: "stage.example.com", privateKey } }',
    );
  } else {
    checkHost(staging, "staging", problems, "staging");
  }
  const stagingAt = hostSuffix(staging, "staging");
  checkProductionList(args, stagingAt, problems);
  checkServerOptions(args, stagingAt, problems);
  checkEnum(args?.clientIdentity, "clientIdentity", CLIENT_IDENTITY_MODES, stagingAt, problems);
  checkBoolean(args?.fetcher, "fetcher", stagingAt, problems);
  if (args?.keepReleases !== undefined && args?.pins === undefined) {
    problems.push(
      `keepReleases (${show(args.keepReleases)}${stagingAt}): keeps nothing without pins; give pins (the release's store paths) or leave keepReleases unset`,
    );
  }
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/** `CacheServer`'s arguments, resolved to plain values. */
export interface PlainCacheServerArgs extends PlainServerOptions {
  /** The staging host. */
  host: PlainHost;
}

/** Validates `CacheServer`'s arguments (see {@link validateArgs} for the form of the problems). */
export function validateServerArgs(args: PlainCacheServerArgs): void {
  const problems: string[] = [];
  checkHost(args?.host, "host", problems, "staging");
  checkServerOptions(args, hostSuffix(args?.host, "staging"), problems);
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/** `CacheClient`'s arguments, resolved to plain values. */
export interface PlainCacheClientArgs extends PlainRoleOptions {
  /** The production host. */
  host: PlainHost;
  /** `"root"` or `"dedicated"`. */
  clientIdentity?: string;
  /** Verify by substituting the canary. */
  verify?: boolean;
  /** Install the one-session closure fetcher. */
  fetcher?: boolean;
}

/** Validates `CacheClient`'s arguments (see {@link validateArgs}). */
export function validateClientArgs(args: PlainCacheClientArgs): void {
  const problems: string[] = [];
  checkHost(args?.host, "host", problems, "production");
  const where = hostSuffix(args?.host, "production");
  checkRoleOptions(args, where, problems);
  checkEnum(args?.clientIdentity, "clientIdentity", CLIENT_IDENTITY_MODES, where, problems);
  checkBoolean(args?.verify, "verify", where, problems);
  checkBoolean(args?.fetcher, "fetcher", where, problems);
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/**
 * The name part of a cache public key (`NAME:BASE64`) and of `keyName`: written into nix.conf
 * (where `#` starts a comment and whitespace splits values) and into Nix strings.
 */
// eslint-disable-next-line no-control-regex -- control characters are what this refuses
const CACHE_KEY_NAME = /^[^\s:"'\\$`#\0-\x1f\x7f]+$/;
const CACHE_KEY_NAME_RULE =
  'must be non-empty without ":", whitespace, quotes, "\\", "$", "`", "#" or control characters';

/** A store path: `/nix/store/<32 base-32 characters>-<name>`, name characters as Nix allows. */
const STORE_PATH = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$/;

/** Substituter URL parameters a cache's coordinates may carry (those `CacheServer` renders). */
const COORDINATE_URL_PARAMS: Record<string, RegExp> = {
  compress: /^(?:true|false)$/,
  "max-connections": /^[0-9]{1,4}$/,
  priority: /^[0-9]{1,4}$/,
};

/**
 * Cache coordinates (`CacheClient`'s `cache`: `CacheServer.coordinates`, or the same object read
 * from another stack), resolved to plain values. Every field comes from outside this program.
 */
export interface PlainCacheCoordinates {
  /** e.g. `ssh://nix-ssh@stage.example.com?priority=30`. */
  substituterUrl: Now<string>;
  /** `NAME:BASE64` cache public keys, at least one. */
  publicKeys: Now<Now<string>[]>;
  /** Name production reaches staging by. */
  hostName: Now<string>;
  /** Staging's SSH port. */
  port: Now<number>;
  /** Staging's SSH host public key line. */
  hostKey: Now<string>;
  /** A store path signed on staging. */
  canaryPath: Now<string>;
}

/** Checks `cache.substituterUrl` and that it names `hostName`. */
function checkSubstituterUrl(url: unknown, hostName: unknown, at: string, problems: string[]) {
  const bad = (what: string) =>
    problems.push(
      `${at} (${show(url)}): ${what}; expected what CacheServer exports, e.g. "ssh://nix-ssh@stage.example.com?priority=30"`,
    );
  if (typeof url !== "string") return bad("must be a string");
  const match =
    /^(ssh|ssh-ng):\/\/([a-z_][a-z0-9_-]*)@(\[[0-9A-Fa-f:.]+\]|[^/?#@[\]\s]+)(?:\?(.*))?$/.exec(
      url,
    );
  if (!match)
    return bad('not an "ssh://" or "ssh-ng://" URL of the form <user>@<host>[?parameters]');
  const [, , , host, query] = match;
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  if (!isValidHost(bare)) return bad(`its host ${JSON.stringify(host)} is not a valid host name`);
  if (
    typeof hostName === "string" &&
    bare.toLowerCase() !== hostName.replace(/^\[(.*)\]$/, "$1").toLowerCase()
  ) {
    bad(
      `its host ${JSON.stringify(host)} is not cache.hostName (${JSON.stringify(hostName)}), whose key production pins`,
    );
  }
  for (const param of query === undefined ? [] : query.split("&")) {
    const [name, value = ""] = param.split("=", 2);
    const rule = COORDINATE_URL_PARAMS[name];
    if (!rule || !rule.test(value) || param.split("=").length !== 2) {
      bad(
        `parameter ${JSON.stringify(param)} is not allowed; a cache's URL may carry only ${Object.keys(COORDINATE_URL_PARAMS).join(", ")} (numbers, true or false)`,
      );
    }
  }
}

/**
 * Validates cache coordinates as `CacheClient` receives them (they may come from another stack
 * through a `StackReference`, or from staging's own outputs), with the rules of direct input:
 * `hostName` a host name or IP address, `port` an integer 1..65535, `hostKey` an SSH public
 * host key, `publicKeys` one or more `NAME:BASE64` cache keys (32-byte keys, names as for
 * `keyName`), `substituterUrl` an `ssh://` or `ssh-ng://` URL to `hostName` with only the
 * parameters `CacheServer` renders, `canaryPath` a store path. Values not known yet are skipped.
 *
 * @throws NixSshCacheInputError listing every invalid field, e.g.
 * `cache.port ("22\n  ProxyCommand …"): must be an integer from 1 to 65535`
 * @example
 * ```ts
 * validateCacheCoordinates(await coordinatesFromAnotherStack);
 * ```
 */
export function validateCacheCoordinates(cache: Now<PlainCacheCoordinates>): void {
  if (cache === LATER) return;
  const problems: string[] = [];
  if (!isObject(cache)) {
    problems.push(
      `cache (${show(cache)}): must be the coordinates object CacheServer exports (substituterUrl, publicKeys, hostName, port, hostKey, canaryPath)`,
    );
    throw new NixSshCacheInputError(problems);
  }
  const c = cache as PlainCacheCoordinates;
  if (known(c.hostName) && !(typeof c.hostName === "string" && isValidHost(c.hostName))) {
    problems.push(
      `cache.hostName (${show(c.hostName)}): not a valid host name or IP address; ${HOST_HINT}`,
    );
  }
  if (known(c.port) && !isInt(c.port, 1, 65535)) {
    problems.push(`cache.port (${show(c.port)}): must be an integer from 1 to 65535, e.g. 22`);
  }
  if (known(c.hostKey)) checkHostKey(c.hostKey, "cache.hostKey", "", problems);
  if (known(c.substituterUrl)) {
    checkSubstituterUrl(
      c.substituterUrl,
      // compared with hostName only when that is valid (else reported once, as cache.hostName)
      typeof c.hostName === "string" && isValidHost(c.hostName) ? c.hostName : undefined,
      "cache.substituterUrl",
      problems,
    );
  }
  if (known(c.publicKeys)) {
    if (!Array.isArray(c.publicKeys) || c.publicKeys.length === 0) {
      problems.push(
        `cache.publicKeys (${show(c.publicKeys)}): must be a non-empty list of cache public keys, e.g. ["stage.example.com-1:T0xD...il8="]`,
      );
    } else {
      c.publicKeys.forEach((k, i) => {
        if (k === LATER) return;
        const at = `cache.publicKeys[${i}] (${show(k)})`;
        try {
          if (typeof k !== "string") throw new Error("must be a string");
          const { name } = parseCachePublicKey(k);
          if (!CACHE_KEY_NAME.test(name) || k !== k.trim()) {
            throw new Error(
              `its name ${CACHE_KEY_NAME_RULE} and the key no surrounding whitespace`,
            );
          }
        } catch (e) {
          problems.push(`${at}: not a valid cache public key: ${(e as Error).message}`);
        }
      });
    }
  }
  if (known(c.canaryPath) && !(typeof c.canaryPath === "string" && STORE_PATH.test(c.canaryPath))) {
    problems.push(
      `cache.canaryPath (${show(c.canaryPath)}): must be a store path like "/nix/store/<32 characters>-nix-ssh-cache-canary"`,
    );
  }
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/** `ClosureFetch`'s arguments, resolved to plain values. */
export interface PlainClosureFetchArgs {
  /** The production host. */
  host: PlainHost;
  /** Store paths (or `.drv`) to fetch. */
  paths: Now<Now<string>[]>;
  /** Fall back to Nix's own substitution. */
  fallback?: boolean;
}

/** Validates `ClosureFetch`'s arguments (see {@link validateArgs}). */
export function validateFetchArgs(args: PlainClosureFetchArgs): void {
  const problems: string[] = [];
  checkHost(args?.host, "host", problems, "production");
  const where = hostSuffix(args?.host, "production");
  const paths = args?.paths;
  if (known(paths)) {
    if (!Array.isArray(paths) || paths.length === 0) {
      problems.push(
        `paths (${Array.isArray(paths) ? "[]" : show(paths)}${where}): needs at least one store path, e.g. ["/nix/store/…-nixos-system-web"]`,
      );
    } else {
      paths.forEach((p, i) => {
        if (
          known(p) &&
          (typeof p !== "string" || !/^\/nix\/store\/[0-9a-z]{32}-[^/\s]+$/.test(p))
        ) {
          problems.push(
            `paths[${i}] (${show(p)}${where}): must be a /nix/store path (a .drv stands for its outputs)`,
          );
        }
      });
    }
  }
  checkBoolean(args?.fallback, "fallback", where, problems);
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/** Validates one host on its own, e.g. `ClientIdentity`'s (see {@link validateArgs}). */
export function validateHost(host: PlainHost, role: "staging" | "production"): void {
  const problems: string[] = [];
  checkHost(host, "host", problems, role);
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/**
 * The value of `input` as far as it is known now: Outputs and Promises (at any depth of plain
 * objects and arrays) become {@link LATER}. The first validation pass runs on this view.
 */
export function knownNow(input: unknown): unknown {
  if (input === null || input === undefined) return input;
  if (typeof input !== "object") return input;
  if (isPending(input)) return LATER;
  if (Array.isArray(input)) return input.map(knownNow);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) out[k] = knownNow(v);
  return out;
}

/** Whether a value is a Pulumi Output or a Promise (not known synchronously). */
function isPending(value: object): boolean {
  return (
    typeof (value as { then?: unknown }).then === "function" ||
    (value as { __pulumiOutput?: unknown }).__pulumiOutput === true
  );
}
