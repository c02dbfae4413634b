/**
 * Parsing of OpenSSH public key lines and Nix binary-cache public keys.
 * @packageDocumentation
 */

/** SSH public key algorithms accepted for client keys and host keys. */
export const SSH_KEY_TYPES: readonly string[] = [
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
];

/** A parsed OpenSSH public key line `<type> <base64> [comment]`. */
export interface PublicKey {
  /** Key algorithm, e.g. `"ssh-ed25519"`. */
  type: string;
  /** The base64 key blob. */
  base64: string;
  /** Free-text comment after the blob, e.g. `"root@prod1"`; absent when there is none. */
  comment?: string;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Parses an OpenSSH public key line (as in `id_ed25519.pub` or `ssh_host_ed25519_key.pub`).
 * Checks the algorithm is one of {@link SSH_KEY_TYPES}, the blob is base64 and the algorithm
 * name embedded in the blob matches the declared one.
 *
 * @throws Error describing what is wrong, when the line is not such a key
 * @example
 * ```ts
 * parsePublicKeyLine("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@prod1");
 * // => { type: "ssh-ed25519", base64: "AAAAC3NzaC1lZDI1NTE5AAAAI...", comment: "root@prod1" }
 * ```
 */
export function parsePublicKeyLine(line: string): PublicKey {
  if (/[\r\n\0]/.test(line.trim())) {
    throw new Error("an SSH public key must be a single line");
  }
  const match = /^(\S+)\s+(\S+)(?:\s+(.*?))?\s*$/.exec(line.trim());
  if (!match) {
    throw new Error(
      'expected "<type> <base64> [comment]", e.g. "ssh-ed25519 AAAAC3Nza... root@host"',
    );
  }
  const [, type, base64, comment] = match;
  if (!SSH_KEY_TYPES.includes(type)) {
    throw new Error(
      `unsupported key type ${JSON.stringify(type)}; use one of ${SSH_KEY_TYPES.join(", ")}`,
    );
  }
  if (!BASE64.test(base64)) {
    throw new Error("the key data is not valid base64");
  }
  const blob = Buffer.from(base64, "base64");
  const nameLength = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  const embedded =
    nameLength >= 0 && 4 + nameLength <= blob.length
      ? blob.subarray(4, 4 + nameLength).toString("latin1")
      : undefined;
  if (embedded !== type) {
    throw new Error(
      `the key data does not hold a ${type} key` +
        (embedded !== undefined ? ` (it holds ${JSON.stringify(embedded)})` : ""),
    );
  }
  return comment ? { type, base64, comment } : { type, base64 };
}

/** A parsed Nix binary-cache public key `<name>:<base64 of 32 bytes>`. */
export interface CachePublicKey {
  /** Key name, e.g. `"stage.yourapp.com"`. */
  name: string;
  /** Base64 of the 32-byte ed25519 public key. */
  base64: string;
}

/**
 * Parses a Nix binary-cache public key as printed by `nix-store --generate-binary-cache-key`
 * (`cache-pub-key.pem`).
 *
 * @throws Error when it is not `<name>:<base64 of 32 bytes>`
 * @example
 * ```ts
 * parseCachePublicKey("stage.yourapp.com:T0xDDpZbMep2GjjzGDpRk32FkZx/+LZ4eKqPyGI2il8=");
 * ```
 */
export function parseCachePublicKey(key: string): CachePublicKey {
  const match = /^([^\s:]+):(\S+)$/.exec(key.trim());
  if (!match || !BASE64.test(match[2]) || Buffer.from(match[2], "base64").length !== 32) {
    throw new Error(
      'expected a Nix cache public key "<name>:<base64 of 32 bytes>", e.g. "stage.example.com:T0xD...il8="',
    );
  }
  return { name: match[1], base64: match[2] };
}
