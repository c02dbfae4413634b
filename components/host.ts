/**
 * The host model: from the user's `HostArgs` (a `@pulumi/command` connection, Pulumi inputs,
 * secrets) to one validated, resolved {@link Connection} per host, and the host scripts that run
 * over it.
 */
import * as pulumi from "@pulumi/pulumi";
import { expectedHostKey } from "./knownHosts";
import { Connection, ProxyConnection } from "./ssh";
import { BecomeMode, HostArgs } from "./types";
import { knownNow, NixSshCacheInputError, PlainConnection } from "./validate";

/** A host, validated and resolved once. */
export interface ResolvedHost {
  /** The resolved connection (with `invalidInput` when a value known late is invalid). */
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
 * What a deferred validation resolves to: `true`, or the problems (already reported).
 * A connection built on a failed validation carries them in `invalidInput`, and the `HostStep`
 * provider refuses to run anything over it.
 */
export type Validity = true | string;

/**
 * Validates `args` for `resource`: the values known now at once (a `ResourceError` thrown from
 * the constructor, every problem listed), the rest once resolved (`later`, default `args`;
 * `null` when a parent component checked them already). A problem found then is reported once,
 * as the runtime reports an uncaught `ResourceError` (the program then fails), and the returned
 * Output resolves to the message instead of `true`: host connections built on it refuse to run,
 * so nothing runs on any host, and no error travels through every resource's inputs (which
 * made `pulumi preview` take minutes).
 */
export function validateNow<T>(
  resource: pulumi.Resource,
  args: T,
  validate: Validator<T>,
  later: T | null = args,
): pulumi.Output<Validity> {
  const known = problemsOf(() => validate(knownNow(args) as T));
  if (known) throw new pulumi.ResourceError(known, resource, true);
  if (later === null) return pulumi.output<Validity>(true);
  return pulumi.output(later as pulumi.Input<T>).apply((plain): Validity => {
    const problems = problemsOf(() => validate(plain as T));
    if (!problems) return true;
    const error = new pulumi.ResourceError(problems, resource, true);
    queueMicrotask(() => {
      throw error;
    });
    return problems;
  });
}

/** The message of the problems `check` throws, if any. */
function problemsOf(check: () => void): string | undefined {
  try {
    check();
    return undefined;
  } catch (e) {
    if (e instanceof NixSshCacheInputError) return e.message;
    throw e;
  }
}

const resolvedHosts = new WeakMap<HostArgs, ResolvedHost>();

/**
 * Resolves a host once: the same `HostArgs` object given to several components (e.g. to a
 * `ClientIdentity` and a `CacheClient`) gives the same {@link ResolvedHost}. Its connection waits
 * for `valid` (the validation of the component that resolved it first).
 */
export function resolveHost(h: HostArgs, valid: pulumi.Output<Validity>): ResolvedHost {
  const cached = resolvedHosts.get(h);
  if (cached) return cached;
  const plain = pulumi.output({ connection: h.connection, become: h.become }) as pulumi.Output<{
    connection: PlainConnection;
    become?: BecomeMode;
  }>;
  const connection = pulumi.all([valid, plain]).apply(([validity, p]) => {
    const c = toConnection(p.connection, p.become);
    return validity === true ? c : { ...c, invalidInput: validity };
  });
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
  else pinKnownHostKey(out);
  return out;
}

/**
 * Pins a hop without `hostKey` to its key in the operator's known_hosts (as `ssh` reads them),
 * so the key verified is the one stored in the state with the connection (and a refresh or
 * delete verifies the same key): `hostKey` and `hostKeySource` (the file). Left unpinned when
 * there is none (validation reported it; the transport refuses such a hop).
 */
function pinKnownHostKey(out: ProxyConnection): void {
  const expected = expectedHostKey(out.host, out.port, undefined);
  if (typeof expected === "string") return;
  out.hostKey = expected.key;
  out.hostKeySource = expected.source;
}

/**
 * Resolves defaults as `@pulumi/command` does: port 22, user root; and `become: "sudo"` for any
 * user other than root. Unset optional fields stay unset (the transport applies its defaults),
 * so the state holds only what the user gave, and the host key of each hop: `hostKey`, else the
 * one pinned from the operator's known_hosts (see `pinKnownHostKey`).
 */
export function toConnection(c: PlainConnection, become?: BecomeMode): Connection {
  const connection: Connection = { ...hop(c), become: "none" };
  connection.become = become ?? (connection.user === "root" ? "none" : "sudo");
  if (c.proxy && typeof c.proxy === "object") connection.proxy = hop(c.proxy);
  return connection;
}

export { digest, hostScript, remoteScriptText } from "./remoteScripts";
