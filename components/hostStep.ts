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
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { encodeSpec, hostStepProvider, packScript } from "./hostStepProvider";
import { Connection } from "./ssh";

export {
  decodeSpec,
  encodeSpec,
  HostStepOutputs,
  HostStepProps,
  hostStepProvider,
  StepSpec,
} from "./hostStepProvider";

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
  removeEnv?: Record<string, string>;
  /** Result keys a refresh compares to detect drift. @defaultValue `[]` */
  driftKeys?: string[];
  /** Values whose change re-runs the step. @defaultValue `[]` */
  triggers?: pulumi.Input<pulumi.Input<string>[]>;
  /** Timeout of one run, in seconds. @defaultValue `300` */
  timeoutSeconds?: number;
}

/**
 * The HostStep provider as it goes into the state: a loader that `require`s the compiled
 * provider module (hostStepProvider.js) in the dynamic provider process, instead of the provider
 * itself. Pulumi serializes a dynamic provider's code into every resource's inputs (`__provider`)
 * and walks, by value, every function and module it reaches from a local file: for the provider
 * itself that was the whole SSH client (ssh.ts) and the part of `ssh2` it reaches: about 35 KB in
 * every step's state, and most of a second of the program's CPU on every run. The loader
 * serializes to under 3 KB.
 *
 * The provider process runs in the program's directory (its `cwd`), as the program does: the
 * module is found at its path relative to that directory (`moduleFromCwd`, e.g.
 * `node_modules/nix-ssh-cache/build/components/hostStepProvider.js`), else as
 * `nix-ssh-cache/build/components/hostStepProvider.js` from there (a state written in another
 * checkout or layout). Delete, read and refresh of an existing step thus run the installed
 * version of the provider, as a provider plugin would (the provider reads the states of earlier
 * versions, see `specOf`).
 *
 * @param moduleFromCwd - the compiled provider module, relative to the program's directory
 */
export function providerLoader(moduleFromCwd: string): pulumi.dynamic.ResourceProvider {
  // The serialized text holds these functions' source, comments included: comments go here.
  // `require` inside, not imports: the text runs in the provider process, where the loader
  // resolves both candidates from the program's directory; the error names what it tried.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const load = (): pulumi.dynamic.ResourceProvider => {
    const p = require("path") as typeof import("path");
    const from = (require("module") as typeof import("module")).createRequire(
      p.join(process.cwd(), "index.js"),
    );
    const tried = [p.resolve(moduleFromCwd), "nix-ssh-cache/build/components/hostStepProvider.js"];
    for (const candidate of tried) {
      let file: string;
      try {
        file = from.resolve(candidate);
      } catch {
        continue;
      }
      return (from(file) as { hostStepProvider: pulumi.dynamic.ResourceProvider }).hostStepProvider;
    }
    throw new Error(
      `nix-ssh-cache: cannot load the HostStep provider from ${process.cwd()}: tried ${tried.join(", ")}; run Pulumi in the project that uses nix-ssh-cache, with its node_modules installed`,
    );
  };
  /* eslint-enable @typescript-eslint/no-require-imports */
  return {
    create: async (inputs) => load().create(inputs),
    diff: async (id, olds, news) => load().diff!(id, olds, news),
    update: async (id, olds, news) => load().update!(id, olds, news),
    read: async (id, props) => load().read!(id, props),
    delete: async (id, props) => load().delete!(id, props),
  };
}

/** Whether this module is compiled JavaScript (as installed, or built by `npm run build`). */
const compiled = __filename.endsWith(".js");

/**
 * The provider given to Pulumi: the loader when this module is compiled; the provider itself,
 * serialized whole, when it runs from TypeScript sources (ts-node), whose `.ts` files the
 * provider process could not load.
 */
const providerOfState: pulumi.dynamic.ResourceProvider = compiled
  ? providerLoader(path.relative(process.cwd(), path.join(__dirname, "hostStepProvider.js")))
  : hostStepProvider;

/**
 * One idempotent, re-observable step on a host, typed by what its script reports (`R`). The
 * connection (with its private key) and the script body (compressed, see `packScript`) are
 * secret in the state; a diff shows the script's digest (in `spec`) instead of the body. `result`
 * is what the host reported and never holds private material.
 */
export class HostStep<R = Record<string, unknown>> extends pulumi.dynamic.Resource {
  /** The JSON object the step's script printed last. */
  declare public readonly result: pulumi.Output<R>;
  /** True when a refresh saw the host differ from the last apply (the next `up` repairs it). */
  declare public readonly drifted: pulumi.Output<boolean>;

  constructor(name: string, args: HostStepArgs, opts?: pulumi.CustomResourceOptions) {
    const script = pulumi.output(args.script);
    const spec = pulumi.unsecret(
      script.apply((body) =>
        encodeSpec({
          name,
          step: args.step,
          script: crypto.createHash("sha256").update(body).digest("hex").slice(0, 16),
          readable: args.readable ?? false,
          removable: args.removable ?? false,
          removeEnv: args.removeEnv ?? {},
          driftKeys: args.driftKeys ?? [],
          timeoutSeconds: args.timeoutSeconds ?? 300,
        }),
      ),
    );
    const props: pulumi.Inputs = {
      connection: args.connection,
      spec,
      // Without the package's lib.sh when the provider process loads it from the package.
      script: pulumi.secret(script.apply((body) => packScript(body, compiled))),
      env: args.env ?? {},
      triggers: args.triggers,
      result: undefined,
      drifted: undefined,
    };
    super(
      providerOfState,
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
