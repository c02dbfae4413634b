/**
 * The provider of `HostStep` (components/hostStep.ts): what the dynamic provider process runs
 * for each step (create, diff, update, read, delete), and the one-line step spec it decodes.
 *
 * This module is loaded by `require` in the dynamic provider process (see `providerOfState` in
 * hostStep.ts), so it is ordinary compiled code: it does not import `@pulumi/pulumi` at runtime.
 */
import * as zlib from "zlib";
import type * as pulumi from "@pulumi/pulumi";
import {
  digest,
  packagedFileText,
  packagedScript,
  packagedScriptRef,
  remoteScriptText,
} from "./remoteScripts";
import { fingerprint } from "./knownHosts";
import { Connection, describeConnection, runJsonScript } from "./ssh";

/**
 * What a step is, apart from its inputs: one line in the state (`HostStepProps.spec`, see
 * {@link encodeSpec}), so a preview shows it on one line.
 */
export interface StepSpec {
  /** The resource's name, also its id, e.g. `cache-staging-sshd-config`. */
  name: string;
  /** Label used in messages, e.g. `sshd drop-in /etc/ssh/sshd_config.d/nix-ssh-cache.conf`. */
  step: string;
  /** SHA-256 of the script body (16 hex digits): what a diff shows when the script changes. */
  script: string;
  /** Whether the script supports `ACTION=read` (refresh observes the host). */
  readable: boolean;
  /** Whether the script supports `ACTION=remove` (run on delete). */
  removable: boolean;
  /** Extra inputs for `ACTION=remove`, e.g. `{ REMOVE_KEY: "1" }`. */
  removeEnv: Record<string, string>;
  /** Keys of the result that `read` compares with the last applied result to detect drift. */
  driftKeys: string[];
  /**
   * Keys of the result that hold a trust anchor (a key every production host trusts, e.g.
   * staging's SSH host key or the cache's public key): a refresh that sees another value fails,
   * naming both, instead of marking drift (which would re-pin it on the next `up`). An apply
   * takes another value only when the step's inputs or the connection's host key changed. A
   * value gone from the host is drift (the step's own apply makes the next one).
   */
  anchorKeys?: string[];
  /**
   * Key of the result that lists the host's own SSH host keys (`"<type> <base64>"` lines): the
   * key the connection verified must be among them.
   */
  hostKeysKey?: string;
  /** Timeout of one run, in seconds. */
  timeoutSeconds: number;
}

/** Plain inputs of a host step, as the provider sees them. */
export interface HostStepProps {
  /** Where to run (secret: it holds the credentials). */
  connection: Connection;
  /**
   * {@link StepSpec} as one line, e.g. `cache-staging-sshd-config | sshd drop-in /etc/… |
   * script 1024ff0d643a39ad | read yes | remove yes | drift exists,sha256 | timeout 120s`.
   */
  spec: string;
  /**
   * The full script body (lib.sh + step script) as {@link packScript} stores it; secret, so
   * previews show its digest only.
   */
  script: string;
  /** Inputs of the script. */
  env: Record<string, string>;
  /** Any change here re-runs the step (e.g. the digest of what it depends on). */
  triggers?: string[];
}

/** Outputs: the inputs plus what the host reported. */
export interface HostStepOutputs<R = Record<string, unknown>> extends HostStepProps {
  /** The JSON object the script printed last. */
  result: R;
  /** True after a refresh observed a result different from the last applied one. */
  drifted: boolean;
}

/** A state's spec (states written before `spec` existed kept its fields at the top level). */
function specOf(props: HostStepProps): StepSpec {
  if (typeof props.spec === "string") return decodeSpec(props.spec);
  const legacy = props as unknown as Omit<StepSpec, "script" | "name"> & { script: string };
  // Required here, not imported: this code is serialized into the dynamic provider.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const c = require("crypto") as typeof import("crypto");
  return {
    name: "",
    step: legacy.step,
    script: c.createHash("sha256").update(legacy.script).digest("hex").slice(0, 16),
    readable: legacy.readable,
    removable: legacy.removable,
    removeEnv: legacy.removeEnv ?? {},
    driftKeys: legacy.driftKeys ?? [],
    anchorKeys: [],
    timeoutSeconds: legacy.timeoutSeconds,
  };
}

/**
 * One line for a {@link StepSpec}: name, label, script digest, read, remove (with its extra
 * inputs), drift keys, then only when set anchor keys and the host-keys key, and the timeout,
 * separated by ` | `.
 */
export function encodeSpec(s: StepSpec): string {
  const removeEnv = Object.entries(s.removeEnv).map(([k, v]) => `${k}=${v}`);
  const anchors = s.anchorKeys ?? [];
  for (const word of [...removeEnv, ...s.driftKeys, ...anchors, s.hostKeysKey ?? ""]) {
    if (/[\s,|]/.test(word)) throw new Error(`invalid step spec word ${JSON.stringify(word)}`);
  }
  return [
    s.name,
    s.step,
    `script ${s.script}`,
    `read ${s.readable ? "yes" : "no"}`,
    `remove ${s.removable ? "yes" : "no"}${removeEnv.length ? ` with ${removeEnv.join(",")}` : ""}`,
    `drift ${s.driftKeys.join(",") || "none"}`,
    ...(anchors.length ? [`anchor ${anchors.join(",")}`] : []),
    ...(s.hostKeysKey ? [`host-keys ${s.hostKeysKey}`] : []),
    `timeout ${s.timeoutSeconds}s`,
  ].join(" | ");
}

/** The {@link StepSpec} of a line made by {@link encodeSpec}. */
export function decodeSpec(line: string): StepSpec {
  const parts = line.split(" | ");
  // The optional parts stand between the drift keys and the timeout (never in the label).
  const optional: Record<string, string> = {};
  while (parts.length >= 8 && /^(anchor|host-keys) \S+$/.test(parts[parts.length - 2])) {
    const [word, value] = parts.splice(parts.length - 2, 1)[0].split(" ");
    optional[word] = value;
  }
  if (parts.length < 7) throw new Error(`invalid step spec: ${line}`);
  const [script, read, remove, drift, timeout] = parts.slice(-5);
  const [removable, withEnv] = remove.replace(/^remove /, "").split(" with ");
  const driftKeys = drift.replace(/^drift /, "");
  return {
    name: parts[0],
    step: parts.slice(1, -5).join(" | "),
    script: script.replace(/^script /, ""),
    readable: read === "read yes",
    removable: removable === "yes",
    removeEnv: Object.fromEntries(
      (withEnv ? withEnv.split(",") : []).map((kv) => [
        kv.slice(0, kv.indexOf("=")),
        kv.slice(kv.indexOf("=") + 1),
      ]),
    ),
    driftKeys: driftKeys === "none" ? [] : driftKeys.split(","),
    anchorKeys: optional.anchor ? optional.anchor.split(",") : [],
    ...(optional["host-keys"] ? { hostKeysKey: optional["host-keys"] } : {}),
    timeoutSeconds: Number(timeout.replace(/^timeout (\d+)s$/, "$1")),
  };
}

/** Prefix of a script body stored compressed by {@link packScript}. */
const PACKED_SCRIPT = "gzip-base64:";
/** Prefix of a package's host script stored by name: `package <name>[:<onlyOn>]`. */
const PACKAGED = "package ";
/** Prefix of one stored without the package's lib.sh: `gzip-base64+lib <lib digest>:`. */
const PACKED_AFTER_LIB = /^gzip-base64\+lib ([0-9a-f]{16}):/;

/** The package's lib.sh (`remote/lib.sh` beside this module), read once per process. */
function packageLib(): { text: string; digest: string } {
  const registry = globalThis as { [k: symbol]: { text: string; digest: string } | undefined };
  const slot = Symbol.for("nix-ssh-cache/package-lib");
  if (!registry[slot]) {
    const text = remoteScriptText("lib");
    registry[slot] = { text, digest: digest(text) };
  }
  return registry[slot];
}

/**
 * A script body as it goes into the state: gzip-compressed and base64-encoded, after the prefix
 * `gzip-base64:`. Every step's state holds its script twice (inputs and outputs), and Pulumi
 * rewrites the whole state after each step of an `up` or `destroy`: the scripts were most of it,
 * and writing it most of the engine's CPU with 8 hosts.
 *
 * With `withoutLib` (the program and the provider load the same package), a body that is one of
 * the package's host scripts (`hostScript(name, onlyOn)`, every step of the components) is stored
 * by name, `package <name>[:<onlyOn>]`, and the provider reads it from the package: with 8 hosts
 * that is most of what remained of the state (each file step held file.sh twice, about 12 KB).
 * Another body that begins with the package's lib.sh (36 KB) is stored without it, as
 * `gzip-base64+lib <digest>:` and the rest: the provider puts lib.sh back ({@link scriptBody}).
 */
export function packScript(body: string, withoutLib = false): string {
  const ref = withoutLib ? packagedScriptRef(body) : undefined;
  if (ref !== undefined) return PACKAGED + ref;
  const lib = withoutLib ? packageLib() : undefined;
  if (lib && body.startsWith(lib.text)) {
    const rest = body.slice(lib.text.length);
    return `gzip-base64+lib ${lib.digest}:${zlib.gzipSync(rest, { level: 9 }).toString("base64")}`;
  }
  return PACKED_SCRIPT + zlib.gzipSync(body, { level: 9 }).toString("base64");
}

/** Whether a stored script (see {@link packScript}) names one of the package's host scripts. */
export function isPackagedScript(stored: string): boolean {
  return stored.startsWith(PACKAGED);
}

/**
 * The script body of a step's inputs or state: unpacked (see {@link packScript}), or as it is
 * (states written before scripts were packed, scripts given to the provider directly). A body
 * stored by name is the installed package's host script of that name; one stored without lib.sh
 * gets the package's lib.sh back: for an `up`, the one the program sent
 * (the same package); for a refresh or delete of a step an earlier version of the package wrote
 * (another lib digest), the installed one, as the installed provider runs it too.
 */
export function scriptBody(stored: string): string {
  if (stored.startsWith(PACKAGED)) return packagedScript(stored.slice(PACKAGED.length));
  const afterLib = PACKED_AFTER_LIB.exec(stored);
  const packed = afterLib
    ? stored.slice(afterLib[0].length)
    : stored.startsWith(PACKED_SCRIPT)
      ? stored.slice(PACKED_SCRIPT.length)
      : undefined;
  if (packed === undefined) return stored;
  const text = zlib.gunzipSync(Buffer.from(packed, "base64")).toString();
  return afterLib ? packageLib().text + text : text;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/**
 * What differs in a way that needs the step to run again: everything but the transport
 * (`connection`, `timeoutSeconds`) and the labels (`name`, `step`).
 */
function workChanges(olds: HostStepOutputs, news: HostStepProps): string[] {
  const o = specOf(olds);
  const n = specOf(news);
  const changes: string[] = [];
  const fields = ["script", "readable", "removable", "removeEnv", "driftKeys"] as const;
  // Anchor keys too: the first `up` that checks them runs the step again and so stores the
  // result they are checked against (e.g. the probe's hostKeys).
  for (const k of [...fields, "anchorKeys", "hostKeysKey"] as const) {
    if (!sameJson(o[k], n[k])) changes.push(k === "script" ? "script" : "spec");
  }
  if (!sameJson(envOf(olds.env, false), envOf(news.env, false))) changes.push("env");
  if (!sameJson(olds.triggers ?? [], news.triggers ?? [])) changes.push("triggers");
  return [...new Set(changes)];
}

/**
 * A step's environment with the package's files back in place of their names (see
 * `packagedFileText`; `strict`: a name of another version of a file is an error).
 */
function envOf(env: Record<string, string>, strict: boolean): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env ?? {}).map(([k, v]) => [k, packagedFileText(v, strict)]),
  );
}

/**
 * Runs a no-op script over `props.connection` once per provider process (the steps of one host
 * share the proof, as they share the pooled connection): one login per host proves new
 * credentials.
 */
function proveConnection(props: HostStepProps): Promise<unknown> {
  refuseInvalid(props);
  const registry = globalThis as { [k: symbol]: Map<string, Promise<unknown>> | undefined };
  const slot = Symbol.for("nix-ssh-cache/proven-connections");
  const proven = (registry[slot] ??= new Map<string, Promise<unknown>>());
  const key = JSON.stringify(props.connection);
  let proof = proven.get(key);
  if (!proof) {
    proof = runJsonScript(props.connection, `printf '{}\\n'`, {
      step: "login with the new connection settings",
      timeoutMs: specOf(props).timeoutSeconds * 1000,
    });
    proven.set(key, proof);
    proof.catch(() => proven.delete(key));
  }
  return proof;
}

/** Nothing runs over a connection built from invalid input (the problems were reported). */
function refuseInvalid(props: HostStepProps): void {
  const invalid = props.connection.invalidInput;
  if (invalid)
    throw new Error(`not run: invalid input (reported above): ${invalid.split("\n")[0]}`);
}

/** Runs the step's script with `ACTION` (and the remove inputs on remove). */
function run(
  props: HostStepProps,
  action: "apply" | "read" | "remove",
  prior: Record<string, unknown> = {},
) {
  refuseInvalid(props);
  const spec = specOf(props);
  const extra = action === "remove" ? spec.removeEnv : priorAnchorsEnv(spec, prior);
  return runJsonScript(props.connection, scriptBody(props.script), {
    // Only an apply needs the file a name stands for (file.sh reads and removes without it).
    env: { ...envOf(props.env, action === "apply"), ...extra, ACTION: action },
    step: action === "apply" ? spec.step : `${spec.step} (${action})`,
    timeoutMs: spec.timeoutSeconds * 1000,
  });
}

/**
 * The anchor values this step's state already holds, for its script (`NSC_PRIOR_<KEY>`, e.g.
 * `NSC_PRIOR_PUBLICKEY`): what the operator's own record says the host had, so a script can
 * tell a value this stack already trusts from one it has never seen (signing-key.sh records,
 * rather than refuses, a key generated by a version that kept no record on the host).
 */
function priorAnchorsEnv(spec: StepSpec, prior: Record<string, unknown>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of spec.anchorKeys ?? []) {
    const value = prior[key];
    if (typeof value === "string" && isSet(value)) env[`NSC_PRIOR_${key.toUpperCase()}`] = value;
  }
  return env;
}

/** Whether a result value is set (an anchor gone from the host is drift, not a change). */
function isSet(value: unknown): boolean {
  return value !== undefined && value !== null && value !== "";
}

/** An anchor value for messages: an SSH key by its fingerprint, another value as it is. */
function showAnchor(value: unknown): string {
  const text = typeof value === "string" ? value.trim() : JSON.stringify(value);
  return /^(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+/.test(text) ? fingerprint(text) : text;
}

/** What to do when an anchor changed, by result key (see {@link StepSpec.anchorKeys}). */
const ANCHOR_HINTS: Record<string, string> = {
  hostKey:
    "if the host was reinstalled, compare the new fingerprint with the one its console shows (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), set the connection's hostKey (or its ~/.ssh/known_hosts line) to the new key and run `pulumi up` without --refresh; else treat the host as compromised",
  publicKey:
    'to change the signing key, restore these key files and rotate instead (signingKey.generation N+1 with previousGenerations: [N], see the README, "Rotating the signing key"); else treat staging as compromised',
};

/**
 * Fails when a trust anchor of the step (see {@link StepSpec.anchorKeys}) differs between
 * `before` (what production was given) and `after` (what the host reports now); `action` says
 * what observed it.
 */
function checkAnchors(
  props: HostStepProps,
  before: Record<string, unknown>,
  after: Record<string, unknown>,
  action: "refresh" | "apply",
): void {
  const spec = specOf(props);
  for (const key of spec.anchorKeys ?? []) {
    const [was, now] = [before?.[key], after?.[key]];
    if (!isSet(was) || !isSet(now) || sameJson(was, now)) continue;
    throw new Error(
      `${describeConnection(props.connection)}: ${spec.step} (${spec.name}): the trust anchor ${key} changed on the host (seen by ${action}): was ${showAnchor(was)}, now ${showAnchor(now)}. ` +
        `Production keeps trusting the old value: an anchor changes only through the stack's inputs, never by a refresh. What to do: ${ANCHOR_HINTS[key] ?? "change the step's inputs to accept it"}.`,
    );
  }
}

/**
 * Fails when the step reports the host's own SSH host keys (see {@link StepSpec.hostKeysKey})
 * and the key the connection verified is not among them: the operator reached an SSH server
 * other than the host's own, and what the step read would not be what production meets.
 */
function checkVerifiedKeyReported(props: HostStepProps, result: Record<string, unknown>): void {
  const spec = specOf(props);
  const pinned = props.connection.hostKey?.trim().split(/\s+/).slice(0, 2).join(" ");
  if (!spec.hostKeysKey || !pinned) return;
  const reported = Array.isArray(result[spec.hostKeysKey]) ? result[spec.hostKeysKey] : [];
  const keys = (reported as unknown[]).map((k) =>
    String(k).trim().split(/\s+/).slice(0, 2).join(" "),
  );
  if (keys.includes(pinned)) return;
  const source = props.connection.hostKeySource ?? "hostKey";
  throw new Error(
    `${describeConnection(props.connection)}: ${spec.step} (${spec.name}): the host key the connection verified, ${showAnchor(pinned)} (from ${source}), is not one of the host's own keys (${keys.map(showAnchor).join(", ") || "none found"}, in /etc/ssh/ssh_host_*_key.pub): the operator reached another SSH server than the host's (e.g. through a forwarded port); connect to the host's own sshd, or fix ${source}`,
  );
}

/** The host key a connection verifies its host with (its own hop, not a proxy's). */
function verifiedKey(connection: Connection): string {
  return connection.hostKey?.trim().split(/\s+/).slice(0, 2).join(" ") ?? "";
}

/** @internal The provider of {@link HostStep} (exported for the serialization unit test). */
export const hostStepProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: HostStepProps) {
    const result = await run(inputs, "apply");
    checkVerifiedKeyReported(inputs, result);
    const outs: HostStepOutputs = { ...inputs, result, drifted: false };
    const spec = specOf(inputs);
    return { id: spec.name || `${inputs.connection.host}/${spec.step}`, outs };
  },

  async diff(_id: string, olds: HostStepOutputs, news: HostStepProps) {
    const changes = workChanges(olds, news);
    const oc = olds.connection;
    const nc = news.connection;
    const replaces: string[] = [];
    if (oc.host !== nc.host || oc.port !== nc.port) replaces.push("connection");
    else if (!sameJson(oc, nc)) changes.push("connection");
    if (!sameJson(specOf(olds), specOf(news))) changes.push("spec");
    if (olds.drifted) changes.push("result");
    return {
      changes: changes.length > 0 || replaces.length > 0,
      replaces,
      deleteBeforeReplace: false,
    };
  },

  async update(_id: string, olds: HostStepOutputs, news: HostStepProps) {
    const inputsChanged = workChanges(olds, news).length > 0;
    // A new host key verifies the host anew: its anchors are read again and may change.
    const reverified =
      (specOf(news).anchorKeys ?? []).length > 0 &&
      verifiedKey(olds.connection) !== verifiedKey(news.connection);
    if (inputsChanged || reverified || olds.drifted) {
      const result = await run(news, "apply", olds.result);
      checkVerifiedKeyReported(news, result);
      if (!inputsChanged && !reverified) checkAnchors(news, olds.result, result, "apply");
      const outs: HostStepOutputs = { ...news, result, drifted: false };
      return { outs };
    }
    // Only the transport (or a label) changed: the host is as it was. Prove the new connection
    // works, once per host and connection in this provider process, then store it.
    if (!sameJson(olds.connection, news.connection)) await proveConnection(news);
    const outs: HostStepOutputs = { ...news, result: olds.result, drifted: false };
    return { outs };
  },

  async read(id: string, props: HostStepOutputs) {
    const spec = specOf(props);
    if (!spec.readable) return { id, props };
    const observed = await run(props, "read");
    checkAnchors(props, props.result, observed, "refresh");
    checkVerifiedKeyReported(props, observed);
    const result: Record<string, unknown> = { ...props.result };
    let drifted = props.drifted;
    for (const key of spec.driftKeys) {
      if (!sameJson(observed[key], props.result[key])) {
        drifted = true;
        result[key] = observed[key] ?? null;
      }
    }
    return { id, props: { ...props, result, drifted } };
  },

  async delete(_id: string, props: HostStepOutputs) {
    if (!specOf(props).removable) return;
    await run(props, "remove");
  },
};
