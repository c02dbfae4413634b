/**
 * nix-ssh-cache: a staging server as a private, signed Nix binary cache for production servers,
 * over SSH, as Pulumi components.
 * @packageDocumentation
 */
export { NixSshCache, NixSshCacheArgs, ProductionHostOutputs } from "./nixSshCache";
export {
  CacheServer,
  CacheServerArgs,
  CacheCoordinates,
  DEFAULT_KEY_DIRECTORY,
  DEFAULT_FRAGMENT_PATH,
  STAGING_FILES,
  signingKeyFiles,
  signingKeyName,
} from "./cacheServer";
export {
  CacheClient,
  CacheClientArgs,
  ClientIdentity,
  ClientIdentityArgs,
  ClientKeyPair,
  CLIENT_FILES,
} from "./cacheClient";
export { ClosureFetch, ClosureFetchArgs } from "./closureFetch";
export {
  CachePin,
  CachePinArgs,
  DEFAULT_KEEP_RELEASES,
  PinResult,
  PinnedRelease,
  STORE_PATH_PATTERN,
  validatePinArgs,
} from "./cachePin";
export { HostStep, HostStepArgs } from "./hostStep";
export {
  HostFacts,
  FileResult,
  SigningKeyResult,
  ClientKeyResult,
  CanaryResult,
  VerifyResult,
  FetchResult,
} from "./steps";
export { LocalFile, LocalFileArgs } from "./trackedFile";
export * from "./types";
export {
  validateArgs,
  validateServerArgs,
  validateClientArgs,
  NixSshCacheInputError,
  PlainNixSshCacheArgs,
  PlainCacheServerArgs,
  PlainCacheClientArgs,
  validateFetchArgs,
  PlainClosureFetchArgs,
} from "./validate";
export * as render from "./render";
