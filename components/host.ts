/**
 * The host model: from the user's `HostArgs` (a `@pulumi/command` connection, Pulumi inputs,
 * secrets) to one validated, resolved {@link Connection} per host, and the host scripts that run
 * over it.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { Connection, ProxyConnection } from "./ssh";
import { BecomeMode, HostArgs } from "./types";
import { knownNow, NixSshCacheInputError, PlainConnection } from "./validate";

/** A host, validated and resolved once. */
export interface ResolvedHost {
  /** The resolved connection; rejects (a `ResourceError`) when a value known late is invalid. */
  connection: pulumi.Output<Connection>;
  /** Where the operator connects (`connection.host`). */
  address: pulumi.Output<string>;
  /** The host's SSH port. */
  port: pulumi.Output<number>;
  /** The name production uses for this host (`cacheHost`, else `connection.host`). */
  hostName: pulumi.Output<string>;
}

/** A validator of a whole argument object, throwing `NixSshCacheInputError`. */
export type Validator<T> = (plain: T) => void;

/**
 * Validates `args` for `resource`: the values known now at once (a `ResourceError` thrown from
 * the constructor, every problem listed), the rest once resolved (the returned Output rejects
 * with one `ResourceError`; gate the host connections on it so nothing runs on any host). The
 * second pass checks `later` (default `args`): leave out what must not hold back the hosts.
 */
export function validateNow<T>(
  resource: pulumi.Resource,
  args: T,
  validate: Validator<T>,
  later: T = args,
): pulumi.Output<true> {
  run(resource, () => validate(knownNow(args) as T));
  return pulumi.output(later as pulumi.Input<T>).apply((plain) => {
    run(resource, () => validate(plain as T));
    return true as const;
  }) as pulumi.Output<true>;
}

function run(resource: pulumi.Resource, check: () => void): void {
  try {
    check();
  } catch (e) {
    if (e instanceof NixSshCacheInputError) {
      throw new pulumi.ResourceError(e.message, resource, true);
    }
    throw e;
  }
}

const resolvedHosts = new WeakMap<HostArgs, ResolvedHost>();

/**
 * Resolves a host once: the same `HostArgs` object given to several components (e.g. to a
 * `ClientIdentity` and a `CacheClient`) gives the same {@link ResolvedHost}. Its connection waits
 * for `valid` (the validation of the component that resolved it first).
 */
export function resolveHost(h: HostArgs, valid: pulumi.Output<true>): ResolvedHost {
  const cached = resolvedHosts.get(h);
  if (cached) return cached;
  const plain = pulumi.output({ connection: h.connection, become: h.become }) as pulumi.Output<{
    connection: PlainConnection;
    become?: BecomeMode;
  }>;
  const connection = pulumi
    .all([valid, plain])
    .apply(([, p]) => toConnection(p.connection, p.become));
  const address = pulumi.output(h.connection).apply((c) => c.host);
  const resolved: ResolvedHost = {
    connection,
    address: pulumi.unsecret(address),
    port: pulumi.unsecret(pulumi.output(h.connection).apply((c) => c.port ?? 22)),
    hostName: h.cacheHost !== undefined ? pulumi.output(h.cacheHost) : pulumi.unsecret(address),
  };
  resolvedHosts.set(h, resolved);
  return resolved;
}

/** Whether `h` was resolved (and so validated) already, e.g. by a parent `NixSshCache`. */
export function isResolved(h: HostArgs): boolean {
  return resolvedHosts.has(h);
}

function hop(c: PlainConnection): ProxyConnection {
  const out: ProxyConnection = {
    host: c.host as string,
    port: (c.port as number | undefined) ?? 22,
    user: (c.user as string | undefined) ?? "root",
  };
  const optional = [
    "privateKey",
    "privateKeyPassword",
    "password",
    "agentSocketPath",
    "dialErrorLimit",
    "perDialTimeout",
  ] as const;
  for (const k of optional) {
    if (c[k] !== undefined && c[k] !== null) (out as unknown as Record<string, unknown>)[k] = c[k];
  }
  if (typeof c.hostKey === "string") out.hostKey = c.hostKey.trim();
  return out;
}

/**
 * Resolves defaults as `@pulumi/command` does: port 22, user root; and `become: "sudo"` for any
 * user other than root. Unset optional fields stay unset (the transport applies its defaults),
 * so the state holds only what the user gave.
 */
export function toConnection(c: PlainConnection, become?: BecomeMode): Connection {
  const connection: Connection = { ...hop(c), become: "none" };
  connection.become = become ?? (connection.user === "root" ? "none" : "sudo");
  if (c.proxy && typeof c.proxy === "object") connection.proxy = hop(c.proxy);
  return connection;
}

/** Short digest of a text, for names and diffs: the first 16 hex digits of its SHA-256. */
export function digest(text: string): string {
  return crypto.createHash("sha256").update(text).digest("hex").slice(0, 16);
}

/** Where the host scripts live: next to this file, in `remote/` (the build copies them). */
const remoteDir = path.join(__dirname, "remote");

const cache = new Map<string, string>();

/** The text of `remote/<name>.sh`. */
export function remoteScriptText(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = fs.readFileSync(path.join(remoteDir, `${name}.sh`), "utf8");
    cache.set(name, text);
  }
  return text;
}

/**
 * The body sent to a host for step `name`: `lib.sh` followed by `remote/<name>.sh`. With
 * `onlyOn`, the step does nothing (and reports `{"skipped":true}`) on hosts of another kind.
 */
export function hostScript(name: string, onlyOn?: "nixos" | "linux"): string {
  const guard = onlyOn
    ? [
        `if { [ -e /etc/NIXOS ] && [ ${onlyOn} != nixos ]; } || { ! [ -e /etc/NIXOS ] && [ ${onlyOn} != linux ]; }; then`,
        `  echo '{"skipped":true}'`,
        `  exit 0`,
        `fi`,
      ].join("\n")
    : "";
  return [remoteScriptText("lib"), guard, remoteScriptText(name)].join("\n");
}
