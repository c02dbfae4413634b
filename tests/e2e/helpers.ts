/**
 * Shared steps of the e2e tests: build a unique path on staging, substitute it on production,
 * read the changed resources out of `pulumi preview --json`, reach a test host as the operator.
 */
import * as assert from "node:assert/strict";
import { randomBytes } from "crypto";
import * as net from "net";
import { hostScript, remoteScriptText } from "../../components/host";
import { assembleScript, Connection } from "../../components/ssh";
import { ExecResult, TestHost, TestHosts } from "../hosts/harness";
import { PulumiStack } from "./pulumi";

/** `nix` with the nix-command feature (Nix 2.8). */
export const NIX = "nix --extra-experimental-features nix-command";

/** The operator's connection to a test host (its runner key, `hostKey` pinned by default). */
export function operatorConnection(h: TestHost, hostKey = h.hostKey): Connection {
  return {
    host: h.address,
    port: h.port,
    user: h.user,
    privateKey: h.privateKey,
    hostKey,
    become: "none",
  };
}

/** A store path built on staging and the derivation it came from. */
export interface BuiltPath {
  out: string;
  drv: string;
}

/**
 * Builds a small unique path on staging (as root, so it is signed at build time with the keys
 * in staging's nix.conf). `options` are extra `nix-store` flags, e.g. `--option secret-key-files
 * /path` to sign with one key only.
 */
export async function buildOnStaging(
  stage: TestHost,
  label: string,
  options = "",
): Promise<BuiltPath> {
  const nonce = `${label}-${randomBytes(4).toString("hex")}`;
  const expr = `builtins.derivation { name = "e2e-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }`;
  const drv = (await stage.exec(`nix-instantiate -E '${expr}'`)).stdout.trim();
  const realised = await stage.exec(`nix-store ${options} --realise ${drv}`);
  const out = realised.stdout.trim().split("\n").pop()!;
  return { out, drv };
}

/** The signatures (`NAME:BASE64`) of `path` in a host's store. */
export async function signaturesOf(host: TestHost, path: string): Promise<string[]> {
  const line = (await host.exec(`${NIX} path-info --sigs ${path}`)).stdout.trim();
  // `PATH  [ultimate] [ca:…] NAME:BASE64…` on Nix 2.8
  return line
    .split(/\s+/)
    .slice(1)
    .filter((w) => !w.startsWith("ca:") && /^[^:]+:[A-Za-z0-9+/]+=*$/.test(w));
}

/** Substitutes `p` on a production host (which never had its derivation); returns its sigs there. */
export async function substitute(host: TestHost, p: BuiltPath): Promise<string[]> {
  const r = await host.exec(`nix-store --realise ${p.out}`, { check: false });
  assert.equal(r.code, 0, `${host.name} could not substitute ${p.out}:\n${r.stderr}`);
  const drvThere = await host.exec(`test -e ${p.drv} && echo present || echo absent`);
  assert.equal(drvThere.stdout.trim(), "absent", "production must not have had the derivation");
  return signaturesOf(host, p.out);
}

/** One step of `pulumi preview --json`. */
export interface PreviewStep {
  op: string;
  urn: string;
}

/** The steps of `pulumi preview --json` that change something (`op` other than `same`). */
export function changedSteps(previewJson: string): PreviewStep[] {
  const parsed = JSON.parse(previewJson) as { steps?: PreviewStep[] };
  return (parsed.steps ?? []).filter((s) => s.op !== "same");
}

/** The resource name (last URN segment) of a step. */
export function resourceName(urn: string): string {
  return urn.slice(urn.lastIndexOf("::") + 2);
}

/**
 * A new stack of the project in `projectDir` (default: the example project's config shape) for
 * these test hosts: staging with its host key pinned and `cacheHost` its FQDN, each production
 * host by address with its host key and name, and the runner's key as `sshKey`.
 */
export async function exampleStack(
  projectDir: string,
  stackName: string,
  stage: TestHost,
  prods: TestHost[],
  project = "nix-ssh-cache",
): Promise<PulumiStack> {
  const stack = new PulumiStack(projectDir, stackName);
  await stack.init();
  await stack.setConfigObjects(
    {
      staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
      production: prods.map((p) => ({ host: p.address, hostKey: p.hostKey, name: p.name })),
    },
    project,
  );
  await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  return stack;
}

/** The example stack in `projectDir` on staging + 2 production hosts: up, then ssh-ng. */
export async function previewAfterProtocolChange(
  hosts: TestHosts,
  projectDir: string,
): Promise<{ stack: PulumiStack; preview: string }> {
  const stage = hosts.byName("stage");
  const prods = [hosts.byName("prod1"), hosts.byName("prod2")];
  const stack = await exampleStack(projectDir, "e2e", stage, prods);
  const up = await stack.up();
  assert.equal(up.code, 0, up.output);
  await stack.setConfig("protocol", "ssh-ng");
  const preview = await stack.preview(["--diff"]);
  assert.equal(preview.code, 0, preview.output);
  return { stack, preview: preview.stdout };
}

/** Runs step `name` (lib.sh + remote/<name>.sh) as root inside the host, as the component does. */
export function runHostStep(
  h: TestHost,
  name: string,
  env: Record<string, string>,
): Promise<ExecResult> {
  return h.exec(assembleScript(hostScript(name), env), { check: false });
}

/** Runs `body` after lib.sh inside the host. */
export function runWithLib(h: TestHost, body: string): Promise<ExecResult> {
  return h.exec(assembleScript(`${remoteScriptText("lib")}\n${body}`), { check: false });
}

/** The JSON object a host script printed last. */
export function lastJson(r: ExecResult): Record<string, unknown> {
  const line = r.stdout.trim().split("\n").pop() ?? "";
  return JSON.parse(line) as Record<string, unknown>;
}

/** What `cmd` printed inside the host, trimmed (it must succeed). */
export async function hostOutput(h: TestHost, cmd: string): Promise<string> {
  return (await h.exec(cmd)).stdout.trim();
}

/**
 * A staging that accepts TCP connections on its SSH address and never says a word (a hung
 * sshd or host behind something that still completes the handshake). Returns its closer.
 */
export async function silentListener(stage: TestHost): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: stage.address, port: stage.port }, resolve);
  });
  return () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
}
