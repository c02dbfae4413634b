/**
 * Shared fixtures for the unit tests: the seed tutorial's example values, test keys, and
 * helpers to run real tools (nix-instantiate, nix, sshd, ssh) on temporary files.
 * @packageDocumentation
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SERVE_USER_ACCEPT_ENV } from "../../components/render/sshd";

/** The seed's production root key (`/root/.ssh/id_rsa.pub` on yourapp.com). */
export const SEED_ROOT_RSA_KEY =
  "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCWT75hPseOBJUWDRZIzrGkNcubS1D+g1hTf72nKr9sUxVA8nLfGE6WAIjOW+bLHdWQXjJH5Bhodv5t6bpY1sBi3NuQq4xcH3yGd52SlzE5dgGl4psRdA+VQXpHfsnrjZ+6LPVBVdaZjdHgq7IR1b7rOBJCtdBJXSjNyZvagghBPKe4a+4Unpg+Y09+/p0BkaNHZmpVc43OHuC4drMpnqWiqNtMoq6gqAL5Ifu+FQHG3JGHLi/QUS2ee667IiIXYX9w4BMB1+W1Rle+PvpJwWuIj12DufAUWceOzk1iipAPgKvFYs6ZC+0Ldyczu+upQBTXHmKtRaS9bdQjSg72v3eAOymMNAeKZlLo3+VhxfAh7BpQ7ER6xy7hStbYjerIWdxx/WLgoGqUOkUBMynxOP3pWZTyb4BBdSObaFJ9O2F1XlmxRg3s+hb/pqqprxuJ8iT5T8uuLi6TyeB7auXF0g/T40CPCVwCPthY9Z9pSZ9zIpv8beaWiakvs7RbYz8d6OE= ship@yourapp";
/** The seed's cache public key (`cache-pub-key.pem` on stage.yourapp.com). */
export const SEED_CACHE_PUBLIC_KEY =
  "stage.yourapp.com:T0xDDpZbMep2GjjzGDpRk32FkZx/+LZ4eKqPyGI2il8=";
/** The seed's signing key path on staging. */
export const SEED_SECRET_KEY_FILE = "/etc/shipnix/binary/cache-priv-key.pem";
/** The seed's substituter URL. */
export const SEED_SUBSTITUTER = "ssh://nix-ssh@stage.yourapp.com";
/** The seed's staging host name. */
export const SEED_STAGING_HOST = "stage.yourapp.com";

/** A real ed25519 public key (generated for these tests). */
export const ED25519_KEY =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+PR2oBVI30kNLOhDR2VQRFrusbGOCLvy8PcHoI9byO root@prod1";
/** A real ecdsa-sha2-nistp256 public key (generated for these tests). */
export const ECDSA_KEY =
  "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD6Yb2fuzDjge82X5UsA70xsfYoDekJzWg4TyZwRyxp4Ni3bM8hnXwjgVYVv+roSQ1eE3Iu7nbVy+csjxC0H/uM= root@prod2";
/** A real ed25519 host key (generated for these tests), as in `ssh_host_ed25519_key.pub`. */
export const HOST_KEY =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINDqM5ot5Ain1jtpKsaw4KH33hkB/I2w7IOiuEy233nJ root@vm";
/** A readable OpenSSH private key generated for these tests only (authorises nothing anywhere). */
export const FAKE_PRIVATE_KEY =
  "-----BEGIN OPENSSH PRIVATE KEY-----\n" +
  "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n" +
  "QyNTUxOQAAACBxe03lzBB2OsWBmiXcWddwLzxcfkWo2R/Mx3b2bCJC2wAAAJCThpAGk4aQ\n" +
  "BgAAAAtzc2gtZWQyNTUxOQAAACBxe03lzBB2OsWBmiXcWddwLzxcfkWo2R/Mx3b2bCJC2w\n" +
  "AAAEBkJOc3ADnBuq1KG5I872JuMqrCxJECR1ORVeWngxx4znF7TeXMEHY6xYGaJdxZ13Av\n" +
  "PFx+RajZH8zHdvZsIkLbAAAAB2ZpeHR1cmUBAgMEBQY=\n" +
  "-----END OPENSSH PRIVATE KEY-----\n";

/** Whether `command` can be run (found on PATH or as an absolute path). */
export function hasCommand(command: string): boolean {
  const r = spawnSync("sh", ["-c", 'command -v "$1"', "sh", command], { encoding: "utf8" });
  return r.status === 0;
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "nix-ssh-cache-unit-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Evaluates a Nix expression with `nix-instantiate --eval --strict --json --readonly-mode`
 * (nothing is written to the store) and returns the parsed JSON. `args` are passed with
 * `--argstr` to the expression, which must then be a function of them.
 */
export function nixEval(expr: string, args: Record<string, string> = {}): unknown {
  const argv = ["--readonly-mode", "--eval", "--strict", "--json", "-E", expr];
  for (const [k, v] of Object.entries(args)) argv.push("--argstr", k, v);
  return JSON.parse(execFileSync("nix-instantiate", argv, { encoding: "utf8" }));
}

/** Why Nix tests are skipped, or `false` when `nix-instantiate` is available. */
export const NO_NIX = hasCommand("nix-instantiate") ? false : "nix-instantiate is not installed";

/** A readable RSA PEM private key generated for these tests only (authorises nothing anywhere). */
export const RSA_PEM_PRIVATE_KEY =
  "-----BEGIN RSA PRIVATE KEY-----\n" +
  "MIICWwIBAAKBgQDG/YQdxSUacpwlTs8FiMiEbsIZeVdr+Z3zu6srT5wNqKYrNTVE\n" +
  "T9eW5EGZpHG8S4kCjDjGXMkKtjbYxi7g/Au3QVASgbIE39b4U9uEHQmKLSp8j1g4\n" +
  "U4KMjIZnNTgi6V6YeRvjGQi1gaf0lHqx0jv3vn/ID16ybifi1inZ0PJf7wIDAQAB\n" +
  "AoGAN3bUS2P2+o81fKShyX4dveQNUAJlXqA96YDGrhTLf3chkeuLxFWo1tMagdO3\n" +
  "K++16bLh5FBabRTq5rMev/Eg5l28vngCadZrr57M1HydP5ate/1yZdma8BeMdF7V\n" +
  "OHCRM7hMFIZn2xss5H8yXj+CbBRRaJlvLy6wmWhVbfxOV9kCQQD8lUfH8fvPBXUk\n" +
  "vpv3E856CytHSPuxkW2x4L6mdQqOxTCCQBzdwYInX+1B3T+25qUQ0s4JBORxjW7n\n" +
  "ZS3RhfJFAkEAya6jeZDr3LSrm81F99QRYmmnfBNIZ5M6iiQcaQNgBrbjZUfB4VtV\n" +
  "ACtNxYVAMHxNd/5xdQ2ZmlZ7YA/+loWGowJACC2lN1okdx2MH3Z0glmH0/fMnPBG\n" +
  "BgfZb2sBgU5E2z6TRYRh6uQ7HJ9EhV9ukrOBILxSo4QfCXY04xUpmKEnqQJAO5DU\n" +
  "v2bKAplpxc5Ox+9eYw6JZN/dFpopQ/t+WJWimtkROCyFWqW66R3hDmFYn/lWeAYy\n" +
  "RDwMDcVVEv4mVxaAuQJACIk8U3AZgn0q2eV7eaMYMQW8i2zVtR3zg+28c9E7Hz3i\n" +
  "o4Q6At2d23VXMuj3lW8pJuWVWC5Qvm7TjrdU9wbSSw==\n" +
  "-----END RSA PRIVATE KEY-----\n";

/** The test hosts' NixOS module-system stand-in (tests/hosts/flavours/nixos-eval.nix). */
export function nixosEvalFile(): string {
  const candidates = [
    join(__dirname, "../hosts/flavours/nixos-eval.nix"), // ts-node / source tree
    join(__dirname, "../../../tests/hosts/flavours/nixos-eval.nix"), // build/tests/unit
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`nixos-eval.nix not found; looked in: ${candidates.join(", ")}`);
  return found;
}

/** What {@link evalNixosConfiguration} returns (see nixos-eval.nix). */
export interface NixosEvaluation {
  /** The merged option values. */
  config: Record<string, unknown>;
  /** What NixOS would write to /etc, by path. */
  files: Record<string, string>;
}

/**
 * Evaluates a configuration.nix with its imports as NixOS would merge them (list options
 * concatenated, `lines` options joined, imports first), with stub module arguments, through
 * `nix-instantiate --eval --strict --json`.
 */
export function evalNixosConfiguration(configurationFile: string): NixosEvaluation {
  const argv = ["--readonly-mode", "--eval", "--strict", "--json", nixosEvalFile()];
  argv.push("--arg", "configuration", configurationFile);
  return JSON.parse(execFileSync("nix-instantiate", argv, { encoding: "utf8" })) as NixosEvaluation;
}

/**
 * What `sshd -T -C user=nix-ssh,…` must show for the serve user on staging, on plain Linux and
 * NixOS alike: confined (no forwarding, TTY, user rc or client environment; public keys only).
 */
export const SERVE_USER_EFFECTIVE = [
  "disableforwarding yes",
  "allowtcpforwarding no",
  "allowagentforwarding no",
  "allowstreamlocalforwarding no",
  "x11forwarding no",
  "permittunnel no",
  "permittty no",
  "permituserrc no",
  "authenticationmethods publickey",
  "passwordauthentication no",
  "kbdinteractiveauthentication no",
  "permituserenvironment no",
  `acceptenv ${SERVE_USER_ACCEPT_ENV}`,
];
