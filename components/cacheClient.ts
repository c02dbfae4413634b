/**
 * The production role: a host that substitutes from a staging cache over SSH, with staging's
 * host key pinned and only the cache's key trusted for its paths.
 */
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { CacheCoordinates, DEFAULT_FRAGMENT_PATH, nixosModuleSteps } from "./cacheServer";
import { hostScript, resolveConnection } from "./host";
import { HostStep } from "./hostStep";
import {
  knownHostsName,
  renderKnownHosts,
  renderNixConf,
  renderProductionModule,
  renderSshClientConfig,
  withUrlParam,
} from "./render";
import { Connection } from "./ssh";
import { fileStep, hostFacts, probeStep } from "./steps";
import { FragmentOptions, ProductionArgs } from "./types";

/** Paths the plain-Linux path manages on production. */
export const CLIENT_FILES = {
  knownHosts: "/etc/ssh/nix-ssh-cache/known_hosts",
  sshConfigDropIn: "/etc/ssh/ssh_config.d/nix-ssh-cache.conf",
  nixConf: "/etc/nix/nix-ssh-cache.conf",
  /** The dedicated client key (`clientIdentity: "dedicated"`), root-only. */
  identity: "/etc/nix/nix-ssh-cache/id_ed25519",
} as const;

/**
 * Whose SSH key a production host uses to log in to the cache.
 *
 * - `"root"`: root's own key (`~/.ssh/id_ed25519`, …), read from the host (generated there when
 *   missing); the private key never leaves the host. The seed tutorial's way.
 * - `"dedicated"`: an ED25519 key made by Pulumi (`@pulumi/tls` `PrivateKey`), kept as a secret in
 *   the state, installed root-only at `/etc/nix/nix-ssh-cache/id_ed25519` and named in the
 *   substituter URL (`ssh-key=`). Its public key is known before the host is reached, so staging
 *   can authorise a fleet before its hosts exist, and it is used for nothing else.
 *
 * @defaultValue `"root"`
 */
export type ClientIdentityMode = "root" | "dedicated";

/** A client key pair, e.g. a `tls.PrivateKey` with `algorithm: "ED25519"`. */
export interface ClientKeyPair {
  /** The public key line, `ssh-ed25519 AAAA…`, authorised on staging. */
  publicKeyOpenssh: pulumi.Input<string>;
  /** The private key in OpenSSH format. A Pulumi secret. */
  privateKeyOpenssh: pulumi.Input<string>;
}

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
export interface CacheClientArgs extends FragmentOptions {
  /** The production host and how to reach it. */
  host: ProductionArgs;
  /**
   * The cache to use: `CacheServer.coordinates`, or the same object read from another stack.
   * @example `new pulumi.StackReference("org/staging/prod").requireOutput("cache")`
   */
  cache: pulumi.Input<CacheCoordinates>;
  /** This host's identity, when already created (`NixSshCache` does). @defaultValue a new one */
  identity?: ClientIdentity;
  /**
   * Whose key logs in to the cache: root's (`"root"`) or a dedicated key made by Pulumi
   * (`"dedicated"`, see {@link ClientIdentityMode}).
   * @defaultValue `"root"`
   * @example `"dedicated"`
   */
  clientIdentity?: ClientIdentityMode;
  /**
   * The dedicated key pair (`clientIdentity: "dedicated"`), when made elsewhere (e.g. by the
   * staging stack, so it can authorise the key before this host exists).
   * @defaultValue a new `tls.PrivateKey` (`algorithm: "ED25519"`) named `<name>-client-key`
   * @example `new tls.PrivateKey("web-key", { algorithm: "ED25519" })`
   */
  clientKey?: ClientKeyPair;
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
  /** The SSH public key this host logs in with (root's, or the dedicated one): authorise it. */
  public readonly publicKey: pulumi.Output<string>;
  /** This host's substituter URL (with `ssh-key=` for a dedicated identity). */
  public readonly substituterUrl: pulumi.Output<string>;
  /** The rendered NixOS module for this host. */
  public readonly module: pulumi.Output<string>;
  /** True once this host realised staging's canary path through the cache. */
  public readonly verified: pulumi.Output<boolean>;
  /** What the verification reported (path, substituter, signatures). */
  public readonly verification: pulumi.Output<Record<string, unknown>>;

  constructor(name: string, args: CacheClientArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:CacheClient", name, {}, opts);
    const connection: pulumi.Output<Connection> = resolveConnection(args.host);
    const dedicated = (args.clientIdentity ?? "root") === "dedicated";
    let probe: HostStep;
    const keySteps: HostStep[] = [];
    if (dedicated) {
      const key: ClientKeyPair =
        args.clientKey ??
        new tls.PrivateKey(`${name}-client-key`, { algorithm: "ED25519" }, { parent: this });
      probe = args.identity?.probe ?? probeStep(`${name}-probe`, connection, { parent: this });
      this.publicKey = pulumi.output(key.publicKeyOpenssh).apply((k) => k.trim());
      keySteps.push(
        fileStep(
          `${name}-client-key-file`,
          {
            connection,
            path: CLIENT_FILES.identity,
            content: pulumi.secret(key.privateKeyOpenssh),
            mode: "0600",
            label: "dedicated client key",
          },
          // The file's content travels in `env`: keep it secret in the state.
          { parent: this, dependsOn: [probe], additionalSecretOutputs: ["env"] },
        ),
      );
    } else {
      const identity =
        args.identity ??
        new ClientIdentity(`${name}-identity`, { host: args.host }, { parent: this });
      probe = identity.probe;
      this.publicKey = identity.publicKey;
    }
    const raw = pulumi.output(args.cache);
    // With a dedicated key, this host's URL names the key file (`ssh-key=`).
    const cache = raw.apply((c) =>
      dedicated
        ? { ...c, substituterUrl: withUrlParam(c.substituterUrl, "ssh-key", CLIENT_FILES.identity) }
        : c,
    );
    this.substituterUrl = cache.apply((c) => c.substituterUrl);
    const child = { parent: this, dependsOn: [probe] };

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
        after: "ssh",
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
      checkEnv: cache.apply((c) => ({
        CHECK_SUBSTITUTER: c.substituterUrl,
        CHECK_PUBLIC_KEYS: c.publicKeys.join(" "),
      })),
      dependsOn: [probe, ...keySteps],
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
        {
          parent: this,
          dependsOn: [knownHosts, sshConfig, nixConf, ...keySteps, ...nixosSteps],
        },
      );
      this.verification = verify.result;
      this.verified = verify.result.apply((r) => r.verified === true);
    } else {
      this.verification = pulumi.output("").apply((): Record<string, unknown> => ({}));
      this.verified = pulumi.output(false);
    }

    this.registerOutputs({
      publicKey: this.publicKey,
      substituterUrl: this.substituterUrl,
      module: this.module,
      verified: this.verified,
      verification: this.verification,
    });
  }
}
