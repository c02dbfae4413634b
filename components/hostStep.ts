/**
 * `HostStep`: one idempotent step on one host (generate a key, write a file, build a canary),
 * as a Pulumi dynamic resource whose `read` re-observes the host, so `pulumi refresh` sees drift.
 *
 * Why not `@pulumi/command`'s `remote.Command`: it has no `read` (pulumi-command #432), so a
 * deleted key or an edited file would go unnoticed; and its provider plugin cannot be built on
 * machines that only reach the Go module proxy (see README, "Toolchain").
 *
 * Scripts follow the contract in `components/remote/README.md`: inputs in environment variables,
 * `ACTION=apply|read|remove`, the last stdout line is one JSON object.
 *
 * How a host is reached (`connection`) and how long a run may take (`timeoutSeconds`) are not
 * part of what a step does: when only they change, `update` proves the new connection with one
 * login and stores it, without running the step again.
 */
import * as crypto from "crypto";
import * as pulumi from "@pulumi/pulumi";
import { Connection, runJsonScript } from "./ssh";

/** Plain inputs of a host step, as the provider sees them. */
export interface HostStepProps {
  /** Where to run. */
  connection: Connection;
  /** The resource's name, also its id, e.g. `cache-staging-sshd-config`. */
  name: string;
  /** Label used in messages, e.g. `sshd drop-in /etc/ssh/sshd_config.d/nix-ssh-cache.conf`. */
  step: string;
  /** The full script body (lib.sh + step script); a secret, so previews show the digest. */
  script: string;
  /** SHA-256 of `script` (16 hex digits): what a diff shows when the script changes. */
  scriptDigest: string;
  /** Inputs of the script. */
  env: Record<string, string>;
  /** Whether the script supports `ACTION=read` (refresh observes the host). */
  readable: boolean;
  /** Whether the script supports `ACTION=remove` (run on delete). */
  removable: boolean;
  /** Extra inputs for `ACTION=remove`, e.g. `{ REMOVE_KEY: "1" }`. */
  removeEnv: Record<string, string>;
  /** Keys of the result that `read` compares with the last applied result to detect drift. */
  driftKeys: string[];
  /** Any change here re-runs the step (e.g. the contents it depends on). */
  triggers: string[];
  /** Timeout of one run, in seconds. */
  timeoutSeconds: number;
}

/** Outputs: the inputs plus what the host reported. */
export interface HostStepOutputs<R = Record<string, unknown>> extends HostStepProps {
  /** The JSON object the script printed last. */
  result: R;
  /** True after a refresh observed a result different from the last applied one. */
  drifted: boolean;
}

/**
 * Inputs of {@link HostStep}. Only `connection`, `step` and `script` are required.
 *
 * @example
 * ```ts
 * new HostStep("web-uptime", { connection, step: "uptime", script: "uptime; echo '{}'" });
 * ```
 */
export interface HostStepArgs {
  /** Where to run (a resolved connection). */
  connection: pulumi.Input<Connection>;
  /** Label used in messages. */
  step: string;
  /** The full script body. */
  script: pulumi.Input<string>;
  /** Inputs of the script. @defaultValue `{}` */
  env?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** The script supports `ACTION=read`. @defaultValue `false` */
  readable?: boolean;
  /** The script supports `ACTION=remove`. @defaultValue `false` */
  removable?: boolean;
  /** Extra inputs for `ACTION=remove`. @defaultValue `{}` */
  removeEnv?: pulumi.Input<Record<string, string>>;
  /** Result keys a refresh compares to detect drift. @defaultValue `[]` */
  driftKeys?: string[];
  /** Values whose change re-runs the step. @defaultValue `[]` */
  triggers?: pulumi.Input<pulumi.Input<string>[]>;
  /** Timeout of one run, in seconds. @defaultValue `300` */
  timeoutSeconds?: number;
}

/** Inputs whose change re-runs the step (everything but the transport and the labels). */
const WORK: (keyof HostStepProps)[] = [
  "scriptDigest",
  "env",
  "readable",
  "removable",
  "removeEnv",
  "driftKeys",
  "triggers",
];

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** The digest of the script a state holds (states before the digest existed: of its body). */
function scriptDigestOf(props: HostStepProps): string {
  if (props.scriptDigest) return props.scriptDigest;
  // Required here, not imported: this code is serialized into the dynamic provider.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const c = require("crypto") as typeof import("crypto");
  return c.createHash("sha256").update(props.script).digest("hex").slice(0, 16);
}

/** Inputs that differ in a way that needs the step to run again. */
function workChanges(olds: HostStepOutputs, news: HostStepProps): string[] {
  const old = { ...olds, scriptDigest: scriptDigestOf(olds) };
  return WORK.filter((k) => !sameJson(old[k], news[k]));
}

/**
 * Runs a no-op script over `props.connection` once per provider process (the steps of one host
 * share the proof, as they share the pooled connection): one login per host proves new
 * credentials.
 */
function proveConnection(props: HostStepProps): Promise<unknown> {
  const registry = globalThis as { [k: symbol]: Map<string, Promise<unknown>> | undefined };
  const slot = Symbol.for("nix-ssh-cache/proven-connections");
  const proven = (registry[slot] ??= new Map<string, Promise<unknown>>());
  const key = JSON.stringify(props.connection);
  let proof = proven.get(key);
  if (!proof) {
    proof = runJsonScript(props.connection, `printf '{}\\n'`, {
      step: "login with the new connection settings",
      timeoutMs: props.timeoutSeconds * 1000,
    });
    proven.set(key, proof);
    proof.catch(() => proven.delete(key));
  }
  return proof;
}

async function apply(props: HostStepProps): Promise<Record<string, unknown>> {
  return runJsonScript(props.connection, props.script, {
    env: { ...props.env, ACTION: "apply" },
    step: props.step,
    timeoutMs: props.timeoutSeconds * 1000,
  });
}

/** @internal The provider of {@link HostStep} (exported for the serialization unit test). */
export const hostStepProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: HostStepProps) {
    const result = await apply(inputs);
    const outs: HostStepOutputs = { ...inputs, result, drifted: false };
    return { id: inputs.name || `${inputs.connection.host}/${inputs.step}`, outs };
  },

  async diff(_id: string, olds: HostStepOutputs, news: HostStepProps) {
    const changes = workChanges(olds, news);
    const oc = olds.connection;
    const nc = news.connection;
    const replaces: string[] = [];
    if (oc.host !== nc.host || oc.port !== nc.port) replaces.push("connection");
    else if (!sameJson(oc, nc)) changes.push("connection");
    for (const k of ["step", "name", "timeoutSeconds"] as const) {
      if (!sameJson(olds[k], news[k])) changes.push(k);
    }
    if (olds.drifted) changes.push("result");
    return {
      changes: changes.length > 0 || replaces.length > 0,
      replaces,
      deleteBeforeReplace: false,
    };
  },

  async update(_id: string, olds: HostStepOutputs, news: HostStepProps) {
    if (workChanges(olds, news).length > 0 || olds.drifted) {
      const result = await apply(news);
      const outs: HostStepOutputs = { ...news, result, drifted: false };
      return { outs };
    }
    // Only the transport (or a label) changed: the host is as it was. Prove the new connection
    // works, once per host and connection in this provider process, then store it.
    if (JSON.stringify(olds.connection) !== JSON.stringify(news.connection)) {
      await proveConnection(news);
    }
    const outs: HostStepOutputs = { ...news, result: olds.result, drifted: false };
    return { outs };
  },

  async read(id: string, props: HostStepOutputs) {
    if (!props.readable) return { id, props };
    const observed = await runJsonScript(props.connection, props.script, {
      env: { ...props.env, ACTION: "read" },
      step: `${props.step} (read)`,
      timeoutMs: props.timeoutSeconds * 1000,
    });
    const result: Record<string, unknown> = { ...props.result };
    let drifted = props.drifted;
    for (const key of props.driftKeys) {
      if (!sameJson(observed[key], props.result[key])) {
        drifted = true;
        result[key] = observed[key] ?? null;
      }
    }
    return { id, props: { ...props, result, drifted } };
  },

  async delete(_id: string, props: HostStepOutputs) {
    if (!props.removable) return;
    await runJsonScript(props.connection, props.script, {
      env: { ...props.env, ...props.removeEnv, ACTION: "remove" },
      step: `${props.step} (remove)`,
      timeoutMs: props.timeoutSeconds * 1000,
    });
  },
};

/**
 * One idempotent, re-observable step on a host, typed by what its script reports (`R`). The
 * connection (with its private key) and the script body are secret in the state; a diff shows
 * `scriptDigest` instead of the body. `result` is what the host reported and never holds private
 * material.
 */
export class HostStep<R = Record<string, unknown>> extends pulumi.dynamic.Resource {
  /** The JSON object the step's script printed last. */
  declare public readonly result: pulumi.Output<R>;
  /** True when a refresh saw the host differ from the last apply (the next `up` repairs it). */
  declare public readonly drifted: pulumi.Output<boolean>;

  constructor(name: string, args: HostStepArgs, opts?: pulumi.CustomResourceOptions) {
    const script = pulumi.output(args.script);
    const props: pulumi.Inputs = {
      connection: args.connection,
      name,
      step: args.step,
      script: pulumi.secret(script),
      scriptDigest: pulumi.unsecret(
        script.apply((s) => crypto.createHash("sha256").update(s).digest("hex").slice(0, 16)),
      ),
      env: args.env ?? {},
      readable: args.readable ?? false,
      removable: args.removable ?? false,
      removeEnv: args.removeEnv ?? {},
      driftKeys: args.driftKeys ?? [],
      triggers: args.triggers ?? [],
      timeoutSeconds: args.timeoutSeconds ?? 300,
      result: undefined,
      drifted: undefined,
    };
    super(
      hostStepProvider,
      name,
      props,
      {
        ...opts,
        additionalSecretOutputs: ["connection", "script", ...(opts?.additionalSecretOutputs ?? [])],
      },
      "nix-ssh-cache",
      "HostStep",
    );
  }
}
