/**
 * The host steps of both roles, one small factory per step kind, each returning a `HostStep`
 * typed by what its script reports; and the NixOS half of a role (`nixosModuleSteps`) with the
 * fragment defaults.
 */
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { digest, hostScript } from "./host";
import { HostStep, packedText } from "./hostStep";
import { Connection } from "./ssh";
import { LocalFile } from "./trackedFile";
import { FragmentOptions, FragmentsMode, RebuildMode } from "./types";

/** Where a step runs and what it waits for. */
export interface StepContext {
  /** The host's resolved connection. */
  connection: pulumi.Input<Connection>;
  /** Parent component and dependencies of the step. */
  opts: pulumi.CustomResourceOptions;
  /** The host's OS once probed (`"nixos"` or `"linux"`), for steps of one OS only. */
  os?: pulumi.Output<string>;
}

/**
 * The inputs of a step that applies to hosts of one OS only: on a host of the other OS (once
 * probed) the step has nothing to do, so its inputs stay constant and a preview never lists it
 * as changed there (its script reports `skipped`).
 */
function forOs<T>(
  at: StepContext,
  onlyOn: "nixos" | "linux" | undefined,
  value: pulumi.Input<T>,
  elsewhere: T,
): pulumi.Output<T> {
  const os = at.os;
  if (!onlyOn || !os) return pulumi.output(value) as pulumi.Output<T>;
  return os.apply((o) =>
    o === onlyOn ? pulumi.output(value) : pulumi.output(elsewhere),
  ) as pulumi.Output<T>;
}

/** The inputs of a one-OS step on a host of the other OS. */
const NOT_HERE: Record<string, string> = { NSC_NOT_FOR_THIS_OS: "1" };

/** What `probe.sh` reports about a host. */
export interface HostFacts {
  os: "nixos" | "linux";
  nixVersion: string;
  daemonRunning: boolean;
  init: string;
  /** The host's SSH host key that production pins (ed25519, else ecdsa, else rsa). */
  hostKey: string;
  /** All of the host's SSH host keys (`"<type> <base64>"`). */
  hostKeys?: string[];
  /** Directory the Nix tools were found in, e.g. `/nix/var/nix/profiles/default/bin`. */
  nixBin?: string;
}

/** What `file.sh` reports after apply: the file's digest (`skipped` on hosts of another kind). */
export interface FileResult {
  exists?: boolean;
  sha256?: string;
  changed?: boolean;
  skipped?: boolean;
}

/** What `signing-key.sh` reports. */
export interface SigningKeyResult {
  /** `NAME:BASE64`, the cache public key. */
  publicKey: string;
  keyName?: string;
  keyFile?: string;
}

/** What `client-key.sh` reports: root's SSH public key line. */
export interface ClientKeyResult {
  publicKey: string;
  file?: string;
  created?: boolean;
}

/** What `canary.sh` reports: the signed canary path. */
export interface CanaryResult {
  path: string;
  signatures?: string[];
}

/** What `verify.sh` reports. */
export interface VerifyResult {
  verified: boolean;
  path?: string;
  substituter?: string;
  signatures?: string[];
}

/**
 * Observes a host (OS, Nix version, daemon, SSH host keys) without changing it. Its `hostKey`
 * is a trust anchor (production pins it): a refresh that sees another one fails, naming both
 * fingerprints; a new `hostKey` of the connection (the host was reinstalled) re-reads it. The
 * key the connection verified must be one of the host's own (`hostKeys`). A refresh that sees
 * another OS marks it drifted.
 */
export function probeStep(name: string, at: StepContext): HostStep<HostFacts> {
  return new HostStep<HostFacts>(
    name,
    {
      connection: at.connection,
      step: "probe",
      script: hostScript("probe"),
      readable: true,
      driftKeys: ["hostKey", "os"],
      anchorKeys: ["hostKey"],
      hostKeysKey: "hostKeys",
      timeoutSeconds: 60,
    },
    at.opts,
  );
}

/** Arguments of {@link fileStep}. */
export interface FileStepArgs {
  /** Absolute path on the host. */
  path: string;
  /** Exact content (plain text: a preview shows a change as a line diff). */
  content: pulumi.Input<string>;
  /** Octal mode. @defaultValue `"0644"` */
  mode?: string;
  /** `user:group`. @defaultValue `"root:root"` */
  owner?: string;
  /**
   * What to do after a change: reload sshd (after `sshd -t`), include + restart nix-daemon and
   * check the settings are in force, or (`"ssh"`) check root's ssh really uses the pin.
   * @defaultValue `"none"`
   */
  after?: "none" | "sshd" | "nix" | "ssh";
  /** Only act on hosts of this kind (the step reports `skipped` elsewhere). */
  onlyOn?: "nixos" | "linux";
  /** Label for messages, e.g. `sshd drop-in`. */
  label: string;
}

/**
 * A file on a host, tracked: written atomically on create/update, re-read on refresh (an edit or
 * a deletion out of band is drift that the next `up` repairs), removed on delete.
 */
export function fileStep(name: string, at: StepContext, args: FileStepArgs): HostStep<FileResult> {
  // Inputs at their defaults (file.sh's) are left out: a preview shows what is particular.
  const env = pulumi.output(args.content).apply((content) => {
    const e: Record<string, string> = { FILE_PATH: args.path, FILE_CONTENT: packedText(content) };
    if (args.mode && args.mode !== "0644") e.FILE_MODE = args.mode;
    if (args.owner && args.owner !== "root:root") e.FILE_OWNER = args.owner;
    if (args.after && args.after !== "none") e.AFTER = args.after;
    return e;
  });
  return new HostStep<FileResult>(
    name,
    {
      connection: at.connection,
      step: `${args.label} ${args.path}`,
      script: hostScript("file", args.onlyOn),
      env: forOs(at, args.onlyOn, env, NOT_HERE),
      readable: true,
      removable: true,
      driftKeys: ["exists", "sha256"],
      timeoutSeconds: 120,
    },
    at.opts,
  );
}

/** Arguments of {@link signingKeyStep}. */
export interface SigningKeyStepArgs {
  /** The key's name (`NAME` of `NAME:BASE64`). */
  keyName: pulumi.Input<string>;
  /** Directory of the key files. */
  keyDirectory: string;
  /** Key generation (0: the seed's file names). */
  generation: number;
  /** Delete the key on destroy. */
  removeOnDestroy: boolean;
  /** Use a private key found in the directory that nix-ssh-cache did not generate. */
  adoptExisting?: boolean;
}

/**
 * A cache signing key on staging: generated when missing, re-read on refresh. Its public key
 * is a trust anchor (every production host trusts it): a refresh that sees another key fails,
 * naming both (a new key comes through a rotation, `SigningKeyArgs`); a deleted key is drift,
 * made again by the next `up`.
 */
export function signingKeyStep(
  name: string,
  at: StepContext,
  a: SigningKeyStepArgs,
): HostStep<SigningKeyResult> {
  const env = pulumi.output(a.keyName).apply((k): Record<string, string> => {
    const e: Record<string, string> = { KEY_NAME: k, KEY_DIR: a.keyDirectory };
    if (a.generation > 0) e.KEY_GENERATION = `${a.generation}`;
    if (a.adoptExisting) e.ADOPT_KEY = "1";
    return e;
  });
  return new HostStep<SigningKeyResult>(
    name,
    {
      connection: at.connection,
      step: a.generation > 0 ? `signing key ${a.generation}` : "signing key",
      script: hostScript("signing-key"),
      env,
      readable: true,
      removable: true,
      removeEnv: { REMOVE_KEY: a.removeOnDestroy ? "1" : "0" },
      driftKeys: ["publicKey"],
      anchorKeys: ["publicKey"],
      timeoutSeconds: 120,
    },
    at.opts,
  );
}

/** What `authorized-keys.sh` reports: the entry's lines in the serve user's keys file. */
export interface AuthorizedKeysResult {
  entry: string;
  lines: number;
  sha256: string;
}

/**
 * The key lines of one entry (e.g. one production host) in staging's shared authorized_keys
 * file, kept apart from the other entries' lines: one host's key waits for no other host.
 */
export function authorizedKeysStep(
  name: string,
  at: StepContext,
  a: { file: string; entry: string; lines: pulumi.Input<string> },
): HostStep<AuthorizedKeysResult> {
  return new HostStep<AuthorizedKeysResult>(
    name,
    {
      connection: at.connection,
      step: `authorise ${a.entry} in ${a.file}`,
      script: hostScript("authorized-keys"),
      env: pulumi
        .output(a.lines)
        .apply((keys) => ({ KEYS_FILE: a.file, KEYS_ENTRY: a.entry, KEYS: keys })),
      readable: true,
      removable: true,
      driftKeys: ["sha256"],
      timeoutSeconds: 60,
    },
    at.opts,
  );
}

/** Plain Linux: the user `nix-ssh` that serves the store (removed on delete). */
export function serveUserStep(name: string, at: StepContext): HostStep {
  return new HostStep(
    name,
    {
      connection: at.connection,
      step: "serve user",
      script: hostScript("serve-user", "linux"),
      env: forOs(at, "linux", { SERVE_USER: "nix-ssh" }, NOT_HERE),
      removable: true,
      timeoutSeconds: 60,
    },
    at.opts,
  );
}

/** Root's SSH key on a production host (generated there when missing; never leaves the host). */
export function rootKeyStep(name: string, at: StepContext): HostStep<ClientKeyResult> {
  return new HostStep<ClientKeyResult>(
    name,
    {
      connection: at.connection,
      step: "root SSH key",
      script: hostScript("client-key"),
      readable: true,
      driftKeys: ["publicKey"],
      timeoutSeconds: 60,
    },
    at.opts,
  );
}

/** What `sign-store.sh` reports: valid paths, and how many the key newly signed. */
export interface SignStoreResult {
  keyName?: string;
  paths: number;
  signed?: number;
}

/**
 * Adds the current key's signature to every path in staging's store (the paths built before
 * the first key, or before a rotation).
 */
export function signStoreStep(
  name: string,
  at: StepContext,
  a: { generation: number; keyFile: string; publicKey: pulumi.Input<string>; label?: string },
): HostStep<SignStoreResult> {
  return new HostStep<SignStoreResult>(
    name,
    {
      connection: at.connection,
      step: a.label ?? `sign the store with key ${a.generation}`,
      script: hostScript("sign-store"),
      env: pulumi.output(a.publicKey).apply((k) => ({ KEY_FILE: a.keyFile, PUBLIC_KEY: k })),
      timeoutSeconds: 3600,
    },
    at.opts,
  );
}

/** A signed canary path built on staging; built again when `nonce` changes. */
export function canaryStep(
  name: string,
  at: StepContext,
  nonce: pulumi.Input<string>,
): HostStep<CanaryResult> {
  return new HostStep<CanaryResult>(
    name,
    {
      connection: at.connection,
      step: "canary build",
      script: hostScript("canary"),
      env: pulumi.output(nonce).apply((n) => ({ NONCE: n })),
      timeoutSeconds: 300,
    },
    at.opts,
  );
}

/** Arguments of {@link verifyStep}. */
export interface VerifyStepArgs {
  /** Staging's canary path. */
  canaryPath: string;
  /** This host's substituter URL. */
  substituter: string;
  /** Staging's host name. */
  staging: string;
}

/**
 * Realises staging's canary on a production host through the cache; again when `reliesOn` (a
 * digest of the configuration it relies on) changes.
 */
export function verifyStep(
  name: string,
  at: StepContext,
  a: pulumi.Input<VerifyStepArgs>,
  reliesOn: pulumi.Input<string>,
): HostStep<VerifyResult> {
  return new HostStep<VerifyResult>(
    name,
    {
      connection: at.connection,
      step: "verify substitution from staging",
      script: hostScript("verify"),
      env: pulumi.all([a, reliesOn]).apply(([v, digest]) => ({
        CANARY_PATH: v.canaryPath,
        SUBSTITUTER: v.substituter,
        STAGING: v.staging,
        RELIES_ON: digest,
      })),
      timeoutSeconds: 300,
    },
    at.opts,
  );
}

/** What `fetch-closure.sh` reports (`nix-ssh-cache-fetch --json`). */
export interface FetchResult {
  /** True once every path is valid on the host (a refresh that sees one gone sets it false). */
  valid: boolean;
  /** Paths in the closure of the given paths. */
  closure?: number;
  /** Paths the host lacked and fetched in the one session. */
  fetched?: number;
  /** NAR bytes fetched. */
  bytes?: number;
  /** Whole seconds the fetch took. */
  seconds?: number;
  /** True when the one-session fetch failed and Nix's own substitution made the paths valid. */
  fallback?: boolean;
  /** Why the one-session fetch failed, when it did. */
  reason?: string;
}

/** Arguments of {@link fetchStep}. */
export interface FetchStepArgs {
  /** Store paths (a `.drv` stands for its outputs). */
  paths: string[];
  /** Absolute path of `nix-ssh-cache-fetch` on the host. */
  fetcher: string;
  /** Fall back to Nix's own substitution. */
  fallback: boolean;
}

/**
 * Makes store paths valid on a production host from the cache in one SSH session; again when the
 * paths change, or after a refresh saw one of them gone.
 */
export function fetchStep(
  name: string,
  at: StepContext,
  a: pulumi.Input<FetchStepArgs>,
): HostStep<FetchResult> {
  return new HostStep<FetchResult>(
    name,
    {
      connection: at.connection,
      step: "fetch closure from staging",
      script: hostScript("fetch-closure"),
      env: pulumi.output(a).apply((f) => {
        const e: Record<string, string> = { FETCH_PATHS: f.paths.join(" "), FETCHER: f.fetcher };
        if (!f.fallback) e.FALLBACK = "0";
        return e;
      }),
      readable: true,
      driftKeys: ["valid"],
      timeoutSeconds: 3600,
    },
    at.opts,
  );
}

/** The default path of the generated NixOS module on a host. */
export const DEFAULT_FRAGMENT_PATH = "/etc/nixos/nix-ssh-cache.nix";

/** {@link FragmentOptions} with the defaults applied. */
export interface ResolvedFragmentOptions {
  fragments: FragmentsMode;
  fragmentPath: string;
  localFragmentsDir: string;
  rebuild: RebuildMode;
  addImport: boolean;
}

/** Applies the defaults of {@link FragmentOptions}. */
export function fragmentDefaults(o: FragmentOptions): ResolvedFragmentOptions {
  return {
    fragments: o.fragments ?? "remote",
    fragmentPath: o.fragmentPath ?? DEFAULT_FRAGMENT_PATH,
    localFragmentsDir: o.localFragmentsDir ?? "nixos",
    rebuild: o.rebuild ?? "switch",
    addImport: o.addImport ?? false,
  };
}

/**
 * The NixOS half of a role: the module written on the host (`"remote"`, then `nixos-rebuild`)
 * or into the operator's repository (`"local"`, deployed by the user). On plain Linux the host
 * steps report `skipped`.
 */
export function nixosModuleSteps(
  name: string,
  at: StepContext,
  module: pulumi.Input<string>,
  options: ResolvedFragmentOptions,
  checkEnv: pulumi.Input<Record<string, string>> = {},
): pulumi.Resource[] {
  if (options.fragments === "local") {
    const localPath = path.join(options.localFragmentsDir, `${name}.nix`);
    return [new LocalFile(`${name}-module`, { path: localPath, content: module }, at.opts)];
  }
  if (options.fragments === "none") return [];
  const moduleFile = fileStep(`${name}-module`, at, {
    path: options.fragmentPath,
    content: module,
    label: "NixOS module",
    onlyOn: "nixos",
  });
  const rebuild = new HostStep(
    `${name}-nixos-rebuild`,
    {
      connection: at.connection,
      step: "nixos-rebuild",
      script: hostScript("nixos-apply", "nixos"),
      // checkEnv: what must be in force after a switch (CHECK_SIGNING_KEYS on staging,
      // CHECK_SUBSTITUTER / CHECK_PUBLIC_KEYS on production; see nixos-apply.sh).
      env: forOs(
        at,
        "nixos",
        pulumi.output(checkEnv).apply((check) => ({
          MODULE_PATH: options.fragmentPath,
          REBUILD: options.rebuild,
          ADD_IMPORT: options.addImport ? "1" : "0",
          ...check,
        })),
        NOT_HERE,
      ),
      triggers: forOs(
        at,
        "nixos",
        pulumi.output(module).apply((m) => [digest(m)]),
        [],
      ),
      timeoutSeconds: 1800,
    },
    { parent: at.opts.parent, dependsOn: [moduleFile] },
  );
  return [moduleFile, rebuild];
}

/** One pinned release in staging's ledger (see `pin.sh`). */
export interface PinnedRelease {
  /** First 16 hex digits of the SHA-256 of the release's sorted paths. */
  id: string;
  /** Order of pinning (the newest is the highest). */
  seq: number;
  /** The release's store paths, each kept by a GC root. */
  paths: string[];
}

/** What `pin.sh` reports: the releases a pin set keeps on staging, newest last. */
export interface PinResult {
  /** The set's name (its directory under `/nix/var/nix/gcroots/nix-ssh-cache/pins/`). */
  set: string;
  /** The releases kept, oldest first. */
  releases: PinnedRelease[];
  /** The id of the newest release (`null` once its ledger is gone). */
  current: string | null;
  /** GC roots (symlinks) in the set's directory. */
  roots: number;
  /** True when every path of every kept release has its root (false after one was removed). */
  intact: boolean;
  /** Releases this apply unpinned (older than the last `keep`). */
  unpinned: string[];
  /** Paths of older releases no longer in staging's store (collected while unrooted). */
  lost: string[];
}

/** Arguments of {@link pinStep}. */
export interface PinStepArgs {
  /** The set's name (`[A-Za-z0-9._-]+`). */
  set: string;
  /** The release's store paths (validated). */
  paths: string[];
  /** Releases kept (1..1000). */
  keep: number;
}

/**
 * Pins a release's store paths on staging as GC roots, keeping the last `keep` releases of the
 * set; pins again when the paths change, and after a refresh saw a root gone. Removed on delete.
 */
export function pinStep(
  name: string,
  at: StepContext,
  a: pulumi.Input<PinStepArgs>,
): HostStep<PinResult> {
  return new HostStep<PinResult>(
    name,
    {
      connection: at.connection,
      step: "pin release on staging",
      script: hostScript("pin"),
      env: pulumi.output(a).apply((p) => ({
        PIN_SET: p.set,
        PIN_PATHS: p.paths.join(" "),
        KEEP: `${p.keep}`,
      })),
      readable: true,
      removable: true,
      driftKeys: ["intact", "current"],
      timeoutSeconds: 600,
    },
    at.opts,
  );
}
