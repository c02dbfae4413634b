/**
 * Substituter URLs for Nix SSH stores.
 * @packageDocumentation
 */
import type { Protocol } from "../types";
import { assertConfigToken, assertHostName } from "./nix";
import { parsePublicKeyLine } from "./publicKey";

/** Optional query parameters of an SSH substituter URL (Nix store settings). */
export interface SubstituterParams {
  /** `compress=true`: ssh `-C`. Slower on fast links and incompressible data. */
  compress?: boolean;
  /**
   * `max-connections=N`. Caution: `max-connections=8` on an `ssh://` substituter hung on
   * Nix 2.8; leave unset unless measured.
   */
  maxConnections?: number;
  /** `priority=N`: lower is preferred (cache.nixos.org is 40). */
  priority?: number;
  /** `ssh-key=<path>`: identity file on the substituting host, e.g. `"/root/.ssh/id_ed25519"`. */
  sshKey?: string;
  /**
   * `base64-ssh-public-host-key=<base64 of "ssh-ed25519 AAAA…">`: pins the staging host key in
   * the URL itself (Nix writes a temporary known-hosts file). Only works on port 22: Nix 2.8
   * writes the entry for the bare host name, which ssh does not use for another port.
   */
  base64SshPublicHostKey?: string;
}

/** Arguments of {@link substituterUrl}. */
export interface SubstituterUrlArgs {
  /** `"ssh"` gives `ssh://`, `"ssh-ng"` gives `ssh-ng://`. */
  protocol: Protocol;
  /**
   * Remote user serving the store.
   * @defaultValue `"nix-ssh"`
   */
  user?: string;
  /** Host name or IP address of the staging host as production reaches it. */
  host: string;
  /**
   * SSH port. Not rendered into the URL: Nix 2.8 passes `host:port` verbatim to `ssh` as the
   * host name (`ssh nix-ssh@stage.test:2222`, which fails). A port other than 22 must be set by
   * an ssh client config `Host` block (see `renderSshClientConfig`).
   * @defaultValue `22`
   */
  port?: number;
  /** Query parameters; only the given ones are rendered, in a fixed order. */
  params?: SubstituterParams;
}

function encodeParam(value: string): string {
  // Nix percent-decodes parameter values; keep "/" and ":" readable.
  return encodeURIComponent(value).replace(/%2F/gi, "/").replace(/%3A/gi, ":");
}

/**
 * Renders the substituter URL production uses to reach the staging store.
 *
 * Parameter order is fixed: `compress`, `max-connections`, `priority`, `ssh-key`,
 * `base64-ssh-public-host-key`. IPv6 addresses are bracketed. The port is never part of the
 * URL (see {@link SubstituterUrlArgs.port}).
 *
 * @example
 * ```ts
 * substituterUrl({ protocol: "ssh", host: "stage.yourapp.com" });
 * // => "ssh://nix-ssh@stage.yourapp.com"
 * substituterUrl({ protocol: "ssh-ng", host: "stage.test", params: { priority: 30 } });
 * // => "ssh-ng://nix-ssh@stage.test?priority=30"
 * ```
 */
export function substituterUrl(args: SubstituterUrlArgs): string {
  const user = args.user ?? "nix-ssh";
  const bare = args.host.replace(/^\[(.*)\]$/, "$1");
  const host = bare.includes(":") ? `[${bare}]` : bare;
  if (!/^[a-z_][a-z0-9_-]*$/.test(user)) {
    throw new Error(`substituter user ${JSON.stringify(user)} is not a valid user name`);
  }
  try {
    assertHostName(host, "substituter host");
  } catch {
    throw new Error(`substituter host ${JSON.stringify(args.host)} is not a valid host name`);
  }
  const p = args.params ?? {};
  const query: string[] = [];
  if (p.compress !== undefined) query.push(`compress=${p.compress ? "true" : "false"}`);
  if (p.maxConnections !== undefined)
    query.push(`max-connections=${positiveInt(p.maxConnections)}`);
  if (p.priority !== undefined) query.push(`priority=${positiveInt(p.priority, true)}`);
  if (p.sshKey !== undefined) query.push(`ssh-key=${encodeParam(p.sshKey)}`);
  if (p.base64SshPublicHostKey !== undefined) {
    query.push(`base64-ssh-public-host-key=${encodeParam(p.base64SshPublicHostKey)}`);
  }
  return `${args.protocol}://${user}@${host}${query.length ? `?${query.join("&")}` : ""}`;
}

function positiveInt(n: number, allowZero = false): string {
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1)) {
    throw new Error(`expected a ${allowZero ? "non-negative" : "positive"} integer, got ${n}`);
  }
  return String(n);
}

/**
 * The value for {@link SubstituterParams.base64SshPublicHostKey}: base64 of the host key line
 * `"<type> <base64>"` (any comment dropped).
 *
 * @throws Error when `hostKeyLine` is not a valid SSH public key line
 *
 * @example
 * ```ts
 * base64HostKey("ssh-ed25519 AAAAC3Nza... root@stage"); // => "c3NoLWVkMjU1MTkgQUFBQUMzTnph..."
 * ```
 */
export function base64HostKey(hostKeyLine: string): string {
  const { type, base64: data } = parsePublicKeyLine(hostKeyLine);
  return Buffer.from(`${type} ${data}`).toString("base64");
}

/**
 * Adds (or replaces) one query parameter of a substituter URL, e.g. a production host's own
 * `ssh-key=` on the URL a cache exported.
 *
 * @throws Error when `name` is not a lower-case parameter name, or `url` is not a plain token
 * (whitespace, quotes, `#`, `$`: it is written into nix.conf)
 * @example
 * ```ts
 * withUrlParam("ssh://nix-ssh@stage.test?priority=30", "ssh-key", "/etc/nix/nix-ssh-cache/id_ed25519");
 * // => "ssh://nix-ssh@stage.test?priority=30&ssh-key=/etc/nix/nix-ssh-cache/id_ed25519"
 * ```
 */
export function withUrlParam(url: string, name: string, value: string): string {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) {
    throw new Error(`substituter URL parameter name ${JSON.stringify(name)} is not valid`);
  }
  assertConfigToken(url, "substituter URL");
  const [base, query = ""] = url.split("?", 2);
  const kept = query === "" ? [] : query.split("&").filter((p) => !p.startsWith(`${name}=`));
  return `${base}?${[...kept, `${name}=${encodeParam(value)}`].join("&")}`;
}
