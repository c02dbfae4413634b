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
import * as fs from "fs";
import { createRequire } from "module";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { encodeSpec, hostStepProvider, isPackagedScript, packScript } from "./hostStepProvider";
import { digest, packagedFileRef } from "./remoteScripts";
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
  /**
   * Result keys that hold a trust anchor (a value every production host trusts): a refresh
   * that sees another value fails naming both, and only a change of the step's inputs or of the
   * connection's host key lets an apply take another (see `StepSpec.anchorKeys`).
   * @defaultValue `[]`
   */
  anchorKeys?: string[];
  /**
   * Result key listing the host's own SSH host keys: the key the connection verified must be
   * one of them. @defaultValue none
   */
  hostKeysKey?: string;
  /** Values whose change re-runs the step. @defaultValue `[]` */
  triggers?: pulumi.Input<pulumi.Input<string>[]>;
  /** Timeout of one run, in seconds. @defaultValue `300` */
  timeoutSeconds?: number;
}

/** The compiled provider module by package name, as the provider process resolves it. */
const PROVIDER_MODULE = "nix-ssh-cache/build/components/hostStepProvider.js";

/**
 * The text Pulumi stores as HostStep's dynamic provider (`__provider`, in every step's inputs
 * and outputs) and the dynamic provider process loads: a loader that `require`s the compiled
 * provider module (hostStepProvider.js) there and hands Pulumi its `hostStepProvider`.
 *
 * `pulumi.dynamic.Resource` would instead run Pulumi's closure serializer on the provider, which
 * walks, by value, every function and module it reaches from a local file: the whole SSH client
 * (ssh.ts) and the part of `ssh2` it reaches, about 35 KB in every step's state, and a large
 * part of the program's CPU on every run (the serializer inspects the functions through the V8
 * inspector and parses them with TypeScript). The loader is a few hundred bytes of plain
 * JavaScript and needs no serializer: {@link HostStep} passes it as `__provider` under the type
 * token `dynamic.Resource` uses, `pulumi-nodejs:dynamic/nix-ssh-cache:HostStep`, which the
 * provider process loads as it loads a serialized provider (`require` of the text, then its
 * `handler()`, once per process).
 *
 * The provider process runs in the program's directory (its `cwd`), as the program does, and
 * finds the module there by package name, `nix-ssh-cache/build/components/hostStepProvider.js`
 * (npm's `node_modules`, or this repository itself through package.json `exports`). Only when
 * that name does not lead from the program's directory to this very module is the module's path
 * relative to that directory (`moduleFromCwd`) tried first. Delete, read and refresh of an
 * existing step thus run the installed version of the provider, as a provider plugin would (the
 * provider reads the states of earlier versions, see `specOf`).
 *
 * The text is compact (under 400 bytes): Pulumi stores it twice in every step's state and
 * rewrites the whole state after each step of an `up`.
 *
 * @param moduleFromCwd - the compiled provider module, relative to the program's directory
 */
export function providerText(moduleFromCwd?: string): string {
  const local =
    moduleFromCwd === undefined || /^\.{0,2}\//.test(moduleFromCwd)
      ? moduleFromCwd
      : `./${moduleFromCwd}`;
  const tried = JSON.stringify(local === undefined ? [PROVIDER_MODULE] : [local, PROVIDER_MODULE]);
  return (
    `exports.handler=()=>{const m=require("module").createRequire(process.cwd()+"/"),t=${tried};` +
    "for(const c of t)try{return m(m.resolve(c)).hostStepProvider}catch(e){if(c===t.at(-1))" +
    'throw Error(`nix-ssh-cache, in ${process.cwd()}: ${e.message.split("\\n")[0]}; run Pulumi in the project that uses nix-ssh-cache, with its node_modules`)}};\n'
  );
}

/**
 * The loader of {@link providerText} for this module: by package name when that name leads
 * from the program's directory here, else with this module's path too.
 */
function loaderOfThisModule(): string {
  const self = path.join(__dirname, "hostStepProvider.js");
  try {
    // As the loader resolves it: from the program's directory (`require.resolve` with `paths`
    // would find this package from here by its own name, whatever the directory).
    const found = createRequire(process.cwd() + "/").resolve(PROVIDER_MODULE);
    if (fs.realpathSync(found) === fs.realpathSync(self)) return providerText();
  } catch {
    // not found by name from there: the path below
  }
  return providerText(path.relative(process.cwd(), self));
}

/** Whether this module is compiled JavaScript (as installed, or built by `npm run build`). */
const compiled = __filename.endsWith(".js");

let providerOfState: pulumi.Output<string> | string | undefined;

/**
 * The provider text of every step: the loader when this module is compiled; the provider itself,
 * serialized whole by Pulumi's closure serializer (once per program), when it runs from
 * TypeScript sources (ts-node), whose `.ts` files the provider process could not load.
 */
function providerOfSteps(): pulumi.Output<string> | string {
  providerOfState ??= compiled
    ? loaderOfThisModule()
    : pulumi.output(
        pulumi.runtime
          .serializeFunction(() => hostStepProvider, { allowSecrets: true })
          .then((s) => s.text),
      );
  return providerOfState;
}

/**
 * A text input of a step as it goes into the state: one of the package's files
 * (`nix-ssh-cache-fetch.pl`, 9.8 KB, twice in the state of every production host's step) by name
 * and digest when the provider process loads the package (see `packagedFileRef`), else the text.
 * The provider puts the file back before the step runs (`envOf` in hostStepProvider.ts).
 */
export function packedText(text: string): string {
  return (compiled && packagedFileRef(text)) || text;
}

/**
 * One idempotent, re-observable step on a host, typed by what its script reports (`R`). The
 * connection (with its credentials, even when given as plain strings) is secret in the state's
 * inputs and outputs, and so is a script body other than one of the package's own (compressed,
 * see `packScript`); a diff shows the script's digest (in
 * `spec`) instead of the body. `result` is what the host reported and never holds private
 * material.
 */
export class HostStep<R = Record<string, unknown>> extends pulumi.CustomResource {
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
          script: digest(body),
          readable: args.readable ?? false,
          removable: args.removable ?? false,
          removeEnv: args.removeEnv ?? {},
          driftKeys: args.driftKeys ?? [],
          anchorKeys: args.anchorKeys ?? [],
          ...(args.hostKeysKey ? { hostKeysKey: args.hostKeysKey } : {}),
          timeoutSeconds: args.timeoutSeconds ?? 300,
        }),
      ),
    );
    // One of the package's own host scripts is stored by name, in the clear (it holds nothing
    // of the user's); another body is stored packed and secret.
    const stored = typeof args.script === "string" ? packScript(args.script, compiled) : undefined;
    const packaged = stored !== undefined && isPackagedScript(stored) ? stored : undefined;
    const props: pulumi.Inputs = {
      __provider: providerOfSteps(),
      // Secret as an input too: `additionalSecretOutputs` covers only the outputs, and a key or
      // password given as a plain string would otherwise be stored in the clear.
      connection: pulumi.secret(args.connection),
      spec,
      // Without the package's lib.sh when the provider process loads it from the package.
      script:
        packaged ?? pulumi.secret(stored ?? script.apply((body) => packScript(body, compiled))),
      env: args.env ?? {},
      triggers: args.triggers,
      result: undefined,
      drifted: undefined,
    };
    const restore = plainStackTraces();
    try {
      // The type token and `__provider` of `pulumi.dynamic.Resource` (see providerText).
      super("pulumi-nodejs:dynamic/nix-ssh-cache:HostStep", name, props, {
        ...opts,
        additionalSecretOutputs: [
          "connection",
          ...(packaged ? [] : ["script"]),
          ...(opts?.additionalSecretOutputs ?? []),
        ],
      });
    } finally {
      restore();
    }
  }
}

/** Where this package's modules and the Pulumi SDK's are (see {@link plainStackTraces}). */
const ownDirs = [
  __dirname + path.sep,
  path.dirname(require.resolve("@pulumi/pulumi/package.json")) + path.sep,
];

/**
 * Formats stacks plainly, and only up to the program's own frame, until the returned function
 * is called (it restores the formatter in place before).
 *
 * Registering a resource, the Pulumi SDK reads whole stacks: `Resource.callsites` (the resource's
 * source position and its stack trace, every frame, which go into the state) and one per promise
 * it wraps (`debuggablePromise`, one per output property and more). Under ts-node, which a
 * TypeScript program runs with, `Error.prepareStackTrace` is `@cspotcode/source-map-support`,
 * which copies and maps every frame (a 1-host no-op preview, 25 resources: the program's CPU
 * 2.69 s with it, 2.49 s without, medians of 6 interleaved runs). While a step registers, a
 * stack is formatted as V8 does it, up to and including the first frame outside this package
 * and the Pulumi SDK: the program's own line that led to the step (module loading and Pulumi's
 * runner below it are left out: 7 frames instead of 18 in every step's state). The source
 * position Pulumi records for a step then points into this package's compiled JavaScript, as it
 * does for an installed package anyway (it ships no source maps), and the program's frame is a
 * position in ts-node's JavaScript output rather than in the TypeScript source.
 */
function plainStackTraces(): () => void {
  const error = Error as { prepareStackTrace?: unknown };
  const formatter = error.prepareStackTrace;
  error.prepareStackTrace = (e: Error, frames: NodeJS.CallSite[]): string => {
    const program = frames.findIndex((f) => {
      const file = f.getFileName();
      return !!file && path.isAbsolute(file) && !ownDirs.some((d) => file.startsWith(d));
    });
    const kept = program < 0 ? frames : frames.slice(0, program + 1);
    return `${Error.prototype.toString.call(e)}${kept.map((f) => `\n    at ${String(f)}`).join("")}`;
  };
  return () => {
    error.prepareStackTrace = formatter;
  };
}
