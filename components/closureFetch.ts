/**
 * A production host fetches the closure of store paths from the cache in one SSH session, as a
 * resource: e.g. the release's system closure before a deploy step switches to it.
 */
import * as pulumi from "@pulumi/pulumi";
import { CLIENT_FILES } from "./cacheClient";
import { resolveHost, validateNow } from "./host";
import { fetchStep, FetchResult } from "./steps";
import { HostArgs } from "./types";
import { PlainClosureFetchArgs, validateFetchArgs } from "./validate";

export type { FetchResult } from "./steps";

/** Arguments of {@link ClosureFetch}. */
export interface ClosureFetchArgs {
  /** The production host (the same `HostArgs` as its `CacheClient`). */
  host: HostArgs;
  /**
   * Store paths whose closure the host fetches from the cache; a `.drv` stands for its outputs
   * (it must be in the host's store, e.g. from `nix-instantiate` there).
   * @example `["/nix/store/…-nixos-system-web-24.05"]`
   */
  paths: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * When the one-session fetch fails, let Nix substitute the paths through the configured
   * substituters (`ssh://`, path by path) instead of failing.
   * @defaultValue `true`
   */
  fallback?: boolean;
}

/**
 * Runs `nix-ssh-cache-fetch` (installed by `CacheClient`, `fetcher: true`) on a production host:
 * the missing closure of `paths` arrives in one SSH session, every path checked by Nix against
 * the host's trusted keys. Runs again when `paths` change, and when a refresh finds one of them
 * gone from the host. Make it depend on the host's `CacheClient` (or the `NixSshCache`).
 *
 * @example
 * ```ts
 * const fetch = new ClosureFetch("web-release", {
 *   host: web,
 *   paths: [release.systemPath],
 * }, { dependsOn: [cache] });
 * export const fetched = fetch.result.fetched;
 * ```
 */
export class ClosureFetch extends pulumi.ComponentResource {
  /** What the fetch reported: paths in the closure, paths and bytes fetched, fallback. */
  public readonly result: pulumi.Output<FetchResult>;

  constructor(name: string, args: ClosureFetchArgs, opts?: pulumi.ComponentResourceOptions) {
    super("nix-ssh-cache:index:ClosureFetch", name, {}, opts);
    const checked = args as unknown as PlainClosureFetchArgs;
    const valid = validateNow(this, checked, validateFetchArgs);
    const host = resolveHost(args.host, valid);
    const paths = pulumi.output(args.paths).apply((p) => p as string[]);
    // A component's dependsOn does not hold its children back: the step waits for it itself.
    const step = fetchStep(
      `${name}-fetch`,
      { connection: host.connection, opts: { parent: this, dependsOn: opts?.dependsOn } },
      paths.apply((p) => ({
        paths: p,
        fetcher: CLIENT_FILES.fetcher,
        fallback: args.fallback ?? true,
      })),
    );
    this.result = step.result;
    this.registerOutputs({ result: this.result });
  }
}
