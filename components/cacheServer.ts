/**
 * `CacheServer`: the staging role. Staging signs what it builds and serves its store to the
 * authorised production keys over SSH (`nix-store --serve` as user `nix-ssh`).
 */
import * as pulumi from "@pulumi/pulumi";
import { digest, isResolved, ResolvedHost, resolveHost, validateNow } from "./host";
import { HostStep } from "./hostStep";
import {
  renderAuthorizedKeys,
  renderNixConf,
  renderSshdMatchBlock,
  renderStagingModule,
  serveCommand,
  substituterUrl,
} from "./render";
import {
  AuthorizedKeysResult,
  CanaryResult,
  authorizedKeysStep,
  canaryStep,
  fileStep,
  fragmentDefaults,
  HostFacts,
  nixosModuleSteps,
  probeStep,
  ResolvedFragmentOptions,
  serveUserStep,
  signingKeyStep,
  SigningKeyResult,
  SignStoreResult,
  signStoreStep,
  StepContext,
} from "./steps";
import { FragmentOptions, HostArgs, Protocol, SigningKeyArgs, SubstituterOptions } from "./types";
import { PlainCacheServerArgs, validateServerArgs } from "./validate";

export { DEFAULT_FRAGMENT_PATH } from "./steps";

/** Paths the plain-Linux path manages on staging. */
export const STAGING_FILES = {
  authorizedKeys: "/etc/ssh/nix-ssh-cache/authorized_keys",
  sshdDropIn: "/etc/ssh/sshd_config.d/nix-ssh-cache.conf",
  nixConf: "/etc/nix/nix-ssh-cache.conf",
} as const;

/** The default directory of the signing key: the seed tutorial's layout. */
export const DEFAULT_KEY_DIRECTORY = "/etc/shipnix/binary";

/**
 * Everything a production host needs to use a cache; one object, so a staging stack can export
 * it and a production stack in another project can consume it through a `StackReference`.
 */
export interface CacheCoordinates {
  /** e.g. `ssh://nix-ssh@stage.yourapp.com`. */
  substituterUrl: string;
  /**
   * Cache public keys to trust, `NAME:BASE64`: the current key first, then older generations
   * still trusted during a key rotation.
   */
  publicKeys: string[];
  /** Name production uses to reach staging. */
  hostName: string;
  /** Staging's SSH port. */
  port: number;
  /** Staging's SSH host key, pinned on production. */
  hostKey: string;
  /** A store path built and signed on staging, realised by production to verify the cache. */
  canaryPath: string;
}

/**
 * {@link CacheCoordinates} field by field, each an input of its own: a client uses each field as
 * soon as it is known (e.g. in a preview, before the canary is rebuilt).
 */
export type CacheCoordinateInputs = {
  [K in keyof CacheCoordinates]: pulumi.Input<CacheCoordinates[K]>;
};

/** File names of signing key generation `generation` (0: the seed's names). */
export function signingKeyFiles(
  keyDirectory: string,
  generation: number,
): { privateKey: string; publicKey: string } {
  const suffix = generation > 0 ? `-${generation}` : "";
  return {
    privateKey: `${keyDirectory}/cache-priv-key${suffix}.pem`,
    publicKey: `${keyDirectory}/cache-pub-key${suffix}.pem`,
  };
}

/** Name of signing key generation `generation`: `keyName`, or `<keyName>-<N>` for N > 0. */
export function signingKeyName(keyName: string, generation: number): string {
  return generation > 0 ? `${keyName}-${generation}` : keyName;
}

/** Arguments of {@link CacheServer}. */
export interface CacheServerArgs extends SubstituterOptions, FragmentOptions {
  /**
   * The staging host and how to reach it.
   * @example `{ connection: { host: "stage.yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") }, cacheHost: "stage.internal" }`
   */
  host: HostArgs;
  /**
   * Production hosts' SSH public keys by host name (e.g. `ClientIdentity.publicKey`), each
   * authorised on its own (child `<name>-authorize-<host>`): a host not reached yet holds back
   * neither staging nor any other host. A client that must wait for its own key uses
   * {@link CacheServer.coordinatesFor}.
   * @defaultValue `{}`
   * @example `{ web: webIdentity.publicKey, db: "ssh-ed25519 AAAA... root@db" }`
   */
  clients?: Record<string, pulumi.Input<string>>;
  /**
   * More SSH public keys allowed to substitute, authorised together (child
   * `<name>-authorized-keys`): e.g. keys exported by production stacks.
   * @defaultValue `[]`
   * @example `[new pulumi.StackReference("org/web/prod").requireOutput("rootKey")]`
   */
  authorizedKeys?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Name of the signing key, as in `nix-store --generate-binary-cache-key NAME`.
   * @defaultValue `cacheHost`, else `host`
   */
  keyName?: pulumi.Input<string>;
  /**
   * Directory of `cache-priv-key.pem` / `cache-pub-key.pem` on staging.
   * @defaultValue `"/etc/shipnix/binary"` (the seed tutorial's)
   */
  keyDirectory?: string;
  /**
   * Delete the signing key on `pulumi destroy`. The key is data: deleting it invalidates every
   * production host's trust in paths signed with it.
   * @defaultValue `false`
   */
  removeSigningKeyOnDestroy?: boolean;
  /**
   * Key generation and rotation (see {@link SigningKeyArgs}).
   * @defaultValue `{ generation: 0, previousGenerations: [] }`
   * @example `{ generation: 1, previousGenerations: [0] }`
   */
  signingKey?: SigningKeyArgs;
  /**
   * Serving protocol: `"ssh"` (`nix-store --serve`) or `"ssh-ng"` (`nix-daemon --stdio`).
   * @defaultValue `"ssh"`
   */
  protocol?: Protocol;
  /**
   * Let clients upload paths (`nix.sshServe.write`, `nix-store --serve --write`). `nix-ssh` is
   * not a trusted Nix user (`nix.sshServe.trusted` exists only from NixOS 25.05 and is not set),
   * so the daemon accepts only uploads signed by a key staging trusts, or content-addressed
   * paths. Note that `ssh://` clients always start `nix-store --serve --write`: the serving
   * command is forced on staging (sshd `ForceCommand`), so without `write` the flag is dropped.
   * @defaultValue `false`
   */
  write?: boolean;
  /**
   * Sign the paths already in staging's store once, when the signing key is first configured
   * (`nix store sign --all`): `secret-key-files` signs only what the daemon builds afterwards,
   * and `nix-store --serve` sends only the signatures a path already has, so without this the
   * paths staging built before the first `up` are built again on production. Runs again only
   * when the key changes. The step reports the number of paths signed (`signedPaths`).
   * @defaultValue `true`
   */
  signExistingPaths?: boolean;
}

/**
 * Turns a host into a private, signed Nix binary cache served over SSH.
 *
 * On NixOS it writes a module (`nix.sshServe`, `secret-key-files`) and runs `nixos-rebuild`; on
 * other Linux it applies the same by itself: user `nix-ssh`, an sshd `Match User` block forcing
 * `nix-store --serve`, its authorized keys, and `secret-key-files` in an included nix.conf.
 * Finally it builds a signed canary path that clients realise to prove the cache works.
 *
 * @example
 * ```ts
 * const server = new CacheServer("cache", {
 *   host: {
 *     connection: { host: "stage.yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") },
 *   },
 *   authorizedKeys: ["ssh-ed25519 AAAA... root@yourapp"],
 * });
 * export const coordinates = server.coordinates;
 * ```
 */
export class CacheServer extends pulumi.ComponentResource {
  /** The cache's current public key, `NAME:BASE64`; production trusts it. */
  public readonly cachePublicKey: pulumi.Output<string>;
  /**
   * Every public key production trusts: the current one first, then those of
   * `signingKey.previousGenerations` (during a rotation's overlap).
   */
  public readonly publicKeys: pulumi.Output<string[]>;
  /** Staging's SSH host key, as read from the host. */
  public readonly hostKey: pulumi.Output<string>;
  /** The substituter URL production uses, e.g. `ssh://nix-ssh@stage.yourapp.com`. */
  public readonly substituterUrl: pulumi.Output<string>;
  /** The rendered NixOS module for staging. */
  public readonly module: pulumi.Output<string>;
  /** `"nixos"` or `"linux"`. */
  public readonly os: pulumi.Output<string>;
  /** All a client needs (see {@link CacheCoordinates}); ready once staging is fully configured. */
  public readonly coordinates: pulumi.Output<CacheCoordinates>;
  /**
   * How many paths of staging's store the current key newly signed (`signExistingPaths`, or
   * after a key rotation); `0` when neither ran.
   */
  public readonly signedPaths: pulumi.Output<number>;
  /** The authorisation of each of `clients`, by name. */
  private readonly authorizations: Record<string, HostStep<AuthorizedKeysResult>>;
  /** The coordinates field by field (see {@link CacheServer.coordinatesFor}). */
  private readonly fields: CacheCoordinateInputs;
  /** The canary build: the last step of staging. */
  private readonly canary: HostStep<CanaryResult>;

  constructor(name: string, args: CacheServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:CacheServer", name, {}, opts);
    // The production keys (clients, authorizedKeys) are not known before the production hosts
    // are read: checked now as far as known, later each when rendered, so they never hold back
    // staging's own steps.
    const checked = args as unknown as PlainCacheServerArgs;
    const later = isResolved(args.host)
      ? null
      : { ...checked, authorizedKeys: undefined, clients: undefined };
    const valid = validateNow(this, checked, validateServerArgs, later);
    const host = resolveHost(args.host, valid);
    const s = serverSettings(name, args, host);
    const probe = probeStep(`${name}-probe`, {
      connection: host.connection,
      opts: { parent: this },
    });
    const facts: pulumi.Output<HostFacts> = probe.result;
    const at = (dependsOn: pulumi.Resource[]): StepContext => ({
      connection: host.connection,
      os: facts.os,
      opts: { parent: this, dependsOn },
    });
    const keys = signingKeys(s, at([probe]));
    this.cachePublicKey = keys[0].result.apply((r) => r.publicKey);
    this.publicKeys = pulumi.all(keys.map((k) => k.result.apply((r) => r.publicKey)));
    // After the signing keys: their step refuses a host that already signs with another key
    // before anything is changed.
    this.authorizations = authorizeClients(s, at(keys), args.clients ?? {});
    const extraKeys = authorizeKeys(s, at(keys), args.authorizedKeys);
    this.module = stagingModule(s);
    const linux = linuxSteps(s, at(keys), facts);
    const nixos = nixosModuleSteps(name, at([...keys, probe]), this.module, s.fragments, {
      CHECK_SIGNING_KEYS: s.keyFiles.join(" "),
    });
    const signStore = signStoreSteps(s, at([linux.nixConf, ...nixos]), this.cachePublicKey);
    this.signedPaths = signedCount(signStore);
    const canary = canaryStep(
      `${name}-canary`,
      at([linux.serveUser, linux.sshd, linux.nixConf, ...nixos, ...signStore, extraKeys]),
      canaryNonce(s, this.publicKeys),
    );

    this.os = facts.os;
    this.hostKey = facts.hostKey;
    this.substituterUrl = pulumi.all([host.hostName, host.port]).apply(([h, port]) =>
      substituterUrl({
        protocol: s.protocol,
        host: h,
        port,
        params: {
          compress: args.compress,
          maxConnections: args.maxConnections,
          priority: args.priority,
        },
      }),
    );
    this.canary = canary;
    this.fields = {
      substituterUrl: this.substituterUrl,
      publicKeys: this.publicKeys,
      hostName: host.hostName,
      port: host.port,
      hostKey: this.hostKey,
      canaryPath: canary.result.path,
    };
    this.coordinates = pulumi.all([canary.urn, this.fields]).apply(([, c]) => c);

    this.registerOutputs({
      cachePublicKey: this.cachePublicKey,
      publicKeys: this.publicKeys,
      hostKey: this.hostKey,
      substituterUrl: this.substituterUrl,
      module: this.module,
      os: this.os,
      coordinates: this.coordinates,
      signedPaths: this.signedPaths,
    });
  }

  /**
   * The coordinates, once the key of `client` (a name in `clients`) is authorised too: what
   * that client's `CacheClient` takes as `cache`.
   */
  public coordinatesFor(client: string): CacheCoordinateInputs {
    // Each field waits for staging to be configured (the canary) and for this client's key,
    // but is known as soon as its own value is: a preview after a change that rebuilds the
    // canary shows only what changes on the client.
    const ready = pulumi.all([this.canary.urn, this.authorizations[client]?.urn]);
    const after = <T>(v: pulumi.Input<T>): pulumi.Output<T> =>
      pulumi.all([ready, v]).apply(([, value]) => value as T);
    const f = this.fields;
    return {
      substituterUrl: after(f.substituterUrl),
      publicKeys: after(f.publicKeys),
      hostName: after(f.hostName),
      port: after(f.port),
      hostKey: after(f.hostKey),
      canaryPath: after(f.canaryPath),
    };
  }
}

/** One entry in the serve user's keys file per client: each waits only for its own key. */
function authorizeClients(
  s: ServerSettings,
  at: StepContext,
  clients: Record<string, pulumi.Input<string>>,
): Record<string, HostStep<AuthorizedKeysResult>> {
  const steps: Record<string, HostStep<AuthorizedKeysResult>> = {};
  for (const [client, key] of Object.entries(clients)) {
    steps[client] = authorizedKeysStep(`${s.name}-authorize-${client}`, at, {
      file: STAGING_FILES.authorizedKeys,
      entry: `client-${client}`,
      lines: pulumi.output(key).apply((k) => renderAuthorizedKeys([k])),
    });
  }
  return steps;
}

/** The extra keys, together in one entry (the child name of the former whole-file step). */
function authorizeKeys(
  s: ServerSettings,
  at: StepContext,
  keys: CacheServerArgs["authorizedKeys"],
): HostStep<AuthorizedKeysResult> {
  // Always there, even without extra keys: a stack from before per-host entries has its
  // whole-file step under this name, and updating it (dropping the untagged lines) keeps the
  // file, where deleting it would delete the file with every host's entry.
  return authorizedKeysStep(`${s.name}-authorized-keys`, at, {
    file: STAGING_FILES.authorizedKeys,
    entry: "keys",
    lines: pulumi.output(keys ?? []).apply((list) => renderAuthorizedKeys(list)),
  });
}

/** CacheServer's arguments with the defaults applied. */
interface ServerSettings {
  name: string;
  keyName: pulumi.Output<string>;
  keyDirectory: string;
  /** Current generation first, then the previous ones still in use. */
  generations: number[];
  /** Private key files of `generations`, in the same order. */
  keyFiles: string[];
  protocol: Protocol;
  write: boolean;
  removeSigningKeyOnDestroy: boolean;
  /** `signingKey.adoptExisting`. */
  adoptExistingKey: boolean;
  signExistingPaths: boolean;
  fragments: ResolvedFragmentOptions;
}

function serverSettings(name: string, args: CacheServerArgs, host: ResolvedHost): ServerSettings {
  const keyDirectory = args.keyDirectory ?? DEFAULT_KEY_DIRECTORY;
  const generation = args.signingKey?.generation ?? 0;
  const previous = [...new Set(args.signingKey?.previousGenerations ?? [])].filter(
    (g) => g !== generation,
  );
  const generations = [generation, ...previous];
  return {
    name,
    keyName: pulumi.output(args.keyName ?? host.hostName),
    keyDirectory,
    generations,
    // Staging signs with every generation in use: during a rotation's overlap a path then
    // carries the old and the new signature, whichever side is updated first.
    keyFiles: generations.map((g) => signingKeyFiles(keyDirectory, g).privateKey),
    protocol: args.protocol ?? "ssh",
    write: args.write ?? false,
    removeSigningKeyOnDestroy: args.removeSigningKeyOnDestroy ?? false,
    adoptExistingKey: args.signingKey?.adoptExisting ?? false,
    signExistingPaths: args.signExistingPaths ?? true,
    fragments: fragmentDefaults(args),
  };
}

/** One signing key step per generation in use, the current one first. */
function signingKeys(s: ServerSettings, at: StepContext): HostStep<SigningKeyResult>[] {
  return s.generations.map((g) =>
    signingKeyStep(g > 0 ? `${s.name}-signing-key-${g}` : `${s.name}-signing-key`, at, {
      keyName: s.keyName.apply((k) => signingKeyName(k, g)),
      keyDirectory: s.keyDirectory,
      generation: g,
      removeOnDestroy: s.removeSigningKeyOnDestroy,
      adoptExisting: s.adoptExistingKey,
    }),
  );
}

/**
 * The NixOS module for staging. The production keys are not in it: sshd reads them from the
 * keys file the authorisation steps manage, so the module waits for no production host.
 */
function stagingModule(s: ServerSettings): pulumi.Output<string> {
  return pulumi.output(
    renderStagingModule({
      clientKeys: [],
      secretKeyFile: s.keyFiles[0],
      previousSecretKeyFiles: s.keyFiles.slice(1),
      write: s.write,
      protocol: s.protocol,
      authorizedKeysFile: STAGING_FILES.authorizedKeys,
    }),
  );
}

/**
 * Plain Linux: the equivalent of the NixOS module, applied file by file. The ForceCommand names
 * Nix by its absolute path when the probe found Nix outside sshd's session PATH.
 */
function linuxSteps(s: ServerSettings, at: StepContext, facts: pulumi.Output<HostFacts>) {
  const after = (dependsOn: pulumi.Resource[]): StepContext => ({
    ...at,
    opts: { parent: at.opts.parent, dependsOn },
  });
  const nixConf = fileStep(`${s.name}-nix-conf`, at, {
    path: STAGING_FILES.nixConf,
    content: renderNixConf({ secretKeyFiles: s.keyFiles }),
    after: "nix",
    label: "nix.conf include",
    onlyOn: "linux",
  });
  // After nix.conf: its step restarts nix-daemon, which the serve user's step checks is running.
  const serveUser = serveUserStep(`${s.name}-serve-user`, after([nixConf]));
  const sshdAt = after([serveUser]);
  sshdAt.opts.aliases = [{ name: `${s.name}-sshd` }];
  const sshd = fileStep(`${s.name}-sshd-config`, sshdAt, {
    path: STAGING_FILES.sshdDropIn,
    content: facts.apply((f) =>
      renderSshdMatchBlock({
        user: "nix-ssh",
        authorizedKeysFile: STAGING_FILES.authorizedKeys,
        forceCommand: serveCommand(s.protocol, s.write, f.nixBin),
      }),
    ),
    after: "sshd",
    label: "sshd drop-in",
    onlyOn: "linux",
  });
  return { serveUser, sshd, nixConf };
}

/**
 * Add the current key's signature to every path already in the store, once signing is
 * configured (paths built meanwhile are signed at build time), again whenever the current key
 * changes (the env carries it). Generation 0: the paths staging built before the cache existed
 * (`signExistingPaths`). After a rotation: so they keep substituting once older keys are retired.
 */
function signStoreSteps(
  s: ServerSettings,
  at: StepContext,
  publicKey: pulumi.Output<string>,
): HostStep<SignStoreResult>[] {
  const generation = s.generations[0];
  if (generation === 0 && !s.signExistingPaths) return [];
  const args = { generation, keyFile: s.keyFiles[0], publicKey };
  return [
    generation > 0
      ? signStoreStep(`${s.name}-sign-store-${generation}`, at, args)
      : signStoreStep(`${s.name}-sign-store`, at, {
          ...args,
          label: "sign the paths already in the store",
        }),
  ];
}

/** How many paths the sign-store step (if any) newly signed; `0` without one. */
function signedCount(steps: HostStep<SignStoreResult>[]): pulumi.Output<number> {
  if (steps.length === 0) return pulumi.output(0);
  return steps[0].result.apply((r) => Number(r.signed ?? r.paths ?? 0));
}

/**
 * The canary is built and signed once staging is configured, and again when the keys change
 * (not the protocol: the same signed path proves either, and every client verifies again
 * anyway). Not when the authorised keys change: adding or removing a production host must not
 * make every other host verify again.
 */
function canaryNonce(
  s: ServerSettings,
  publicKeys: pulumi.Output<string[]>,
): pulumi.Output<string> {
  return publicKeys.apply((keys) => digest(`${keys.join("\n")}\n${s.keyFiles.join("\n")}`));
}
