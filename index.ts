/**
 * The example stack: one staging host becomes a signed binary cache for the production hosts.
 * Every setting is documented in Pulumi.yaml; `npm run demo` runs it on local test hosts.
 */
import * as pulumi from "@pulumi/pulumi";
// The same entry point as in your own project: the package name (here resolved to this
// repository itself through package.json "exports"; build/components, made by `npm run build`).
import { FragmentsMode, NixSshCache, Protocol, RebuildMode, SigningKeyArgs } from "nix-ssh-cache";

interface HostConfig {
  host: string;
  port?: number;
  user?: string;
  hostKey?: string;
  name?: string;
  cacheHost?: string;
  become?: "sudo" | "none";
  agentSocketPath?: string;
  /** A jump host; it uses sshKey (and sshKeyPassword) too. */
  proxy?: { host: string; port?: number; user?: string; hostKey?: string };
}

const cfg = new pulumi.Config();
const sshKey = cfg.requireSecret("sshKey");
const sshKeyPassword = cfg.getSecret("sshKeyPassword");
const credentials = { privateKey: sshKey, privateKeyPassword: sshKeyPassword };
const withKey = (h: HostConfig) => ({
  ...h,
  ...credentials,
  proxy: h.proxy && { ...h.proxy, ...credentials },
});

const cache = new NixSshCache("cache", {
  staging: withKey(cfg.requireObject<HostConfig>("staging")),
  production: cfg.requireObject<HostConfig[]>("production").map(withKey),
  keyName: cfg.get("keyName") || undefined,
  keyDirectory: cfg.get("keyDirectory"),
  removeSigningKeyOnDestroy: cfg.getBoolean("removeSigningKeyOnDestroy"),
  fragments: cfg.get("fragments") as FragmentsMode | undefined,
  fragmentPath: cfg.get("fragmentPath"),
  rebuild: cfg.get("rebuild") as RebuildMode | undefined,
  protocol: cfg.get("protocol") as Protocol | undefined,
  signingKey: cfg.getObject<SigningKeyArgs>("signingKey"),
  signExistingPaths: cfg.getBoolean("signExistingPaths"),
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
