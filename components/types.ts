import * as pulumi from "@pulumi/pulumi";

import type { types as commandTypes } from "@pulumi/command";

/** Serving protocols, in the order documented (see {@link Protocol}). */
export const PROTOCOLS = ["ssh", "ssh-ng"] as const;
/** `nixos-rebuild` modes (see {@link RebuildMode}). */
export const REBUILD_MODES = ["switch", "boot", "none"] as const;
/** Where the fragments go (see {@link FragmentsMode}). */
export const FRAGMENTS_MODES = ["remote", "local", "none"] as const;
/** How configuration commands gain root (see {@link BecomeMode}). */
export const BECOME_MODES = ["sudo", "none"] as const;
/** Whose key a production host logs in to the cache with (see {@link ClientIdentityMode}). */
export const CLIENT_IDENTITY_MODES = ["root", "dedicated"] as const;

/**
 * How production talks to the staging store over SSH.
 *
 * - `"ssh"`: the legacy `nix-store --serve` protocol (substituter URL `ssh://…`).
 * - `"ssh-ng"`: the daemon protocol, `nix-daemon --stdio` (substituter URL `ssh-ng://…`).
 *
 * @defaultValue `"ssh"`
 */
export type Protocol = (typeof PROTOCOLS)[number];

/**
 * What to do on a NixOS host after its generated module changed.
 *
 * - `"switch"`: `nixos-rebuild switch` (activate now).
 * - `"boot"`: `nixos-rebuild boot` (activate on next boot).
 * - `"none"`: only write the module; the operator rebuilds.
 *
 * @defaultValue `"switch"`
 */
export type RebuildMode = (typeof REBUILD_MODES)[number];

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
export type FragmentsMode = (typeof FRAGMENTS_MODES)[number];

/**
 * How configuration commands gain root: `"sudo"` (`sudo -n`, for a login user other than root)
 * or `"none"` (the login user is root).
 *
 * @defaultValue `"sudo"` when the login user is not `"root"`, else `"none"`
 */
export type BecomeMode = (typeof BECOME_MODES)[number];

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
export type ClientIdentityMode = (typeof CLIENT_IDENTITY_MODES)[number];

/**
 * How the operator (Pulumi) reaches a host: the connection object of `@pulumi/command`'s
 * `remote.Command` (`types.input.remote.ConnectionArgs`), so the objects you already pass to
 * `remote.Command` work here unchanged.
 *
 * Defaults (as in `@pulumi/command`): `port` 22, `user` `"root"`, `dialErrorLimit` 10,
 * `perDialTimeout` 15 (seconds); without `privateKey` and `password`, the ssh-agent at
 * `agentSocketPath` (default: the environment's `SSH_AUTH_SOCK`). `hostKey` pins the host's key
 * (`"ssh-ed25519 AAAA…"`, a line of `/etc/ssh/ssh_host_ed25519_key.pub`); without it, the
 * host's key in the operator's known_hosts as `ssh` reads them (`~/.ssh/known_hosts`,
 * `~/.ssh/known_hosts2`, `/etc/ssh/ssh_known_hosts`, `/etc/ssh/ssh_known_hosts2`; hashed
 * entries, `[host]:port`, patterns, `@revoked`) is pinned when the connection is resolved; a
 * host with neither is not reached (staging's host key and the cache's public key, which every
 * production host trusts, are read over this connection). `proxy` is a jump host with its own
 * `host`, `user`, `privateKey`, `hostKey`, …, verified the same way.
 *
 * Pass secrets as Pulumi secrets, e.g. `privateKey: config.requireSecret("sshKey")`.
 */
export type ConnectionArgs = commandTypes.input.remote.ConnectionArgs;

/** A jump host of a {@link ConnectionArgs} (`@pulumi/command`'s `ProxyConnectionArgs`). */
export type ProxyConnectionArgs = commandTypes.input.remote.ProxyConnectionArgs;

/**
 * A host: how to reach it and how to gain root on it. The one shape of a host for every
 * component (`NixSshCache` staging and production, `CacheServer`, `CacheClient`,
 * `ClientIdentity`).
 *
 * @example
 * ```ts
 * const connection = {
 *   host: "prod1.example.com",
 *   user: "deploy", // not root, so commands run through sudo
 *   privateKey: config.requireSecret("sshKey"),
 *   hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@prod1",
 * };
 * // the same object a remote.Command takes:
 * new command.remote.Command("uptime", { connection, create: "uptime" });
 * const prod1: HostArgs = { connection, name: "web" };
 * ```
 */
export interface HostArgs {
  /** How to reach the host (see {@link ConnectionArgs}); `host` is required. */
  connection: pulumi.Input<ConnectionArgs>;
  /**
   * How to gain root for configuration commands.
   * @defaultValue `"sudo"` when `connection.user` is not `"root"`, else `"none"`
   */
  become?: pulumi.Input<BecomeMode>;
  /**
   * Staging only: host name production servers use to reach staging (in the substituter URL and
   * the pinned known-hosts entry), when it differs from `connection.host` (e.g. a private network
   * name).
   * @defaultValue `connection.host`
   * @example `"stage.yourapp.com"`
   */
  cacheHost?: string;
  /**
   * Production only: the host's part of its child resource names, e.g. `name: "web"` in a
   * `NixSshCache` named `cache` gives `cache-web-verify`, `cache-web-nix-conf`, ….
   * @defaultValue derived from `connection.host` (non-alphanumerics replaced by `-`), else
   * `prod<N>`
   * @example `"web"`
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
  /**
   * Use a private key already in `keyDirectory` that nix-ssh-cache did not generate (e.g. the
   * tutorial's `cache-priv-key.pem`, or one generated by an earlier nix-ssh-cache that kept no
   * record). Without it the signing key step fails naming the file: production trusts everything
   * that key signs, so only adopt a key whose origin you know. Once adopted the key is recorded
   * on staging (`<keyDirectory>/.nix-ssh-cache`) and the option may be removed.
   * @defaultValue `false`
   * @example `{ adoptExisting: true }`
   */
  adoptExisting?: boolean;
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
   * `compress=true`: ssh's zlib compression, for the substituter and `nix-ssh-cache-fetch`
   * alike. It pays only where the link is slower than zlib (about 10-40 MB/s on a server core):
   * ×3.0 on a compressible closure at 20 Mbit/s; even at 100 Mbit/s; 1.3-9× slower on a LAN or
   * within a region (docs/performance.md, "Compression").
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
 * How production behaves when staging is unreachable: it should cost seconds and end in a build
 * from source, not in a hang or a failed deploy (see docs/operations.md, "When staging is
 * down").
 */
export interface OutageOptions {
  /**
   * Seconds root's ssh waits for staging's TCP connection and SSH handshake (`ConnectTimeout` in
   * the ssh_config drop-in, or `programs.ssh.extraConfig` on NixOS). Nix 2.8's `connect-timeout`
   * applies to HTTP caches only, and Nix 2.8 pays it once per connection attempt: about 3 for
   * a realise of one path, more for more paths. 1 to 3600.
   * @defaultValue `5`
   */
  connectTimeout?: number;
  /**
   * Nix's `fallback` on production: when a substituter fails (staging down), log it, try the
   * others and build what none delivers, instead of failing the build (`false`: fail, as Nix
   * does by default). On NixOS `nix.settings.fallback`: a different value set elsewhere is a
   * conflict NixOS names; set this option to that value.
   * @defaultValue `true`
   */
  fallback?: boolean;
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
