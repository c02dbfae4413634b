/**
 * `NixSshCache`: the seed tutorial as one component. A staging host becomes a private, signed
 * Nix binary cache; every production host substitutes from it over SSH.
 */
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { CacheClient, ClientIdentity, ClientIdentityMode } from "./cacheClient";
import { CacheCoordinates, CacheServer } from "./cacheServer";
import {
  FragmentOptions,
  ProductionArgs,
  Protocol,
  SigningKeyArgs,
  StagingArgs,
  SubstituterOptions,
} from "./types";
import { NixSshCacheInputError, PlainNixSshCacheArgs, validateArgs } from "./validate";

/** Arguments of {@link NixSshCache}. */
export interface NixSshCacheArgs extends SubstituterOptions, FragmentOptions {
  /**
   * The staging host: builds, signs and serves.
   * @example `{ host: "stage.yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") }`
   */
  staging: StagingArgs;
  /**
   * The production hosts: substitute from staging. Configured in parallel, after staging.
   * @example `[{ host: "yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") }]`
   */
  production: ProductionArgs[];
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

function childName(p: ProductionArgs, index: number): string {
  if (p.name) return p.name;
  if (typeof p.host === "string") return p.host.replace(/[^A-Za-z0-9]+/g, "-");
  return `prod${index + 1}`;
}

/** Resolves every input to plain values and validates them; rejects with all problems at once. */
function validated(args: NixSshCacheArgs): pulumi.Output<true> {
  const plainHost = (h: StagingArgs | ProductionArgs) =>
    pulumi.output({
      host: h.host,
      port: h.port,
      user: h.user,
      privateKey: h.privateKey,
      privateKeyPassword: h.privateKeyPassword,
      password: h.password,
      agentSocketPath: h.agentSocketPath,
      hostKey: h.hostKey,
      become: h.become,
    });
  return pulumi
    .all([
      plainHost(args.staging),
      pulumi.all(args.production.map(plainHost)),
      pulumi.output(args.keyName),
      pulumi.output(args.authorizedKeys),
    ])
    .apply(([staging, production, keyName, authorizedKeys]): pulumi.Input<true> => {
      const plain: PlainNixSshCacheArgs = {
        staging: { ...staging, cacheHost: args.staging.cacheHost },
        production: production.map((p, i) => ({ ...p, name: args.production[i].name })),
        keyName,
        keyDirectory: args.keyDirectory,
        fragments: args.fragments,
        fragmentPath: args.fragmentPath,
        localFragmentsDir: args.localFragmentsDir,
        rebuild: args.rebuild,
        protocol: args.protocol,
        write: args.write,
        signingKey: args.signingKey,
        compress: args.compress,
        maxConnections: args.maxConnections,
        priority: args.priority,
        authorizedKeys,
        clientIdentity: args.clientIdentity,
      };
      try {
        validateArgs(plain);
      } catch (e) {
        if (e instanceof NixSshCacheInputError) return reportAndStop(e);
        throw e;
      }
      return true as const;
    }) as pulumi.Output<true>;
}

/**
 * Reports invalid input once and ends the program (exit code 32: "error already reported").
 * A rejected Output here would reach every child resource, and the runtime formats the error
 * once per resource reached: `pulumi preview` took minutes to say "invalid host". Under Pulumi's
 * mocks (unit tests) the error is thrown (the Output rejects) instead.
 */
function reportAndStop(e: NixSshCacheInputError): pulumi.Output<true> {
  const monitor = pulumi.runtime.getMonitor() as object | undefined;
  if (!monitor || monitor.constructor.name === "MockMonitor") throw e;
  const stopped = pulumi.log.error(e.message).then(() => {
    process.exit(32);
    return new Promise<true>(() => undefined);
  });
  return pulumi.output(stopped);
}

/** Makes every connection wait for validation, so nothing runs on any host with bad input. */
function gated<T extends StagingArgs | ProductionArgs>(h: T, ok: pulumi.Output<true>): T {
  return { ...h, host: pulumi.all([ok, h.host]).apply(([, host]) => host) };
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
 *   staging: { host: "stage.yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") },
 *   production: [{ host: "yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") }],
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

  constructor(name: string, args: NixSshCacheArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:NixSshCache", name, {}, opts);
    const ok = validated(args);
    const names = args.production.map(childName);
    const production = args.production.map((p) => gated(p, ok));

    const dedicated = args.clientIdentity === "dedicated";
    // "dedicated": one key per host made by Pulumi, known before any host is reached.
    const clientKeys = dedicated
      ? names.map(
          (n) =>
            new tls.PrivateKey(
              `${name}-${n}-client-key`,
              { algorithm: "ED25519" },
              { parent: this },
            ),
        )
      : [];
    const identities = dedicated
      ? []
      : production.map(
          (p, i) =>
            new ClientIdentity(`${name}-${names[i]}-identity`, { host: p }, { parent: this }),
        );
    this.productionRootKeys = dedicated
      ? pulumi.all(clientKeys.map((k) => k.publicKeyOpenssh.apply((line) => line.trim())))
      : pulumi.all(identities.map((id) => id.publicKey));
    const authorizedKeys = pulumi
      .all([this.productionRootKeys, pulumi.output(args.authorizedKeys ?? [])])
      .apply(([own, extra]) => [...own, ...extra]);

    const common = {
      fragments: args.fragments,
      fragmentPath: args.fragmentPath,
      localFragmentsDir: args.localFragmentsDir,
      rebuild: args.rebuild,
      addImport: args.addImport,
    };
    this.server = new CacheServer(
      `${name}-staging`,
      {
        host: gated(args.staging, ok),
        authorizedKeys,
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
        ...common,
      },
      { parent: this },
    );
    this.clients = production.map(
      (p, i) =>
        new CacheClient(
          `${name}-${names[i]}`,
          {
            host: p,
            cache: this.server.coordinates,
            ...(dedicated
              ? { clientIdentity: "dedicated" as const, clientKey: clientKeys[i] }
              : { identity: identities[i] }),
            ...common,
          },
          { parent: this },
        ),
    );

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
}
