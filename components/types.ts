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
