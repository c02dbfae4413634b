/**
 * Release pins: staging keeps the store paths of the last N releases as GC roots, so its garbage
 * collector cannot delete a release before every production host has fetched it.
 */
import * as pulumi from "@pulumi/pulumi";
import { resolveHost, validateNow } from "./host";
import { pinStep, PinResult } from "./steps";
import { HostArgs } from "./types";
import { LATER, NixSshCacheInputError, PlainHost, validateHost } from "./validate";

export type { PinResult, PinnedRelease } from "./steps";

/** Releases a pin set keeps when `keep` is not given. */
export const DEFAULT_KEEP_RELEASES = 3;

/**
 * A store path as Nix 2.8 accepts one in `/nix/store`: 32 nix-base32 characters (no `e`, `o`,
 * `t`, `u`), `-`, and a name of `[A-Za-z0-9+._?=-]`, not starting with `.`, at most 211
 * characters. Every path is checked against it here and again on the host (`pin.sh`).
 */
export const STORE_PATH_PATTERN =
  /^\/nix\/store\/[0123456789abcdfghijklmnpqrsvwxyz]{32}-(?!\.)[A-Za-z0-9+._?=-]{1,211}$/;

/** Arguments of {@link CachePin}. */
export interface CachePinArgs {
  /** The staging host (the same `HostArgs` as its `CacheServer`). */
  host: HostArgs;
  /**
   * The release to pin: store paths in staging's store (their closures stay too: a GC root keeps
   * everything a path refers to). A change of paths is a new release.
   * @example `[release.systemPath]`
   */
  paths: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Releases kept: a new release is pinned, and the oldest beyond this many are unpinned (the
   * garbage collector may then delete them). 1 to 1000.
   * @defaultValue `3`
   */
  keep?: number;
  /**
   * The pin set's name, the directory of its roots under
   * `/nix/var/nix/gcroots/nix-ssh-cache/pins/` (`[A-Za-z0-9._-]+`, not starting with `.`).
   * @defaultValue the resource's name
   */
  set?: string;
}

/** `CachePin`'s arguments, resolved to plain values. */
export interface PlainCachePinArgs {
  host: PlainHost;
  paths: unknown;
  keep?: unknown;
  set?: unknown;
}

/** Validates `CachePin`'s arguments: staging, each path, `keep` and `set` (all problems at once). */
export function validatePinArgs(args: PlainCachePinArgs): void {
  const problems: string[] = [];
  try {
    validateHost(args?.host, "staging");
  } catch (e) {
    if (!(e instanceof NixSshCacheInputError)) throw e;
    problems.push(...e.problems);
  }
  const paths = args?.paths;
  if (paths !== LATER && paths !== undefined) {
    if (!Array.isArray(paths) || paths.length === 0) {
      problems.push(
        `pins (${JSON.stringify(paths)}): needs at least one store path, e.g. ["/nix/store/…-nixos-system-web"]`,
      );
    } else {
      paths.forEach((p: unknown, i) => {
        if (p !== LATER && (typeof p !== "string" || !STORE_PATH_PATTERN.test(p))) {
          problems.push(
            `pins[${i}] (${JSON.stringify(p)}): must be a store path /nix/store/<32 base-32 characters>-<name>`,
          );
        }
      });
    }
  } else if (paths === undefined) {
    problems.push("pins: needs the release's store paths");
  }
  const keep = args?.keep;
  if (
    keep !== undefined &&
    keep !== LATER &&
    !(typeof keep === "number" && Number.isInteger(keep) && keep >= 1 && keep <= 1000)
  ) {
    problems.push(`keepReleases (${JSON.stringify(keep)}): must be a whole number from 1 to 1000`);
  }
  const set = args?.set;
  if (
    set !== undefined &&
    (typeof set !== "string" || !/^(?!\.)[A-Za-z0-9._-]{1,100}$/.test(set))
  ) {
    problems.push(
      `pin set (${JSON.stringify(set)}): letters, digits, '.', '_' and '-' only, not starting with '.'`,
    );
  }
  if (problems.length > 0) throw new NixSshCacheInputError(problems);
}

/**
 * Keeps a release's store paths alive on staging as GC roots, the last `keep` releases of a set
 * (`/nix/var/nix/gcroots/nix-ssh-cache/pins/<set>/`, a ledger `releases` and one root per
 * path). Each change of `paths` pins a new release and unpins the oldest beyond `keep`; pinning
 * a release again (a rollback) makes it the newest. A refresh that finds a root removed by hand
 * marks the pin drifted, and the next `up` puts it back. Destroy removes the set's roots.
 *
 * @example
 * ```ts
 * const pin = new CachePin("web-releases", {
 *   host: staging,
 *   paths: [release.systemPath],
 *   keep: 5,
 * }, { dependsOn: [cache] });
 * export const pinned = pin.result.releases;
 * ```
 */
export class CachePin extends pulumi.ComponentResource {
  /** What staging reports: the releases kept (oldest first), roots, those unpinned. */
  public readonly result: pulumi.Output<PinResult>;

  constructor(name: string, args: CachePinArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:CachePin", name, {}, opts);
    const checked = {
      ...args,
      set: args.set ?? name,
      keep: args.keep ?? DEFAULT_KEEP_RELEASES,
    } as unknown as PlainCachePinArgs;
    const valid = validateNow(this, checked, validatePinArgs);
    const host = resolveHost(args.host, valid);
    const step = pinStep(
      `${name}-pin`,
      { connection: host.connection, opts: { parent: this, dependsOn: opts?.dependsOn } },
      pulumi.output(args.paths).apply((p) => ({
        set: args.set ?? name,
        paths: [...new Set(p as string[])].sort(),
        keep: args.keep ?? DEFAULT_KEEP_RELEASES,
      })),
    );
    this.result = step.result;
    this.registerOutputs({ result: this.result });
  }
}
