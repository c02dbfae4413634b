/**
 * The production role: a host that substitutes from a staging cache over SSH, with staging's
 * host key pinned and only the cache's key trusted for its paths.
 */
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { CacheCoordinateInputs, CacheCoordinates } from "./cacheServer";
import { digest, isResolved, remoteScriptText, resolveHost, validateNow, Validity } from "./host";
import { HostStep } from "./hostStep";
import {
  assertConnectTimeout,
  knownHostsName,
  renderKnownHosts,
  renderNixConf,
  renderProductionModule,
  renderSshClientConfig,
  withUrlParam,
} from "./render";
import {
  fileStep,
  FileResult,
  fragmentDefaults,
  nixosModuleSteps,
  probeStep,
  rootKeyStep,
  StepContext,
  verifyStep,
  VerifyResult,
} from "./steps";
import type { Connection } from "./ssh";
import { ClientIdentityMode, FragmentOptions, HostArgs, OutageOptions } from "./types";
import {
  LATER,
  NixSshCacheInputError,
  PlainCacheClientArgs,
  PlainCacheCoordinates,
  validateCacheCoordinates,
  validateClientArgs,
} from "./validate";

export type { ClientIdentityMode } from "./types";

/** Paths the plain-Linux path manages on production. */
export const CLIENT_FILES = {
  knownHosts: "/etc/ssh/nix-ssh-cache/known_hosts",
  sshConfigDropIn: "/etc/ssh/ssh_config.d/nix-ssh-cache.conf",
  nixConf: "/etc/nix/nix-ssh-cache.conf",
  /** The dedicated client key (`clientIdentity: "dedicated"`), root-only. */
  identity: "/etc/nix/nix-ssh-cache/id_ed25519",
  /** The one-session closure fetcher (`fetcher`), on NixOS too. */
  fetcher: "/usr/local/sbin/nix-ssh-cache-fetch",
} as const;

/** A client key pair, e.g. a `tls.PrivateKey` with `algorithm: "ED25519"`. */
export interface ClientKeyPair {
  /** The public key line, `ssh-ed25519 AAAA…`, authorised on staging. */
  publicKeyOpenssh: pulumi.Input<string>;
  /** The private key in OpenSSH format. A Pulumi secret. */
  privateKeyOpenssh: pulumi.Input<string>;
}

/** Arguments of {@link ClientIdentity}. */
export interface ClientIdentityArgs {
  /**
   * The production host.
   * @example `{ connection: { host: "yourapp.com", privateKey: cfg.requireSecret("sshKey") }, name: "web" }`
   */
  host: HostArgs;
  /**
   * Whose key logs in to the cache: root's (`"root"`) or a dedicated key made by Pulumi
   * (`"dedicated"`, see {@link ClientIdentityMode}).
   * @defaultValue `"root"`
   * @example `"dedicated"`
   */
  mode?: ClientIdentityMode;
  /**
   * `mode: "dedicated"`: the key pair, when made elsewhere (e.g. by the staging stack, so it can
   * authorise the key before this host exists).
   * @defaultValue a new `tls.PrivateKey` (`algorithm: "ED25519"`) named `<name>-key`
   * @example `new tls.PrivateKey("web-key", { algorithm: "ED25519" })`
   */
  clientKey?: ClientKeyPair;
}

/**
 * The SSH identity a production host's root uses to reach the cache, and its one owner:
 *
 * - `mode: "root"`: root's own key (ed25519, ecdsa or rsa), or a new ed25519 key generated on the
 *   host when root has none. The private key never leaves the host.
 * - `mode: "dedicated"`: an ED25519 key made by Pulumi (or given as `clientKey`), installed
 *   root-only at `/etc/nix/nix-ssh-cache/id_ed25519`. Its public key is known before the host is
 *   reached.
 *
 * @example
 * ```ts
 * const identity = new ClientIdentity("web-identity", { host });
 * export const rootKey = identity.publicKey; // authorise it on staging
 * ```
 */
export class ClientIdentity extends pulumi.ComponentResource {
  /** The SSH public key line this host logs in to the cache with: authorise it on staging. */
  public readonly publicKey: pulumi.Output<string>;
  /** `"nixos"` or `"linux"`. */
  public readonly os: pulumi.Output<string>;
  /** Whose key it is. */
  public readonly mode: ClientIdentityMode;
  /** The key file on the host a substituter URL must name (`ssh-key=`); none for root's key. */
  public readonly keyFile: string | undefined;

  constructor(name: string, args: ClientIdentityArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:ClientIdentity", name, {}, opts);
    const plain = { host: args.host, clientIdentity: args.mode };
    const checked = plain as unknown as PlainCacheClientArgs;
    // A host resolved by a parent (NixSshCache) was checked there, values known late included.
    const later = isResolved(args.host) ? null : checked;
    const valid = validateNow(this, checked, validateClientArgs, later);
    const host = resolveHost(args.host, valid);
    const at = (dependsOn: pulumi.Resource[] = []): StepContext => ({
      connection: host.connection,
      opts: { parent: this, dependsOn },
    });
    this.mode = args.mode ?? "root";
    const probe = probeStep(`${name}-probe`, at());
    this.os = probe.result.apply((f) => f.os);
    if (this.mode === "dedicated") {
      this.keyFile = CLIENT_FILES.identity;
      this.publicKey = this.dedicatedKey(name, args.clientKey, at([probe]));
    } else {
      this.keyFile = undefined;
      this.publicKey = rootKeyStep(`${name}-root-key`, at([probe])).result.apply(
        (r) => r.publicKey,
      );
    }
    this.registerOutputs({ publicKey: this.publicKey, os: this.os });
  }

  /** Phase: the dedicated key pair, and its private key installed root-only on the host. */
  private dedicatedKey(
    name: string,
    given: ClientKeyPair | undefined,
    at: StepContext,
  ): pulumi.Output<string> {
    const key: ClientKeyPair =
      given ?? new tls.PrivateKey(`${name}-key`, { algorithm: "ED25519" }, { parent: this });
    fileStep(
      `${name}-key-file`,
      // The file's content travels in `env`: keep it secret in the state.
      { ...at, opts: { ...at.opts, additionalSecretOutputs: ["env"] } },
      {
        path: CLIENT_FILES.identity,
        content: pulumi.secret(key.privateKeyOpenssh),
        mode: "0600",
        label: "dedicated client key",
      },
    );
    return pulumi.output(key.publicKeyOpenssh).apply((k) => k.trim());
  }
}

/** Arguments of {@link CacheClient}. */
export interface CacheClientArgs extends FragmentOptions, OutageOptions {
  /** The production host and how to reach it (see {@link HostArgs}). */
  host: HostArgs;
  /**
   * The cache to use: `CacheServer.coordinates`, or the same object read from another stack, or
   * `CacheServer.coordinatesFor(name)` (field by field, waiting for this host's key only).
   * @example `new pulumi.StackReference("org/staging/prod").requireOutput("cache")`
   */
  cache: pulumi.Input<CacheCoordinates> | CacheCoordinateInputs;
  /**
   * This host's identity, when already created (e.g. to export its key before the cache exists).
   * @defaultValue a new `ClientIdentity` named `<name>-identity` with `clientIdentity` and
   * `clientKey`
   */
  identity?: ClientIdentity;
  /**
   * Whose key logs in to the cache, for the identity made here (see {@link ClientIdentityMode}).
   * @defaultValue `"root"`
   * @example `"dedicated"`
   */
  clientIdentity?: ClientIdentityMode;
  /**
   * The dedicated key pair (`clientIdentity: "dedicated"`), for the identity made here.
   * @defaultValue a new `tls.PrivateKey` (`algorithm: "ED25519"`)
   */
  clientKey?: ClientKeyPair;
  /** Prove the cache works by realising staging's canary path. @defaultValue `true` */
  verify?: boolean;
  /**
   * Install `nix-ssh-cache-fetch` on the host (`/usr/local/sbin`, root-only use): it substitutes
   * the whole missing closure of store paths from staging in one SSH session (Nix's `ssh://`
   * substituter pays about two round trips per path, one after another along a dependency
   * chain), and Nix checks every path's hash and signature as for any substituter. Run it before
   * a deploy, e.g. `nix-ssh-cache-fetch $(nix-instantiate '<nixpkgs/nixos>' -A system)` before
   * `nixos-rebuild switch`; it falls back to Nix's own substitution when it cannot take the fast
   * path. Needs Perl's core modules on the host (Debian's `perl-base`, NixOS's default packages).
   * Works with `protocol: "ssh"` (`nix-store --serve`), the default.
   * @defaultValue `true`
   */
  fetcher?: boolean;
}

/**
 * Points a production host at a staging cache: substituter, trusted key, pinned host key
 * (NixOS: a module and `nixos-rebuild`; other Linux: a known_hosts file, an ssh_config drop-in
 * with `StrictHostKeyChecking yes`, and an included nix.conf with `extra-substituters` and
 * `extra-trusted-public-keys`), then verifies by substituting staging's signed canary path.
 *
 * @example
 * ```ts
 * const web = new CacheClient("web", {
 *   host: { connection: { host: "yourapp.com", privateKey: cfg.requireSecret("sshKey") } },
 *   cache: server.coordinates,
 * });
 * ```
 */
export class CacheClient extends pulumi.ComponentResource {
  /** The SSH public key this host logs in with (root's, or the dedicated one): authorise it. */
  public readonly publicKey: pulumi.Output<string>;
  /** This host's substituter URL (with `ssh-key=` for a dedicated identity). */
  public readonly substituterUrl: pulumi.Output<string>;
  /** The rendered NixOS module for this host. */
  public readonly module: pulumi.Output<string>;
  /** True once this host realised staging's canary through the cache. */
  public readonly verified: pulumi.Output<boolean>;
  /** What the verification reported (path, substituter, signatures). */
  public readonly verification: pulumi.Output<VerifyResult>;
  /**
   * The command that fetches a closure from the cache in one SSH session (`fetcher`), e.g.
   * `/usr/local/sbin/nix-ssh-cache-fetch`; empty without the fetcher.
   */
  public readonly fetchCommand: pulumi.Output<string>;

  constructor(name: string, args: CacheClientArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:CacheClient", name, {}, opts);
    const { identity: given, clientKey, cache: coordinates, ...plain } = args;
    const checked = plain as unknown as PlainCacheClientArgs;
    // A host resolved by a parent (NixSshCache) was checked there, values known late included.
    const later = isResolved(args.host) ? null : checked;
    const valid = validateNow(this, checked, validateClientArgs, later);
    // The coordinates come from outside (another stack, staging's outputs): checked with the
    // rules of direct input once known; nothing of this client runs on the host before.
    const coordinatesValid = validateNow(
      this,
      coordinates as unknown as PlainCacheCoordinates,
      validateCacheCoordinates,
    );
    const host = resolveHost(args.host, valid);
    const connection = onlyIfValid(host.connection, coordinatesValid);
    const identity =
      given ??
      new ClientIdentity(
        `${name}-identity`,
        { host: args.host, mode: args.clientIdentity, clientKey },
        { parent: this },
      );
    this.publicKey = identity.publicKey;
    const at = (dependsOn: pulumi.Resource[]): StepContext => ({
      connection,
      os: identity.os,
      opts: { parent: this, dependsOn },
    });
    const cache = cacheFields(coordinates, identity.keyFile);
    const outage = outageDefaults(args);
    this.substituterUrl = cache.substituterUrl;
    this.module = pulumi
      .all([
        cache.substituterUrl,
        cache.coordinateUrl,
        cache.publicKeys,
        cache.hostName,
        cache.hostKey,
        cache.port,
      ])
      .apply(([url, given, keys, hostName, hostKey, port]) =>
        ifValid({ substituterUrl: given, publicKeys: keys, hostName, hostKey, port }, () =>
          renderProductionModule({
            substituterUrl: url,
            trustedPublicKeys: keys,
            stagingHostName: hostName,
            stagingHostKey: hostKey,
            stagingPort: port,
            ...outage,
          }),
        ),
      );
    const files = clientFiles(cache, outage);
    const linux = clientLinuxSteps(name, at([identity]), files);
    this.fetchCommand = pulumi.output(
      (args.fetcher ?? true) ? this.fetcher(name, at([identity]), cache) : "",
    );
    const nixos = nixosModuleSteps(
      name,
      at([identity]),
      this.module,
      fragmentDefaults(args),
      pulumi
        .all([cache.substituterUrl, cache.publicKeys])
        .apply(([url, keys]) => ({ CHECK_SUBSTITUTER: url, CHECK_PUBLIC_KEYS: keys.join(" ") })),
    );
    if (args.verify ?? true) {
      const verify = verifyStep(
        `${name}-verify`,
        at([identity, ...linux, ...nixos]),
        pulumi
          .all([cache.canaryPath, cache.substituterUrl, cache.hostName])
          .apply(([canaryPath, substituter, staging]) => ({ canaryPath, substituter, staging })),
        // Verified again when what it relies on changes (files, module).
        pulumi
          .all([files.knownHosts, files.sshConfig, files.nixConf, this.module])
          .apply((texts) => digest(texts.join("\0"))),
      );
      this.verification = verify.result;
      this.verified = verify.result.apply((r) => r.verified === true);
    } else {
      this.verification = pulumi.output<VerifyResult>({ verified: false });
      this.verified = pulumi.output(false);
    }

    this.registerOutputs({
      publicKey: this.publicKey,
      substituterUrl: this.substituterUrl,
      module: this.module,
      verified: this.verified,
      verification: this.verification,
      fetchCommand: this.fetchCommand,
    });
  }

  /**
   * Phase: the one-session closure fetcher (`nix-ssh-cache-fetch`), installed executable. It
   * reads the substituter from Nix's configuration. The daemon protocol (`ssh-ng://`) has no
   * closure query: with it the command is empty (the installed fetcher finds no `ssh://`
   * substituter and falls back to Nix's own substitution).
   */
  private fetcher(name: string, at: StepContext, cache: ClientCache): pulumi.Output<string> {
    const serve = cache.substituterUrl.apply((url) => url.startsWith("ssh://"));
    fileStep(`${name}-fetcher`, at, {
      path: CLIENT_FILES.fetcher,
      content: remoteScriptText("nix-ssh-cache-fetch.pl"),
      mode: "0755",
      label: "closure fetcher",
    });
    return serve.apply((ok) => (ok ? CLIENT_FILES.fetcher : ""));
  }
}

/**
 * Plain Linux: the pinned staging host key, the ssh client drop-in that uses it, and the
 * included nix.conf with the substituter and the trusted keys, in that order.
 */
/** What the plain-Linux files of a client hold. */
interface ClientFiles {
  knownHosts: pulumi.Output<string>;
  sshConfig: pulumi.Output<string>;
  nixConf: pulumi.Output<string>;
}

/** ssh's `ConnectTimeout` for staging when `connectTimeout` is not given, in seconds. */
export const DEFAULT_CONNECT_TIMEOUT = 5;

/** {@link OutageOptions} with the defaults applied (checked: a bad value fails here, by name). */
function outageDefaults(o: OutageOptions): Required<OutageOptions> {
  const resolved = {
    connectTimeout: o.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT,
    fallback: o.fallback ?? true,
  };
  assertConnectTimeout(resolved.connectTimeout);
  if (typeof resolved.fallback !== "boolean") {
    throw new Error(`nix-ssh-cache: fallback must be true or false, got ${String(o.fallback)}`);
  }
  return resolved;
}

/** Renders the plain-Linux files of a client from the coordinates. */
function clientFiles(cache: ClientCache, outage: Required<OutageOptions>): ClientFiles {
  return {
    knownHosts: pulumi
      .all([cache.hostName, cache.port, cache.hostKey])
      .apply(([hostName, port, hostKey]) =>
        ifValid({ hostName, port, hostKey }, () =>
          renderKnownHosts([knownHostsName(hostName, port)], hostKey),
        ),
      ),
    sshConfig: pulumi.all([cache.hostName, cache.port]).apply(([hostName, port]) =>
      ifValid({ hostName, port }, () =>
        renderSshClientConfig({
          hostName,
          knownHostsFile: CLIENT_FILES.knownHosts,
          port,
          connectTimeout: outage.connectTimeout,
        }),
      ),
    ),
    nixConf: pulumi
      .all([cache.substituterUrl, cache.coordinateUrl, cache.publicKeys])
      .apply(([url, given, keys]) =>
        ifValid({ substituterUrl: given, publicKeys: keys }, () =>
          renderNixConf({
            substituters: [url],
            trustedPublicKeys: keys,
            fallback: outage.fallback,
          }),
        ),
      ),
  };
}

/**
 * Plain Linux: the pinned staging host key, the ssh client drop-in that uses it, and the
 * included nix.conf with the substituter and the trusted keys, in that order.
 */
function clientLinuxSteps(
  name: string,
  at: StepContext,
  files: ClientFiles,
): HostStep<FileResult>[] {
  const after = (step: pulumi.Resource): StepContext => ({
    ...at,
    opts: { parent: at.opts.parent, dependsOn: [step] },
  });
  const knownHosts = fileStep(`${name}-known-hosts`, at, {
    path: CLIENT_FILES.knownHosts,
    content: files.knownHosts,
    label: "pinned staging host key",
    onlyOn: "linux",
  });
  const sshConfig = fileStep(`${name}-ssh-config`, after(knownHosts), {
    path: CLIENT_FILES.sshConfigDropIn,
    content: files.sshConfig,
    after: "ssh",
    label: "ssh client drop-in",
    onlyOn: "linux",
  });
  const nixConf = fileStep(`${name}-nix-conf`, after(sshConfig), {
    path: CLIENT_FILES.nixConf,
    content: files.nixConf,
    after: "nix",
    label: "nix.conf include",
    onlyOn: "linux",
  });
  return [knownHosts, sshConfig, nixConf];
}

/**
 * The connection this client's steps run over: in an update, marked invalid (nothing runs over
 * it, see `HostStep`) when the coordinates are invalid, so a crafted value changes nothing on
 * the host. A preview runs nothing and is left as it is: a field not known yet (e.g. the canary
 * being rebuilt) would otherwise make every step's connection unknown.
 */
function onlyIfValid(
  connection: pulumi.Output<Connection>,
  valid: pulumi.Output<Validity>,
): pulumi.Output<Connection> {
  if (pulumi.runtime.isDryRun()) return connection;
  return pulumi
    .all([connection, valid])
    .apply(([c, v]) => (v === true ? c : { ...c, invalidInput: v }));
}

/**
 * `render()` when the given coordinate fields are valid, else `""`: an invalid field is reported
 * once (by the constructor's deferred check) and nothing runs on the host then (see
 * {@link onlyIfValid}); a renderer's own error would instead travel through the inputs of every
 * resource that waits for the text (and kept the program from ending). Each text depends on
 * its own fields only, so a preview shows what changes as soon as those are known.
 */
function ifValid(fields: Partial<CacheCoordinates>, render: () => string): string {
  const unknown = Object.fromEntries(
    ["substituterUrl", "publicKeys", "hostName", "port", "hostKey", "canaryPath"].map((k) => [
      k,
      LATER,
    ]),
  );
  try {
    validateCacheCoordinates({ ...unknown, ...fields } as unknown as PlainCacheCoordinates);
  } catch (e) {
    if (e instanceof NixSshCacheInputError) return "";
    throw e;
  }
  return render();
}

/** The coordinates a client uses, each field an Output of its own. */
type ClientCache = { [K in keyof CacheCoordinates]: pulumi.Output<CacheCoordinates[K]> } & {
  /** The substituter URL as the coordinates gave it (without this host's `ssh-key=`). */
  coordinateUrl: pulumi.Output<string>;
};

/**
 * The coordinates field by field (a whole object, e.g. from a StackReference, is split), with
 * this host's substituter URL: naming the dedicated key file (`ssh-key=`) when there is one.
 */
function cacheFields(
  cache: pulumi.Input<CacheCoordinates> | CacheCoordinateInputs,
  keyFile: string | undefined,
): ClientCache {
  const whole = pulumi.Output.isInstance(cache) || cache instanceof Promise;
  const field = <K extends keyof CacheCoordinates>(k: K): pulumi.Output<CacheCoordinates[K]> =>
    whole
      ? pulumi.output(cache as pulumi.Input<CacheCoordinates>).apply((c) => c[k])
      : (pulumi.output((cache as CacheCoordinateInputs)[k]) as pulumi.Output<CacheCoordinates[K]>);
  return {
    substituterUrl: field("substituterUrl").apply((url) =>
      keyFile && ifValid({ substituterUrl: url }, () => "valid")
        ? withUrlParam(url, "ssh-key", keyFile)
        : url,
    ),
    coordinateUrl: field("substituterUrl"),
    publicKeys: field("publicKeys"),
    hostName: field("hostName"),
    port: field("port"),
    hostKey: field("hostKey"),
    canaryPath: field("canaryPath"),
  };
}
