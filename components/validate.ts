/**
 * Input validation for NixSshCache, on plain (resolved) values. Every problem is reported at
 * once, one line each, naming the field path, the host and what to do.
 * @packageDocumentation
 */
import { isIPv4, isIPv6 } from "node:net";
import { utils as sshUtils } from "ssh2";
import { parsePublicKeyLine } from "./render/publicKey";

/** One host's connection settings, resolved to plain values (see `HostArgs`). */
export interface PlainHost {
  /** DNS name or IP address. */
  host: string;
  /** SSH port, 1..65535. */
  port?: number;
  /** Login user. */
  user?: string;
  /** OpenSSH/PEM private key block. */
  privateKey?: string;
  /** Passphrase of an encrypted `privateKey`. */
  privateKeyPassword?: string;
  /** Login password. */
  password?: string;
  /** ssh-agent socket. */
  agentSocketPath?: string;
  /** Pinned host public key line. */
  hostKey?: string;
  /** `"sudo"` or `"none"`. */
  become?: string;
}

/** All NixSshCache arguments, resolved to plain values (the input of {@link validateArgs}). */
export interface PlainNixSshCacheArgs {
  /** The staging (serving) host. */
  staging: PlainHost & { cacheHost?: string };
  /** The production (substituting) hosts; at least one. */
  production: (PlainHost & { name?: string })[];
  /** Name of the cache signing key, e.g. `"stage.example.com-1"`. */
  keyName?: string;
  /** Directory of the signing key on staging, absolute. */
  keyDirectory?: string;
  /** `"remote"`, `"local"` or `"none"`. */
  fragments?: string;
  /** Where fragments are written on the hosts, absolute. */
  fragmentPath?: string;
  /** Where fragments are written on the operator's machine (`fragments: "local"`). */
  localFragmentsDir?: string;
  /** `"switch"`, `"boot"` or `"none"`. */
  rebuild?: string;
  /** `"ssh"` or `"ssh-ng"`. */
  protocol?: string;
  /** Let production upload to staging. */
  write?: boolean;
  /** Signing key generation and the older generations still trusted. */
  signingKey?: { generation?: number; previousGenerations?: number[] };
  /** Substituter URL `compress=`. */
  compress?: boolean;
  /** Substituter URL `max-connections=`. */
  maxConnections?: number;
  /** Substituter URL `priority=`. */
  priority?: number;
  /** Extra SSH public keys authorised on staging. */
  authorizedKeys?: string[];
  /** `"root"` or `"dedicated"`. */
  clientIdentity?: string;
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

function checkHost(
  h: PlainHost & { cacheHost?: string; name?: string },
  path: string,
  problems: string[],
): void {
  if (h === null || typeof h !== "object") {
    problems.push(`${path}: must be an object like { host: "prod1.example.com", privateKey }`);
    return;
  }
  const hostValid = typeof h.host === "string" && isValidHost(h.host);
  if (!hostValid) {
    problems.push(
      `${path}.host (${show(h.host)}): not a valid host name or IP address; ${HOST_HINT}`,
    );
  }
  const on = `, host ${show(h.host)}`;
  if (
    h.port !== undefined &&
    (typeof h.port !== "number" || !Number.isInteger(h.port) || h.port < 1 || h.port > 65535)
  ) {
    problems.push(
      `${path}.port (${show(h.port)}${on}): must be an integer from 1 to 65535, e.g. 22`,
    );
  }
  if (h.user !== undefined && (typeof h.user !== "string" || !/^[a-z_][a-z0-9_-]*$/.test(h.user))) {
    problems.push(
      `${path}.user (${show(h.user)}${on}): not a valid user name; use lower-case letters, digits, "_" and "-", e.g. "root" or "deploy"`,
    );
  }
  if (h.become !== undefined && h.become !== "sudo" && h.become !== "none") {
    problems.push(`${path}.become (${show(h.become)}${on}): must be "sudo" or "none"`);
  }
  if (
    h.privateKey === undefined &&
    h.password === undefined &&
    h.agentSocketPath === undefined &&
    !process.env.SSH_AUTH_SOCK
  ) {
    problems.push(
      `${path} (host ${show(h.host)}): no credentials; set privateKey (an OpenSSH/PEM private key, as a Pulumi secret), password or agentSocketPath (SSH_AUTH_SOCK is not set)`,
    );
  }
  if (
    h.privateKey !== undefined &&
    (typeof h.privateKey !== "string" || !PRIVATE_KEY.test(h.privateKey.trim()))
  ) {
    problems.push(
      `${path}.privateKey (<secret>${on}): not an OpenSSH/PEM private key; expected a "-----BEGIN ... PRIVATE KEY-----" block (the key file's contents, not its path)`,
    );
  } else if (typeof h.privateKey === "string") {
    // A well-formed block can still be unreadable (truncated, corrupted, passphrase-protected):
    // ssh2 would only fail when connecting, after other hosts were already changed. ssh2's own
    // message is not shown: it can quote bytes of the key.
    const parsed = sshUtils.parseKey(h.privateKey);
    if (parsed instanceof Error && /no passphrase given/.test(parsed.message)) {
      if (!h.privateKeyPassword) {
        problems.push(
          `${path}.privateKey (<secret>${on}): is encrypted; set privateKeyPassword to its passphrase (as a Pulumi secret)`,
        );
      } else if (sshUtils.parseKey(h.privateKey, h.privateKeyPassword) instanceof Error) {
        problems.push(
          `${path}.privateKeyPassword (<secret>${on}): does not decrypt privateKey (wrong passphrase?)`,
        );
      }
    } else if (parsed instanceof Error) {
      problems.push(
        `${path}.privateKey (<secret>${on}): cannot be read (corrupted or truncated); give the key file's complete contents`,
      );
    }
  }
  if (h.password !== undefined && (typeof h.password !== "string" || h.password === "")) {
    problems.push(`${path}.password (<secret>${on}): must be a non-empty string`);
  }
  if (h.hostKey !== undefined) {
    try {
      if (typeof h.hostKey !== "string") throw new Error("must be a string");
      parsePublicKeyLine(h.hostKey);
      // the key blob itself must decode (a truncated line can still look like base64)
      const parsed = sshUtils.parseKey(h.hostKey.trim().split(/\s+/).slice(0, 2).join(" "));
      if (parsed instanceof Error) throw new Error(parsed.message.replace(/\.$/, ""));
    } catch (e) {
      problems.push(
        `${path}.hostKey (${show(h.hostKey)}${on}): not a valid SSH public host key: ${(e as Error).message}; copy a line of /etc/ssh/ssh_host_ed25519_key.pub`,
      );
    }
  }
  if (h.cacheHost !== undefined && !(typeof h.cacheHost === "string" && isValidHost(h.cacheHost))) {
    problems.push(
      `${path}.cacheHost (${show(h.cacheHost)}${on}): not a valid host name or IP address; ${HOST_HINT}`,
    );
  }
  if (
    h.name !== undefined &&
    (typeof h.name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(h.name))
  ) {
    problems.push(
      `${path}.name (${show(h.name)}${on}): must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit, e.g. "web1"`,
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
  signingKey: PlainNixSshCacheArgs["signingKey"],
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
  args: PlainNixSshCacheArgs,
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

/**
 * Validates resolved NixSshCache arguments. Collects every problem and throws one
 * {@link NixSshCacheInputError} listing them, one line each, of the form
 * `<field path> (<value>, host "<host>"): <what is wrong>; <what to do>`. Secret values
 * (`privateKey`, `password`) are never echoed.
 *
 * Checks host names (RFC 1123, IPv4, IPv6), ports, user names, `become`, credentials (a private
 * key block or a password), host keys, `keyName`, absolute paths, the `protocol`, `rebuild` and
 * `fragments` enums, `clientIdentity`, `signingKey` generations, the substituter options
 * (`compress`, `maxConnections` — at most 1 — and `priority`), extra
 * `authorizedKeys`, a non-empty production list, duplicate production hosts and names, and
 * staging listed as production.
 *
 * @throws NixSshCacheInputError when any input is invalid
 * @example
 * ```ts
 * validateArgs({
 *   staging: { host: "stage.example.com", privateKey },
 *   production: [{ host: "prod1.example.com", privateKey }],
 * });
 * ```
 */
export function validateArgs(args: PlainNixSshCacheArgs): void {
  const problems: string[] = [];
  const staging = args?.staging;
  if (staging === undefined || staging === null) {
    problems.push(
      'staging: required; give the staging host, e.g. { host: "stage.example.com", privateKey }',
    );
  } else {
    checkHost(staging, "staging", problems);
  }
  const stagingAt =
    staging && typeof staging === "object" ? `, staging host ${show(staging.host)}` : "";

  if (!Array.isArray(args?.production) || args.production.length === 0) {
    problems.push(
      `production (${show(args?.production)}${stagingAt}): needs at least one production host, e.g. [{ host: "prod1.example.com", privateKey }]`,
    );
  } else {
    const seen = new Map<string, number>();
    const names = new Map<string, number>();
    const stagingId =
      staging && typeof staging === "object" && typeof staging.host === "string"
        ? hostIdentity(staging.host, staging.port)
        : undefined;
    args.production.forEach((p, i) => {
      const path = `production[${i}]`;
      checkHost(p, path, problems);
      if (!p || typeof p !== "object" || typeof p.host !== "string") return;
      const id = hostIdentity(p.host, p.port);
      const first = seen.get(id);
      if (first !== undefined) {
        problems.push(
          `${path}.host (${show(p.host)}): duplicates production[${first}] (same host and port); list each production host once`,
        );
      } else {
        seen.set(id, i);
      }
      if (id === stagingId) {
        problems.push(
          `${path}.host (${show(p.host)}): is also the staging host; a host cannot substitute from itself, remove it from production`,
        );
      }
      if (typeof p.name === "string") {
        const firstName = names.get(p.name);
        if (firstName !== undefined) {
          problems.push(
            `${path}.name (${show(p.name)}, host ${show(p.host)}): duplicates production[${firstName}].name; resource names must be unique`,
          );
        } else {
          names.set(p.name, i);
        }
      }
    });
  }

  if (
    args?.keyName !== undefined &&
    (typeof args.keyName !== "string" || args.keyName === "" || /[:\s]/.test(args.keyName))
  ) {
    problems.push(
      `keyName (${show(args.keyName)}${stagingAt}): must be non-empty without ":" or whitespace, e.g. "stage.example.com-1"`,
    );
  }
  checkAbsolutePath(args?.keyDirectory, "keyDirectory", stagingAt, problems);
  checkAbsolutePath(args?.fragmentPath, "fragmentPath", stagingAt, problems);
  checkAbsolutePath(args?.localFragmentsDir, "localFragmentsDir", stagingAt, problems, false);
  checkEnum(args?.protocol, "protocol", ["ssh", "ssh-ng"], stagingAt, problems);
  checkEnum(args?.rebuild, "rebuild", ["switch", "boot", "none"], stagingAt, problems);
  checkEnum(args?.fragments, "fragments", ["remote", "local", "none"], stagingAt, problems);
  if (args?.write !== undefined && typeof args.write !== "boolean") {
    problems.push(`write (${show(args.write)}${stagingAt}): must be true or false`);
  }
  checkEnum(args?.clientIdentity, "clientIdentity", ["root", "dedicated"], stagingAt, problems);
  checkSigningKey(args?.signingKey, stagingAt, problems);
  checkSubstituterOptions(args, stagingAt, problems);
  if (args?.authorizedKeys !== undefined) {
    if (!Array.isArray(args.authorizedKeys)) {
      problems.push(
        `authorizedKeys (${show(args.authorizedKeys)}${stagingAt}): must be a list of SSH public key lines`,
      );
    } else {
      args.authorizedKeys.forEach((k, i) => {
        try {
          if (typeof k !== "string") throw new Error("must be a string");
          parsePublicKeyLine(k);
        } catch (e) {
          problems.push(
            `authorizedKeys[${i}] (${show(k)}${stagingAt}): not a valid SSH public key: ${(e as Error).message}; give a line like "ssh-ed25519 AAAA... root@prod1"`,
          );
        }
      });
    }
  }
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}
