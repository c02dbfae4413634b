/**
 * The example stack: one staging host becomes a signed binary cache for the production hosts.
 * Every setting is documented in Pulumi.yaml; `npm run demo` runs it on local test hosts.
 *
 * The config keys are flat (`staging.host`, `production[0].user`, …); `hostModel` maps each
 * host to the components' host model (`{ connection, become, cacheHost, name }`), with the
 * operator's key (`sshKey`, `sshKeyPassword`) as its credentials. Every host (and jump host) is
 * verified by its `hostKey`, else by its key in the operator's known_hosts: a host with neither
 * is not reached.
 */
import * as pulumi from "@pulumi/pulumi";
// The same entry point as in your own project: the package name (here resolved to this
// repository itself through package.json "exports"; build/components, made by `npm run build`).
import {
  FragmentsMode,
  HostArgs,
  NixSshCache,
  Protocol,
  RebuildMode,
  SigningKeyArgs,
} from "nix-ssh-cache";

/** A jump host in the config: the same key as the hosts unless it has its own user. */
interface ProxyConfig {
  host: string;
  port?: number;
  user?: string;
  /** Its SSH host key (`ssh-ed25519 AAAA…`); default: its key in the operator's known_hosts. */
  hostKey?: string;
  agentSocketPath?: string;
}

/** One host in the config (`staging`, `production[i]`). */
interface HostConfig extends ProxyConfig {
  name?: string;
  cacheHost?: string;
  become?: "sudo" | "none";
  proxy?: ProxyConfig;
}

const cfg = new pulumi.Config();
const credentials = {
  privateKey: cfg.getSecret("sshKey"),
  privateKeyPassword: cfg.getSecret("sshKeyPassword"),
};

/** Maps a config host to the host model. */
function hostModel(h: HostConfig): HostArgs {
  const { name, cacheHost, become, proxy, ...connection } = h;
  return {
    connection: {
      ...connection,
      ...credentials,
      proxy: proxy && { ...credentials, ...proxy },
    },
    become,
    cacheHost,
    name,
  };
}

const cache = new NixSshCache("cache", {
  staging: hostModel(cfg.requireObject<HostConfig>("staging")),
  production: cfg.requireObject<HostConfig[]>("production").map(hostModel),
  keyName: cfg.get("keyName"),
  keyDirectory: cfg.get("keyDirectory"),
  removeSigningKeyOnDestroy: cfg.getBoolean("removeSigningKeyOnDestroy"),
  fragments: cfg.get("fragments") as FragmentsMode | undefined,
  fragmentPath: cfg.get("fragmentPath"),
  rebuild: cfg.get("rebuild") as RebuildMode | undefined,
  protocol: cfg.get("protocol") as Protocol | undefined,
  signingKey: cfg.getObject<SigningKeyArgs>("signingKey"),
  signExistingPaths: cfg.getBoolean("signExistingPaths"),
  fetcher: cfg.getBoolean("fetcher"),
  fetch: cfg.getObject<string[]>("fetch"),
});

export const cachePublicKey = cache.cachePublicKey;
export const stagingHostKey = cache.stagingHostKey;
export const substituterUrl = cache.substituterUrl;
export const productionRootKeys = cache.productionRootKeys;
export const stagingModule = cache.stagingModule;
export const productionModule = cache.productionModule;
export const verified = cache.verified;
export const hosts = cache.hosts;
export const coordinates = cache.coordinates;
/** Paths already on staging that the signing key newly signed (`signExistingPaths`). */
export const signedPaths = cache.server.signedPaths;
/** Per production host, what fetching `fetch` reported (paths in the closure, fetched, bytes). */
export const fetched = pulumi
  .all([cache.hosts, pulumi.all(cache.fetches.map((f) => f.result))])
  .apply(([hs, results]) => results.map((r, i) => ({ host: hs[i].name, ...r })));
