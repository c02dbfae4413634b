/**
 * Shared helpers of the reliability tests: the example stack (repo root Pulumi.yaml + index.ts)
 * on a private backend, host snapshots, and building/substituting paths.
 */
import * as assert from "node:assert/strict";
import { TestHost } from "../../hosts/harness";
import { PulumiStack, repoRoot } from "../pulumi";

/** The project name of the example stack (config keys are `nix-ssh-cache:<key>`). */
export const PROJECT = "nix-ssh-cache";
export { buildOnStaging, NIX } from "../helpers";

/** Generous per-test timeout: the machine is shared and has 2 cores. */
export const TEST_TIMEOUT_MS = 15 * 60 * 1000;

/** The stack config for `stage` serving `prods` (everything pinned, like a real deployment). */
export function hostConfig(stage: TestHost, prods: TestHost[]): Record<string, unknown> {
  return {
    staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
    production: prods.map((p) => ({
      host: p.address,
      user: p.user,
      hostKey: p.hostKey,
      name: p.name,
    })),
  };
}

/** A new stack of the example project with the runner key as the `sshKey` secret. */
export async function exampleStack(
  name: string,
  privateKey: string,
  config: Record<string, unknown>,
): Promise<PulumiStack> {
  const stack = new PulumiStack(repoRoot, name);
  await stack.init();
  await stack.setConfigObjects(config, PROJECT);
  await stack.setConfig("sshKey", privateKey, { secret: true });
  return stack;
}

/** Removes config keys of the example project (ignores keys that are not set). */
export async function unsetConfig(stack: PulumiStack, keys: string[]): Promise<void> {
  for (const key of keys) await stack.run(["config", "rm", `${PROJECT}:${key}`]);
}

/**
 * A fingerprint of a host's /etc, /root and /nix/var/nix: every path with size, mode and mtime
 * (logs, lock files, temp roots and the daemon socket excluded), and the list itself for diffs.
 */
export async function snapshot(host: TestHost): Promise<string> {
  const r = await host.exec(
    `find /etc /root /nix/var/nix -xdev \\( -path /nix/var/nix/temproots -o -path /nix/var/nix/daemon-socket -o -name '*.log' -o -name '*.lock' \\) -prune -o -printf '%p %s %m %U:%G %T@\\n' | LC_ALL=C sort`,
  );
  return r.stdout;
}

/** The lines that differ between two snapshots (for assertion messages). */
export function snapshotDiff(before: string, after: string): string {
  const a = new Set(before.split("\n"));
  const b = new Set(after.split("\n"));
  const gone = [...a].filter((l) => !b.has(l)).map((l) => `- ${l}`);
  const added = [...b].filter((l) => !a.has(l)).map((l) => `+ ${l}`);
  return [...gone, ...added].slice(0, 40).join("\n");
}

/** Realises `path` on `host` (through its substituters); asserts success. */
export async function substitute(host: TestHost, path: string): Promise<void> {
  const r = await host.exec(`nix-store --realise ${path}`, { check: false });
  assert.equal(r.code, 0, `${host.name} could not substitute ${path}:\n${r.stderr}`);
}

/** Our temporary files (lib.sh `nsc_atomic_write`, file.sh, signing-key.sh) left on a host. */
export async function leftoverTempFiles(host: TestHost): Promise<string> {
  const r = await host.exec(
    `find /etc /root /var/lib -xdev \\( -name '.*.nsc.*' -o -name '.*.new.*' -o -name '.*.old.*' -o -name '.cache-priv-key.pem.*' -o -name '.cache-pub-key.pem.*' \\) -print 2>/dev/null || true`,
  );
  return r.stdout.trim();
}

/** Waits `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
