/**
 * `CacheServer`: the staging role. Staging signs what it builds and serves its store to the
 * authorised production keys over SSH (`nix-store --serve` as user `nix-ssh`).
 */
import * as crypto from "crypto";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { hostScript, resolveConnection } from "./host";
import { HostStep } from "./hostStep";
import {
  renderAuthorizedKeys,
  renderNixConf,
  renderSshdMatchBlock,
  renderStagingModule,
  serveCommand,
  substituterUrl,
} from "./render";
import { Connection } from "./ssh";
import { fileStep, hostFacts, probeStep } from "./steps";
import { LocalFile } from "./trackedFile";
import {
  FragmentOptions,
  FragmentsMode,
  Protocol,
  RebuildMode,
  SigningKeyArgs,
  StagingArgs,
  SubstituterOptions,
} from "./types";

/** Paths the plain-Linux path manages on staging. */
export const STAGING_FILES = {
  authorizedKeys: "/etc/ssh/nix-ssh-cache/authorized_keys",
  sshdDropIn: "/etc/ssh/sshd_config.d/nix-ssh-cache.conf",
  nixConf: "/etc/nix/nix-ssh-cache.conf",
} as const;

/** The default directory of the signing key: the seed tutorial's layout. */
export const DEFAULT_KEY_DIRECTORY = "/etc/shipnix/binary";
/** The default path of the generated NixOS module on a host. */
export const DEFAULT_FRAGMENT_PATH = "/etc/nixos/nix-ssh-cache.nix";

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
  /** The staging host and how to reach it. */
  host: StagingArgs;
  /**
   * SSH public keys allowed to substitute: each production host's root key (see
   * `ClientIdentity.publicKey`), or keys exported by production stacks.
   * @example `[prod1.publicKey, "ssh-ed25519 AAAA... root@prod2"]`
   */
  authorizedKeys: pulumi.Input<pulumi.Input<string>[]>;
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
 *   host: { host: "stage.yourapp.com", user: "ship", privateKey: cfg.requireSecret("sshKey") },
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

  constructor(name: string, args: CacheServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:CacheServer", name, {}, opts);
    const child: pulumi.CustomResourceOptions = { parent: this };
    const connection: pulumi.Output<Connection> = resolveConnection(args.host);
    const hostName = pulumi.output(args.host.cacheHost ?? args.host.host);
    const keyName = pulumi.output(args.keyName ?? hostName);
    const keyDirectory = args.keyDirectory ?? DEFAULT_KEY_DIRECTORY;
    const generation = args.signingKey?.generation ?? 0;
    const previous = [...new Set(args.signingKey?.previousGenerations ?? [])].filter(
      (g) => g !== generation,
    );
    const generations = [generation, ...previous];
    // Staging signs with every generation in use: during a rotation's overlap a path then
    // carries the old and the new signature, whichever side is updated first.
    const keyFiles = generations.map((g) => signingKeyFiles(keyDirectory, g).privateKey);
    const keyFile = keyFiles[0];
    const protocol = args.protocol ?? "ssh";
    const fragments = args.fragments ?? "remote";

    const probe = probeStep(`${name}-probe`, connection, child);
    const facts = hostFacts(probe);

    const signingKeys = generations.map(
      (g) =>
        new HostStep(
          g > 0 ? `${name}-signing-key-${g}` : `${name}-signing-key`,
          {
            connection,
            step: g > 0 ? `signing key ${g}` : "signing key",
            script: hostScript("signing-key"),
            env: keyName.apply((k): Record<string, string> =>
              g > 0
                ? { KEY_NAME: signingKeyName(k, g), KEY_DIR: keyDirectory, KEY_GENERATION: `${g}` }
                : { KEY_NAME: k, KEY_DIR: keyDirectory },
            ),
            readable: true,
            removable: true,
            removeEnv: { REMOVE_KEY: args.removeSigningKeyOnDestroy ? "1" : "0" },
            driftKeys: ["publicKey"],
            triggers: [],
            timeoutSeconds: 120,
          },
          { ...child, dependsOn: [probe] },
        ),
    );
    const signingKey = signingKeys[0];
    this.cachePublicKey = signingKey.result.apply((r) => String(r.publicKey));
    this.publicKeys = pulumi.all(
      signingKeys.map((k) => k.result.apply((r) => String(r.publicKey))),
    );

    const clientKeys = pulumi
      .output(args.authorizedKeys)
      .apply((keys) => [...new Set(keys.map((k) => k.trim()))].sort());
    this.module = clientKeys.apply((keys) =>
      renderStagingModule({
        clientKeys: keys,
        secretKeyFile: keyFile,
        previousSecretKeyFiles: keyFiles.slice(1),
        write: args.write,
        protocol,
      }),
    );

    // Plain Linux: the equivalent of the NixOS module, applied file by file.
    const serveUser = new HostStep(
      `${name}-serve-user`,
      {
        connection,
        step: "serve user",
        script: hostScript("serve-user", "linux"),
        env: { SERVE_USER: "nix-ssh" },
        readable: false,
        removable: true,
        removeEnv: {},
        driftKeys: [],
        triggers: [],
        timeoutSeconds: 60,
      },
      // after the signing keys: their step refuses a host that already signs with another key
      // before anything is changed
      { ...child, dependsOn: [probe, ...signingKeys] },
    );
    const authorizedKeys = fileStep(
      `${name}-authorized-keys`,
      {
        connection,
        path: STAGING_FILES.authorizedKeys,
        content: clientKeys.apply(renderAuthorizedKeys),
        label: "authorized keys",
        onlyOn: "linux",
      },
      { ...child, dependsOn: [serveUser] },
    );
    const sshdDropIn = fileStep(
      `${name}-sshd`,
      {
        connection,
        path: STAGING_FILES.sshdDropIn,
        content: facts.apply((f) =>
          renderSshdMatchBlock({
            user: "nix-ssh",
            authorizedKeysFile: STAGING_FILES.authorizedKeys,
            forceCommand: serveCommand(protocol, args.write ?? false, f.nixBin),
          }),
        ),
        after: "sshd",
        label: "sshd drop-in",
        onlyOn: "linux",
      },
      { ...child, dependsOn: [authorizedKeys] },
    );
    const nixConf = fileStep(
      `${name}-nix-conf`,
      {
        connection,
        path: STAGING_FILES.nixConf,
        content: renderNixConf({ secretKeyFiles: keyFiles }),
        after: "nix",
        label: "nix.conf include",
        onlyOn: "linux",
      },
      { ...child, dependsOn: signingKeys },
    );

    // NixOS: the module, then nixos-rebuild.
    const nixosSteps = nixosModuleSteps(name, {
      connection,
      module: this.module,
      fragments,
      fragmentPath: args.fragmentPath ?? DEFAULT_FRAGMENT_PATH,
      localPath: path.join(args.localFragmentsDir ?? "nixos", `${name}.nix`),
      rebuild: args.rebuild ?? "switch",
      addImport: args.addImport ?? false,
      checkEnv: { CHECK_SIGNING_KEYS: keyFiles.join(" ") },
      dependsOn: [...signingKeys, probe],
      parent: this,
    });

    const signStoreStep = (stepName: string, label: string): HostStep =>
      new HostStep(
        stepName,
        {
          connection,
          step: label,
          script: hostScript("sign-store"),
          env: this.cachePublicKey.apply((k) => ({ KEY_FILE: keyFile, PUBLIC_KEY: k })),
          readable: false,
          removable: false,
          removeEnv: {},
          driftKeys: [],
          triggers: [],
          timeoutSeconds: 3600,
        },
        { ...child, dependsOn: [nixConf, ...nixosSteps] },
      );
    // Add the current key's signature to every path already in the store, once signing is
    // configured (paths built meanwhile are signed at build time), again whenever the current
    // key changes (the env carries it). Generation 0: the paths staging built before the cache
    // existed (`signExistingPaths`). After a rotation: so they keep substituting once older keys
    // are retired.
    const signExisting =
      generation === 0 && (args.signExistingPaths ?? true)
        ? [signStoreStep(`${name}-sign-store`, "sign the paths already in the store")]
        : [];
    const signStore =
      generation > 0
        ? [
            signStoreStep(
              `${name}-sign-store-${generation}`,
              `sign the store with key ${generation}`,
            ),
          ]
        : signExisting;
    this.signedPaths =
      signStore.length > 0
        ? signStore[0].result.apply((r) => Number(r.signed ?? r.paths ?? 0))
        : pulumi.output(0);

    // The canary: built and signed once staging is configured; rebuilt when the keys change.
    // Not when the authorised keys change: adding or removing a production host must not make
    // every other host verify again.
    const canaryTrigger = this.publicKeys.apply((keys) =>
      crypto
        .createHash("sha256")
        .update(`${keys.join("\n")}\n${keyFiles.join("\n")}\n${protocol}`)
        .digest("hex")
        .slice(0, 16),
    );
    const canary = new HostStep(
      `${name}-canary`,
      {
        connection,
        step: "canary build",
        script: hostScript("canary"),
        env: canaryTrigger.apply((nonce) => ({ NONCE: nonce })),
        readable: false,
        removable: false,
        removeEnv: {},
        driftKeys: [],
        triggers: [],
        timeoutSeconds: 300,
      },
      {
        ...child,
        dependsOn: [serveUser, authorizedKeys, sshdDropIn, nixConf, ...nixosSteps, ...signStore],
      },
    );

    this.os = facts.os;
    this.hostKey = facts.hostKey;
    const port = pulumi.output(args.host.port ?? 22);
    this.substituterUrl = pulumi.all([hostName, port]).apply(([host, p]) =>
      substituterUrl({
        protocol,
        host,
        port: p,
        params: {
          compress: args.compress,
          maxConnections: args.maxConnections,
          priority: args.priority,
        },
      }),
    );
    this.coordinates = pulumi
      .all([this.substituterUrl, this.publicKeys, hostName, port, facts, canary.result])
      .apply(([url, publicKeys, host, p, f, c]) => ({
        substituterUrl: url,
        publicKeys,
        hostName: host,
        port: p,
        hostKey: f.hostKey,
        canaryPath: String(c.path),
      }));

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
}

/** Arguments of {@link nixosModuleSteps}. */
export interface NixosModuleStepsArgs {
  connection: pulumi.Input<Connection>;
  module: pulumi.Input<string>;
  fragments: FragmentsMode;
  fragmentPath: string;
  localPath: string;
  rebuild: RebuildMode;
  addImport: boolean;
  /**
   * What nixos-apply checks is in force after `nixos-rebuild switch`: `CHECK_SIGNING_KEYS`
   * (staging) or `CHECK_SUBSTITUTER` + `CHECK_PUBLIC_KEYS` (production).
   */
  checkEnv: pulumi.Input<Record<string, string>>;
  dependsOn: pulumi.Resource[];
  parent: pulumi.Resource;
}

/**
 * The NixOS half of a role: the module written on the host (`"remote"`, then `nixos-rebuild`)
 * or into the operator's repository (`"local"`, deployed by the user). On plain Linux the host
 * steps report `skipped`.
 */
export function nixosModuleSteps(name: string, a: NixosModuleStepsArgs): pulumi.Resource[] {
  const opts: pulumi.CustomResourceOptions = { parent: a.parent, dependsOn: a.dependsOn };
  if (a.fragments === "local") {
    return [new LocalFile(`${name}-module`, { path: a.localPath, content: a.module }, opts)];
  }
  if (a.fragments === "none") return [];
  const moduleFile = fileStep(
    `${name}-module`,
    {
      connection: a.connection,
      path: a.fragmentPath,
      content: a.module,
      label: "NixOS module",
      onlyOn: "nixos",
    },
    opts,
  );
  const rebuild = new HostStep(
    `${name}-nixos-rebuild`,
    {
      connection: a.connection,
      step: "nixos-rebuild",
      script: hostScript("nixos-apply", "nixos"),
      env: pulumi.output(a.checkEnv).apply((check) => ({
        MODULE_PATH: a.fragmentPath,
        REBUILD: a.rebuild,
        ADD_IMPORT: a.addImport ? "1" : "0",
        ...check,
      })),
      readable: false,
      removable: false,
      removeEnv: {},
      driftKeys: [],
      triggers: pulumi.output(a.module).apply((m) => [m]),
      timeoutSeconds: 1800,
    },
    { parent: a.parent, dependsOn: [moduleFile] },
  );
  return [moduleFile, rebuild];
}
