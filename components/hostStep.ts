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
 */
import * as pulumi from "@pulumi/pulumi";
import { Connection, runJsonScript } from "./ssh";

/** Plain inputs of a host step, as the provider sees them. */
export interface HostStepProps {
  /** Where to run. */
  connection: Connection;
  /** Label used in messages and ids, e.g. `signing key`. */
  step: string;
  /** The full script body (lib.sh + step script). */
  script: string;
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
export interface HostStepOutputs extends HostStepProps {
  /** The JSON object the script printed last. */
  result: Record<string, unknown>;
  /** True after a refresh observed a result different from the last applied one. */
  drifted: boolean;
}

/** Inputs of {@link HostStep}, as Pulumi inputs. */
export type HostStepArgs = {
  [K in keyof HostStepProps]: pulumi.Input<HostStepProps[K]>;
};

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
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
    const id = `${inputs.connection.host}/${inputs.step}/${Date.now().toString(36)}`;
    const outs: HostStepOutputs = { ...inputs, result, drifted: false };
    return { id, outs };
  },

  async diff(_id: string, olds: HostStepOutputs, news: HostStepProps) {
    const compared: (keyof HostStepProps)[] = [
      "step",
      "script",
      "env",
      "readable",
      "removable",
      "removeEnv",
      "driftKeys",
      "triggers",
      "timeoutSeconds",
    ];
    const changes: string[] = compared.filter((k) => !sameJson(olds[k], news[k]));
    const oc = olds.connection;
    const nc = news.connection;
    const replaces: string[] = [];
    if (oc.host !== nc.host || oc.port !== nc.port) replaces.push("connection");
    else if (!sameJson(oc, nc)) changes.push("connection");
    if (olds.drifted) changes.push("result");
    return {
      changes: changes.length > 0 || replaces.length > 0,
      replaces,
      deleteBeforeReplace: false,
    };
  },

  async update(_id: string, _olds: HostStepOutputs, news: HostStepProps) {
    const result = await apply(news);
    const outs: HostStepOutputs = { ...news, result, drifted: false };
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
 * One idempotent, re-observable step on a host. The connection (with its private key) is kept
 * secret in the state; `result` is what the host reported and never holds private material.
 */
export class HostStep extends pulumi.dynamic.Resource {
  /** The JSON object the step's script printed last. */
  declare public readonly result: pulumi.Output<Record<string, unknown>>;
  /** True when a refresh saw the host differ from the last apply (the next `up` repairs it). */
  declare public readonly drifted: pulumi.Output<boolean>;

  constructor(name: string, args: HostStepArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      hostStepProvider,
      name,
      { ...args, result: undefined, drifted: undefined },
      {
        ...opts,
        additionalSecretOutputs: ["connection", ...(opts?.additionalSecretOutputs ?? [])],
      },
      "nix-ssh-cache",
      "HostStep",
    );
  }
}
