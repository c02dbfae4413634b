import * as pulumi from "@pulumi/pulumi";

/**
 * How production talks to the staging store over SSH.
 *
 * - `"ssh"`: the legacy `nix-store --serve` protocol (substituter URL `ssh://…`).
 * - `"ssh-ng"`: the daemon protocol, `nix-daemon --stdio` (substituter URL `ssh-ng://…`).
 *
 * @defaultValue `"ssh"`
 */
export type Protocol = "ssh" | "ssh-ng";

/**
 * What to do on a NixOS host after its generated module changed.
 *
 * - `"switch"`: `nixos-rebuild switch` (activate now).
 * - `"boot"`: `nixos-rebuild boot` (activate on next boot).
 * - `"none"`: only write the module; the operator rebuilds.
 *
 * @defaultValue `"switch"`
 */
export type RebuildMode = "switch" | "boot" | "none";

/**
 * Where the rendered configuration fragments (NixOS modules, nix.conf includes) go.
 *
 * - `"remote"`: written on each host (at `fragmentPath`).
 * - `"local"`: written on the operator's machine (in `localFragmentsDir`), for a repo that
 *   deploys NixOS configuration itself.
 * - `"none"`: not written; only returned as outputs.
 *
 * @defaultValue `"remote"`
 */
export type FragmentsMode = "remote" | "local" | "none";

/**
 * How to reach a host over SSH: the connection Pulumi (the operator) uses to configure it.
 *
 * Give either `privateKey` or `password`.
 *
 * @example
 * ```ts
 * const prod1: HostArgs = {
 *   host: "prod1.example.com",
 *   user: "deploy", // not root, so commands run through sudo
 *   privateKey: config.requireSecret("sshKey"),
 *   hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@prod1",
 * };
 * ```
 */
export interface HostArgs {
  /** DNS name or IP address the operator (Pulumi) connects to, e.g. `"prod1.example.com"`. */
  host: pulumi.Input<string>;
  /**
   * SSH port of the host.
   * @defaultValue `22`
   */
  port?: pulumi.Input<number>;
  /**
   * Login user for the operator's connection.
   * @defaultValue `"root"`
   */
  user?: pulumi.Input<string>;
  /**
   * OpenSSH or PEM private key (`-----BEGIN … PRIVATE KEY-----`) for the login. Pass a Pulumi
   * secret, e.g. `config.requireSecret("sshKey")`. Required unless `password` is given.
   */
  privateKey?: pulumi.Input<string>;
  /** Password for the login, an alternative to `privateKey`. Pass a Pulumi secret. */
  password?: pulumi.Input<string>;
  /**
   * Pinned public host key of this host for the operator's own connection, as
   * `"ssh-ed25519 AAAA…"` (a line of `/etc/ssh/ssh_host_ed25519_key.pub`). Without it the
   * operator's connection does not verify the host key.
   * @defaultValue none (host key not verified)
   */
  hostKey?: pulumi.Input<string>;
  /**
   * How to gain root for configuration commands.
   * @defaultValue `"sudo"` when `user` is not `"root"`, else `"none"`
   */
  become?: pulumi.Input<"sudo" | "none">;
  /** Passphrase of an encrypted `privateKey`. Pass a Pulumi secret. */
  privateKeyPassword?: pulumi.Input<string>;
  /**
   * Path of an ssh-agent socket whose keys are offered (as `@pulumi/command`'s
   * `agentSocketPath`).
   * @defaultValue env `SSH_AUTH_SOCK` of `pulumi`, only when neither `privateKey` nor `password` is given
   */
  agentSocketPath?: pulumi.Input<string>;
  /**
   * A jump host (bastion) the connection goes through, e.g.
   * `{ host: "bastion.example.com", user: "jump", hostKey: "ssh-ed25519 AAAA…" }`; it resolves
   * and reaches `host:port` itself (SSH `direct-tcpip`, like `ssh -J`).
   * @defaultValue none (direct connection)
   */
  proxy?: pulumi.Input<ProxyArgs>;
  /**
   * Dial attempts while the host does not answer (e.g. still booting); `-1`: no limit.
   * @defaultValue `10`
   */
  dialErrorLimit?: pulumi.Input<number>;
  /**
   * Seconds one dial attempt (connect, handshake, login) may take; `0`: no limit.
   * @defaultValue `15`
   */
  perDialTimeout?: pulumi.Input<number>;
}

/**
 * A jump host: the fields of `@pulumi/command`'s `remote.ProxyConnectionArgs`, plus `hostKey`.
 * Give it its own credentials, or it uses env `SSH_AUTH_SOCK` (ssh-agent).
 */
export interface ProxyArgs {
  /** DNS name or IP address of the jump host. */
  host: pulumi.Input<string>;
  /** @defaultValue `22` */
  port?: pulumi.Input<number>;
  /** @defaultValue `"root"` */
  user?: pulumi.Input<string>;
  /** Private key for the jump host (a Pulumi secret). */
  privateKey?: pulumi.Input<string>;
  /** Passphrase of an encrypted `privateKey` (a Pulumi secret). */
  privateKeyPassword?: pulumi.Input<string>;
  /** Password for the jump host (a Pulumi secret). */
  password?: pulumi.Input<string>;
  /** @defaultValue env `SSH_AUTH_SOCK`, only when neither `privateKey` nor `password` is given */
  agentSocketPath?: pulumi.Input<string>;
  /** Pinned host key of the jump host, `"ssh-ed25519 AAAA…"`. @defaultValue not verified */
  hostKey?: pulumi.Input<string>;
  /** @defaultValue `10` */
  dialErrorLimit?: pulumi.Input<number>;
  /** @defaultValue `15` */
  perDialTimeout?: pulumi.Input<number>;
}

/**
 * The staging host: it builds, signs its store paths and serves them to production over SSH.
 *
 * @example
 * ```ts
 * const staging: StagingArgs = {
 *   host: "203.0.113.10",
 *   cacheHost: "stage.yourapp.com", // the name production resolves
 *   privateKey: config.requireSecret("sshKey"),
 * };
 * ```
 */
export interface StagingArgs extends HostArgs {
  /**
   * Host name production servers use to reach staging (in the substituter URL and the pinned
   * known-hosts entry), when it differs from `host` (e.g. a private network name).
   * @defaultValue the value of `host`
   */
  cacheHost?: string;
}

/**
 * A production host: it substitutes from the staging cache instead of building.
 *
 * @example
 * ```ts
 * const production: ProductionArgs[] = [
 *   { host: "yourapp.com", name: "web", privateKey: config.requireSecret("sshKey") },
 * ];
 * ```
 */
export interface ProductionArgs extends HostArgs {
  /**
   * Suffix of the child resource names for this host, e.g. `"web"` gives `<name>-prod-web`.
   * @defaultValue derived from `host` (non-alphanumerics replaced by `-`)
   */
  name?: string;
}

/**
 * Which signing key staging signs with, and which older keys production still trusts: the
 * inputs of a key rotation (see README, "Rotating the signing key").
 *
 * Generation `0` is the seed's key: name `keyName`, files `cache-priv-key.pem` /
 * `cache-pub-key.pem`. Generation `N > 0` is named `<keyName>-<N>`, in `cache-priv-key-<N>.pem`
 * / `cache-pub-key-<N>.pem`, so generations never overwrite each other.
 *
 * @example
 * ```ts
 * // step (a) of a rotation: sign with generation 1, keep generation 0 trusted
 * signingKey: { generation: 1, previousGenerations: [0] }
 * // step (b), once every production host was updated: retire generation 0
 * signingKey: { generation: 1 }
 * ```
 */
export interface SigningKeyArgs {
  /**
   * The current key generation: staging signs new paths with it and re-signs its whole store
   * with it (`nix store sign --all`) when it is greater than 0, so paths built before the
   * rotation keep substituting after the old key is retired.
   * @defaultValue `0` (the key `keyName`, `cache-priv-key.pem`)
   */
  generation?: number;
  /**
   * Older generations still in use during the overlap of a rotation: production trusts their
   * public keys (`CacheCoordinates.publicKeys` carries them after the current one) and staging
   * keeps signing with them too, so no host rejects a path whichever of staging and production
   * is updated first. Remove them (an empty list) to retire them.
   * @defaultValue `[]`
   * @example `[0]`
   */
  previousGenerations?: number[];
}

/**
 * Query parameters of the substituter URL, for every production host (on NixOS in the module's
 * `nix.settings.substituters`, on plain Linux in the included nix.conf: the same URL).
 *
 * @example
 * ```ts
 * { priority: 30 } // => ssh://nix-ssh@stage.yourapp.com?priority=30
 * ```
 */
export interface SubstituterOptions {
  /**
   * `compress=true`: ssh compression. Slower on fast links and incompressible data (8.9 s
   * instead of 1.75 s for 200 MiB on a LAN).
   * @defaultValue unset (Nix's default, `false`)
   */
  compress?: boolean;
  /**
   * `max-connections=N`: parallel SSH connections to staging. Only `1` is accepted:
   * `max-connections=8` hung on Nix 2.8 on `ssh://` and `ssh-ng://` alike (bench/results.md).
   * @defaultValue unset (Nix's default, `1`)
   */
  maxConnections?: number;
  /**
   * `priority=N`: lower is preferred; cache.nixos.org has 40.
   * @defaultValue unset (Nix's default for SSH stores)
   * @example `30`
   */
  priority?: number;
}

/**
 * Where the rendered NixOS modules go and how NixOS hosts apply them; the same options for
 * `NixSshCache`, `CacheServer` and `CacheClient`.
 */
export interface FragmentOptions {
  /**
   * Where the NixOS modules go: `"remote"` (on each host), `"local"` (into `localFragmentsDir`
   * on the operator's machine) or `"none"`.
   * @defaultValue `"remote"`
   */
  fragments?: FragmentsMode;
  /**
   * Path of the module on each host (`fragments: "remote"`).
   * @defaultValue `"/etc/nixos/nix-ssh-cache.nix"`
   */
  fragmentPath?: string;
  /**
   * Folder for the modules on the operator's machine (`fragments: "local"`), relative to the
   * Pulumi program's directory or absolute.
   * @defaultValue `"nixos"`
   */
  localFragmentsDir?: string;
  /**
   * NixOS only: `nixos-rebuild` mode after a module changed. After `"switch"` the configuration
   * in force is checked (`nix show-config`: staging's signing key, production's substituter and
   * cache key), and a setting of yours that wins over the module (e.g. the tutorial's
   * `nix.extraOptions` with `secret-key-files`) fails the step, naming its file and line.
   * `"boot"` and `"none"` check nothing; `"none"` leaves the system as it was.
   * @defaultValue `"switch"`
   */
  rebuild?: RebuildMode;
  /**
   * NixOS only: add the module to `configuration.nix` imports when missing (else the step
   * fails with the exact line to add).
   * @defaultValue `false`
   */
  addImport?: boolean;
}
