/**
 * The production role: a host that substitutes from a staging cache over SSH, with staging's
 * host key pinned and only the cache's key trusted for its paths.
 */
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { CacheCoordinates, DEFAULT_FRAGMENT_PATH, nixosModuleSteps } from "./cacheServer";
import { hostScript, resolveConnection } from "./host";
import { HostStep } from "./hostStep";
import {
  knownHostsName,
  renderKnownHosts,
  renderNixConf,
  renderProductionModule,
  renderSshClientConfig,
} from "./render";
import { Connection } from "./ssh";
import { fileStep, hostFacts, probeStep } from "./steps";
import { FragmentsMode, ProductionArgs, RebuildMode } from "./types";

/** Paths the plain-Linux path manages on production. */
export const CLIENT_FILES = {
  knownHosts: "/etc/ssh/nix-ssh-cache/known_hosts",
  sshConfigDropIn: "/etc/ssh/ssh_config.d/nix-ssh-cache.conf",
  nixConf: "/etc/nix/nix-ssh-cache.conf",
} as const;

/** Arguments of {@link ClientIdentity}. */
export interface ClientIdentityArgs {
  /** The production host. */
  host: ProductionArgs;
}

/**
 * The SSH identity a production host's root uses to reach the cache: root's own key
 * (ed25519, ecdsa or rsa), or a new ed25519 key generated on the host when root has none. The
 * private key never leaves the host.
 */
export class ClientIdentity extends pulumi.ComponentResource {
  /** Root's SSH public key line, to authorise on staging. */
  public readonly publicKey: pulumi.Output<string>;
  /** `"nixos"` or `"linux"`. */
  public readonly os: pulumi.Output<string>;
  /** @internal The probe step (other steps of this host depend on it). */
  public readonly probe: HostStep;

  constructor(name: string, args: ClientIdentityArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:ClientIdentity", name, {}, opts);
    const connection = resolveConnection(args.host);
    this.probe = probeStep(`${name}-probe`, connection, { parent: this });
    const rootKey = new HostStep(
      `${name}-root-key`,
      {
        connection,
        step: "root SSH key",
        script: hostScript("client-key"),
        env: {},
        readable: true,
        removable: false,
        removeEnv: {},
        driftKeys: ["publicKey"],
        triggers: [],
        timeoutSeconds: 60,
      },
      { parent: this, dependsOn: [this.probe] },
    );
    this.publicKey = rootKey.result.apply((r) => String(r.publicKey));
    this.os = hostFacts(this.probe).os;
    this.registerOutputs({ publicKey: this.publicKey, os: this.os });
  }
}

/** Arguments of {@link CacheClient}. */
export interface CacheClientArgs {
  /** The production host and how to reach it. */
  host: ProductionArgs;
  /**
   * The cache to use: `CacheServer.coordinates`, or the same object read from another stack.
   * @example `new pulumi.StackReference("org/staging/prod").requireOutput("cache")`
   */
  cache: pulumi.Input<CacheCoordinates>;
  /** This host's identity, when already created (`NixSshCache` does). @defaultValue a new one */
  identity?: ClientIdentity;
  /** Where the NixOS module goes. @defaultValue `"remote"` */
  fragments?: FragmentsMode;
  /** Path of the module on the host. @defaultValue `"/etc/nixos/nix-ssh-cache.nix"` */
  fragmentPath?: string;
  /** Folder for the module on the operator's machine (`"local"`). @defaultValue `"nixos"` */
  localFragmentsDir?: string;
  /** NixOS only: `nixos-rebuild` mode. @defaultValue `"switch"` */
  rebuild?: RebuildMode;
  /** NixOS only: add the module to `configuration.nix` imports when missing. @defaultValue `false` */
  addImport?: boolean;
  /** Prove the cache works by realising staging's canary path. @defaultValue `true` */
  verify?: boolean;
}

/**
 * Points a production host at a staging cache: substituter, trusted key, pinned host key
 * (NixOS: a module and `nixos-rebuild`; other Linux: a known_hosts file, an ssh_config drop-in
 * with `StrictHostKeyChecking yes`, and an included nix.conf with `extra-substituters` and
 * `extra-trusted-public-keys`), then verifies by substituting staging's signed canary path.
 */
export class CacheClient extends pulumi.ComponentResource {
  /** Root's SSH public key, to authorise on staging. */
  public readonly publicKey: pulumi.Output<string>;
  /** The rendered NixOS module for this host. */
  public readonly module: pulumi.Output<string>;
  /** True once this host realised staging's canary path through the cache. */
  public readonly verified: pulumi.Output<boolean>;
  /** What the verification reported (path, substituter, signatures). */
  public readonly verification: pulumi.Output<Record<string, unknown>>;

  constructor(name: string, args: CacheClientArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:CacheClient", name, {}, opts);
    const connection: pulumi.Output<Connection> = resolveConnection(args.host);
    const identity =
      args.identity ??
      new ClientIdentity(`${name}-identity`, { host: args.host }, { parent: this });
    this.publicKey = identity.publicKey;
    const cache = pulumi.output(args.cache);
    const child = { parent: this, dependsOn: [identity.probe] };

    this.module = cache.apply((c) =>
      renderProductionModule({
        substituterUrl: c.substituterUrl,
        trustedPublicKeys: c.publicKeys,
        stagingHostName: c.hostName,
        stagingHostKey: c.hostKey,
        stagingPort: c.port,
      }),
    );

    const knownHosts = fileStep(
      `${name}-known-hosts`,
      {
        connection,
        path: CLIENT_FILES.knownHosts,
        content: cache.apply((c) =>
          renderKnownHosts([knownHostsName(c.hostName, c.port)], c.hostKey),
        ),
        label: "pinned staging host key",
        onlyOn: "linux",
      },
      child,
    );
    const sshConfig = fileStep(
      `${name}-ssh-config`,
      {
        connection,
        path: CLIENT_FILES.sshConfigDropIn,
        content: cache.apply((c) =>
          renderSshClientConfig({
            hostName: c.hostName,
            knownHostsFile: CLIENT_FILES.knownHosts,
            port: c.port,
          }),
        ),
        label: "ssh client drop-in",
        onlyOn: "linux",
      },
      { ...child, dependsOn: [knownHosts] },
    );
    const nixConf = fileStep(
      `${name}-nix-conf`,
      {
        connection,
        path: CLIENT_FILES.nixConf,
        content: cache.apply((c) =>
          renderNixConf({ substituters: [c.substituterUrl], trustedPublicKeys: c.publicKeys }),
        ),
        after: "nix",
        label: "nix.conf include",
        onlyOn: "linux",
      },
      { ...child, dependsOn: [sshConfig] },
    );
    const nixosSteps = nixosModuleSteps(name, {
      connection,
      module: this.module,
      fragments: args.fragments ?? "remote",
      fragmentPath: args.fragmentPath ?? DEFAULT_FRAGMENT_PATH,
      localPath: path.join(args.localFragmentsDir ?? "nixos", `${name}.nix`),
      rebuild: args.rebuild ?? "switch",
      addImport: args.addImport ?? false,
      dependsOn: [identity.probe],
      parent: this,
    });

    if (args.verify ?? true) {
      const verify = new HostStep(
        `${name}-verify`,
        {
          connection,
          step: "verify substitution from staging",
          script: hostScript("verify"),
          env: cache.apply((c) => ({
            CANARY_PATH: c.canaryPath,
            SUBSTITUTER: c.substituterUrl,
            STAGING: c.hostName,
          })),
          readable: false,
          removable: false,
          removeEnv: {},
          driftKeys: [],
          triggers: pulumi
            .all([knownHosts.result, sshConfig.result, nixConf.result])
            .apply((rs) => rs.map((r) => String(r.sha256 ?? r.skipped ?? ""))),
          timeoutSeconds: 300,
        },
        { parent: this, dependsOn: [knownHosts, sshConfig, nixConf, ...nixosSteps] },
      );
      this.verification = verify.result;
      this.verified = verify.result.apply((r) => r.verified === true);
    } else {
      this.verification = pulumi.output("").apply((): Record<string, unknown> => ({}));
      this.verified = pulumi.output(false);
    }

    this.registerOutputs({
      publicKey: this.publicKey,
      module: this.module,
      verified: this.verified,
      verification: this.verification,
    });
  }
}
