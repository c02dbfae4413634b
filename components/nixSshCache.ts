/**
 * `NixSshCache`: the seed tutorial as one component. A staging host becomes a private, signed
 * Nix binary cache; every production host substitutes from it over SSH.
 */
import * as pulumi from "@pulumi/pulumi";
import { CacheClient, ClientIdentity } from "./cacheClient";
import { CacheCoordinates, CacheServer } from "./cacheServer";
import { CachePin } from "./cachePin";
import { ClosureFetch } from "./closureFetch";
import { resolveHost, validateNow } from "./host";
import {
  ClientIdentityMode,
  FragmentOptions,
  HostArgs,
  OutageOptions,
  Protocol,
  SigningKeyArgs,
  SubstituterOptions,
} from "./types";
import { PlainNixSshCacheArgs, validateArgs } from "./validate";

/** Arguments of {@link NixSshCache}. */
export interface NixSshCacheArgs extends SubstituterOptions, FragmentOptions, OutageOptions {
  /**
   * The staging host: builds, signs and serves (see {@link HostArgs}).
   * @example `{ connection: { host: "stage.yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") } }`
   */
  staging: HostArgs;
  /**
   * The production hosts: substitute from staging. Configured in parallel, after staging.
   * @example `[{ connection: { host: "yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") }, name: "web" }]`
   */
  production: HostArgs[];
  /**
   * Name of the signing key (`nix-store --generate-binary-cache-key NAME`).
   * @defaultValue staging's `cacheHost`, else its `host`
   */
  keyName?: pulumi.Input<string>;
  /** Signing key directory on staging. @defaultValue `"/etc/shipnix/binary"` */
  keyDirectory?: string;
  /** Delete the signing key on destroy. @defaultValue `false` (the key is kept) */
  removeSigningKeyOnDestroy?: boolean;
  /**
   * Signing key generation and rotation (see {@link SigningKeyArgs} and README, "Rotating the
   * signing key").
   * @defaultValue `{ generation: 0 }` (the key `keyName` in `cache-priv-key.pem`)
   * @example `{ generation: 1, previousGenerations: [0] }`
   */
  signingKey?: SigningKeyArgs;
  /**
   * `"ssh"` (`nix-store --serve`, the seed's) or `"ssh-ng"` (`nix-daemon --stdio` on staging).
   * @defaultValue `"ssh"`
   */
  protocol?: Protocol;
  /**
   * More SSH public keys staging authorises, besides the production hosts' keys: e.g. the keys
   * production stacks of other projects export (read them with a `StackReference`).
   * @defaultValue `[]`
   * @example `[new pulumi.StackReference("organization/web/prod").requireOutput("rootKey")]`
   */
  authorizedKeys?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Whose SSH key production logs in with: root's own (`"root"`) or a dedicated ED25519 key per
   * host made by Pulumi (`"dedicated"`; see {@link ClientIdentityMode}).
   * @defaultValue `"root"`
   * @example `"dedicated"`
   */
  clientIdentity?: ClientIdentityMode;
  /**
   * Let production upload to staging (see `CacheServerArgs.write`: only signed or
   * content-addressed paths, `nix-ssh` is not a trusted user).
   * @defaultValue `false`
   */
  write?: boolean;
  /**
   * Sign the paths already in staging's store once, when the signing key is first configured
   * (`nix store sign --all`), so production substitutes what staging built before the first
   * `up` (see `CacheServerArgs.signExistingPaths`).
   * @defaultValue `true`
   */
  signExistingPaths?: boolean;
  /**
   * Install `nix-ssh-cache-fetch` on every production host: the whole missing closure of store
   * paths from staging in one SSH session (see `CacheClientArgs.fetcher`).
   * @defaultValue `true`
   */
  fetcher?: boolean;
  /**
   * Store paths every production host fetches from the cache on `up`, the whole missing closure
   * in one SSH session (a {@link ClosureFetch} per host, after its cache client): e.g. the
   * release's system closure built on staging, so the deploy that follows finds it in place.
   * Needs `fetcher` (the default).
   * @example `[release.systemPath]`
   */
  fetch?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Store paths of the current release that staging keeps as GC roots (a {@link CachePin}), so
   * its garbage collector cannot delete a release before every production host fetched it. Each
   * change is a new release; the last `keepReleases` stay pinned.
   * @example `[release.systemPath]`
   */
  pins?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * With `pins`: how many releases staging keeps pinned (the oldest beyond are unpinned). 1 to
   * 1000; an input error without `pins` (it would keep nothing).
   * @defaultValue `3`
   */
  keepReleases?: number;
}

/** What the component reports per production host. */
export interface ProductionHostOutputs {
  /** Resource-name suffix of the host. */
  name: string;
  /** Root's SSH public key, authorised on staging. */
  rootKey: string;
  /** True once the host realised staging's canary through the cache. */
  verified: boolean;
}

/** The resource-name part of production host `index`: its `name`, else from its address. */
function childName(p: HostArgs, index: number): string {
  if (p.name) return p.name;
  const c = p.connection as { host?: unknown } | undefined;
  if (c && typeof c === "object" && typeof c.host === "string") {
    return c.host.replace(/[^A-Za-z0-9]+/g, "-");
  }
  return `prod${index + 1}`;
}

/**
 * A staging server as a private, signed Nix binary cache for production servers, over SSH.
 *
 * Order: production identities are read (root's SSH key, generated when missing), staging is
 * configured and builds a signed canary, then every production host (in parallel) is pointed at
 * staging and proves it by substituting the canary.
 *
 * @example
 * ```ts
 * const cache = new NixSshCache("yourapp", {
 *   staging: { connection: { host: "stage.yourapp.com", user: "ship", privateKey: sshKey } },
 *   production: [{ connection: { host: "yourapp.com", user: "ship", privateKey: sshKey } }],
 * });
 * export const cachePublicKey = cache.cachePublicKey;
 * ```
 */
export class NixSshCache extends pulumi.ComponentResource {
  /** The cache's public key, `NAME:BASE64`. */
  public readonly cachePublicKey: pulumi.Output<string>;
  /** Staging's SSH host key, pinned on production. */
  public readonly stagingHostKey: pulumi.Output<string>;
  /** The substituter URL, e.g. `ssh://nix-ssh@stage.yourapp.com` (plus any parameters). */
  public readonly substituterUrl: pulumi.Output<string>;
  /**
   * SSH public keys the production hosts log in with (root's, or the dedicated ones), authorised
   * on staging.
   */
  public readonly productionRootKeys: pulumi.Output<string[]>;
  /** The NixOS module for staging. */
  public readonly stagingModule: pulumi.Output<string>;
  /** The NixOS module for production (the same for every production host). */
  public readonly productionModule: pulumi.Output<string>;
  /** True once every production host substituted staging's canary through the cache. */
  public readonly verified: pulumi.Output<boolean>;
  /** Per production host: name, root key, verification. */
  public readonly hosts: pulumi.Output<ProductionHostOutputs[]>;
  /** Everything another stack needs to use this cache (export it, read it with a StackReference). */
  public readonly coordinates: pulumi.Output<CacheCoordinates>;
  /** The staging role. */
  public readonly server: CacheServer;
  /** The production roles, in the order given. */
  public readonly clients: CacheClient[];
  /** With `fetch`: one closure fetch per production host, in the order given; else empty. */
  public readonly fetches: ClosureFetch[];
  /** With `pins`: the releases pinned on staging; else undefined. */
  public readonly pin?: CachePin;

  constructor(name: string, args: NixSshCacheArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:NixSshCache", name, {}, opts);
    // Every host and option at once; the extra authorizedKeys do not hold back the hosts.
    const plain = args as unknown as PlainNixSshCacheArgs;
    const valid = validateNow(this, plain, validateArgs, { ...plain, authorizedKeys: undefined });
    // Resolved once here; the roles below reuse these (same objects), already validated.
    resolveHost(args.staging, valid);
    for (const p of args.production) resolveHost(p, valid);
    const names = args.production.map(childName);

    const identities = this.identities(name, args, names);
    this.productionRootKeys = pulumi.all(identities.map((id) => id.publicKey));
    this.server = this.staging(name, args, identities, names);
    this.clients = args.production.map(
      (p, i) =>
        new CacheClient(
          `${name}-${names[i]}`,
          {
            host: p,
            // staging configured and this host's key authorised: no other host's key awaited
            cache: this.server.coordinatesFor(names[i]),
            identity: identities[i],
            fetcher: args.fetcher,
            ...outage(args),
            ...fragments(args),
          },
          { parent: this },
        ),
    );

    this.fetches = this.releaseFetches(name, args, names);
    this.pin = this.releasePins(name, args);

    this.cachePublicKey = this.server.cachePublicKey;
    this.stagingHostKey = this.server.hostKey;
    this.substituterUrl = this.server.substituterUrl;
    this.stagingModule = this.server.module;
    this.productionModule = this.clients[0]?.module ?? pulumi.output("");
    this.coordinates = this.server.coordinates;
    this.hosts = pulumi.all(
      this.clients.map((c, i) =>
        pulumi.all([c.publicKey, c.verified]).apply(([rootKey, verified]) => ({
          name: names[i],
          rootKey,
          verified,
        })),
      ),
    );
    this.verified = this.hosts.apply((hs) => hs.length > 0 && hs.every((h) => h.verified));

    this.registerOutputs({
      cachePublicKey: this.cachePublicKey,
      stagingHostKey: this.stagingHostKey,
      substituterUrl: this.substituterUrl,
      productionRootKeys: this.productionRootKeys,
      stagingModule: this.stagingModule,
      productionModule: this.productionModule,
      verified: this.verified,
      hosts: this.hosts,
      coordinates: this.coordinates,
    });
  }

  /** Phase: with `fetch`, each production host fetches those paths once its client is set up. */
  private releaseFetches(name: string, args: NixSshCacheArgs, names: string[]): ClosureFetch[] {
    const paths = args.fetch;
    if (paths === undefined) return [];
    return args.production.map(
      (p, i) =>
        new ClosureFetch(
          `${name}-${names[i]}-release`,
          { host: p, paths },
          { parent: this, dependsOn: [this.clients[i]] },
        ),
    );
  }

  /** Phase: with `pins`, staging keeps the last `keepReleases` releases as GC roots. */
  private releasePins(name: string, args: NixSshCacheArgs): CachePin | undefined {
    if (args.pins === undefined) return undefined;
    return new CachePin(
      `${name}-releases`,
      { host: args.staging, paths: args.pins, keep: args.keepReleases, set: name },
      { parent: this },
    );
  }

  /**
   * Phase: each production host's identity, read first (root's key) or made by Pulumi
   * (`"dedicated"`: known before any host is reached), so staging can authorise them.
   */
  private identities(name: string, args: NixSshCacheArgs, names: string[]): ClientIdentity[] {
    return args.production.map(
      (p, i) =>
        new ClientIdentity(
          `${name}-${names[i]}-identity`,
          { host: p, mode: args.clientIdentity },
          { parent: this },
        ),
    );
  }

  /** Phase: staging, authorising each production identity on its own, and the extra keys. */
  private staging(
    name: string,
    args: NixSshCacheArgs,
    identities: ClientIdentity[],
    names: string[],
  ): CacheServer {
    return new CacheServer(
      `${name}-staging`,
      {
        host: args.staging,
        clients: Object.fromEntries(names.map((n, i) => [n, identities[i].publicKey])),
        authorizedKeys: args.authorizedKeys,
        keyName: args.keyName,
        signingKey: args.signingKey,
        compress: args.compress,
        maxConnections: args.maxConnections,
        priority: args.priority,
        keyDirectory: args.keyDirectory,
        removeSigningKeyOnDestroy: args.removeSigningKeyOnDestroy,
        protocol: args.protocol,
        write: args.write,
        signExistingPaths: args.signExistingPaths,
        ...fragments(args),
      },
      { parent: this },
    );
  }
}

/** The fragment options, passed on to every role. */
function fragments(args: FragmentOptions): FragmentOptions {
  return {
    fragments: args.fragments,
    fragmentPath: args.fragmentPath,
    localFragmentsDir: args.localFragmentsDir,
    rebuild: args.rebuild,
    addImport: args.addImport,
  };
}

/** The outage options, passed on to every production role. */
function outage(args: OutageOptions): OutageOptions {
  return { connectTimeout: args.connectTimeout, fallback: args.fallback };
}
