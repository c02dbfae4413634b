/**
 * Part 2: the tool's overhead. The example stack (Pulumi.yaml + index.ts) on the real Pulumi CLI
 * with 1, 4 and 8 production hosts: `up` from scratch, a no-op `preview`, a no-op `up`,
 * `preview --refresh`, and the no-op preview of an empty stack as the floor; the operations that
 * reach hosts run both with the provider's connection reuse and with one connection per step,
 * side by side. SSH logins per host per operation are counted in each host's sshd log.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PulumiStack, repoRoot } from "../tests/e2e/pulumi";
import { acceptedLogins, LoginCounts, loginsSince, TestHost } from "../tests/hosts/harness";
import { CpuByProcess } from "./cpu";
import { log, pulumiOk, TimedCli, withTimeout } from "./lib";
import { PreviewTimeline, timedPreview } from "./timeline";

const PROJECT = "nix-ssh-cache";

/** An operation measured on a stack. */
export type OpName =
  "up" | "up-once" | "preview" | "preview-checked" | "up-noop" | "preview-refresh" | "destroy";

/** Label of each operation in the report. */
export const OP_LABELS: Record<OpName, string> = {
  up: "`pulumi up` from scratch",
  "up-once":
    "`pulumi up` from scratch, state written once at the end (`PULUMI_SKIP_CHECKPOINTS=true`)",
  preview: "no-op `pulumi preview`",
  "preview-checked": "no-op `pulumi preview`, program type-checked by ts-node (before)",
  "up-noop": "no-op `pulumi up`",
  "preview-refresh": "`pulumi preview --refresh` (no drift)",
  destroy: "`pulumi destroy`",
};

const OP_ARGS: Record<OpName, string[]> = {
  up: ["up", "--yes", "--skip-preview"],
  "up-once": ["up", "--yes", "--skip-preview"],
  preview: ["preview", "--expect-no-changes"],
  "preview-checked": ["preview", "--expect-no-changes"],
  "up-noop": ["up", "--yes", "--skip-preview", "--expect-no-changes"],
  "preview-refresh": ["preview", "--refresh", "--expect-no-changes"],
  destroy: ["destroy", "--yes", "--skip-preview"],
};

/**
 * How the dynamic provider reaches hosts: `reuse` (the default: one pooled connection per host)
 * or `per-step` (one connection per step, as before the pool; `NIX_SSH_CACHE_CONNECTION_REUSE=0`).
 */
export type ConnectionMode = "reuse" | "per-step";

/** Label of each connection mode in the report. */
export const MODE_LABELS: Record<ConnectionMode, string> = {
  reuse: "one connection per host (default)",
  "per-step": "one connection per step (before)",
};

/** One measured operation. */
export interface OpRun {
  op: OpName;
  mode: ConnectionMode;
  hosts: number;
  round: number;
  seconds: number;
  /** Operator logins (root) on staging. */
  stagingLogins: number;
  /** Operator logins (root) on each production host of the stack, in order. */
  productionLogins: number[];
  /** Serve-user logins on staging (production verifying the cache). */
  serveLogins: number;
  /** Resources in the stack after the operation (from the CLI summary), when shown. */
  summary: string;
  /** Operator-side CPU seconds: the `pulumi` process and its children (Node.js program, providers). */
  cpuSeconds?: number;
  /** The same by process kind (sampled; see bench/cpu.ts). */
  cpuByProcess?: CpuByProcess;
}

/** Everything part 2 measured. */
export interface OverheadResults {
  runs: OpRun[];
  /** Seconds of each no-op preview of the empty stack. */
  emptyPreview: number[];
  /** Operator CPU seconds of each no-op preview of the empty stack. */
  emptyPreviewCpu: number[];
  /** The same by process kind. */
  emptyPreviewCpuByProcess: CpuByProcess[];
  /** Resources per stack size, after up. */
  resources: Record<number, number>;
  /** Where the wall time of a no-op preview goes, per stack size (one extra preview a pass). */
  timelines: Record<number, PreviewTimeline[]>;
  /** The same for the empty stack. */
  emptyTimelines: PreviewTimeline[];
}

function summaryOf(output: string): string {
  const lines = output.split("\n");
  const at = lines.findIndex((l) => /^Resources:\s*$/.test(l.trim()));
  if (at < 0) return "";
  const counts: string[] = [];
  for (const line of lines.slice(at + 1)) {
    const m = /^\s*[-+~±]?\s*(\d+ [a-z -]+?)\s*$/.exec(line);
    if (!m) break;
    counts.push(m[1]);
  }
  return counts.join(", ");
}

async function measured(
  stack: PulumiStack,
  op: OpName,
  mode: ConnectionMode,
  stage: TestHost,
  prods: TestHost[],
  round: number,
  timeoutSeconds: number,
): Promise<OpRun> {
  const snap = (): LoginCounts[] => [stage, ...prods].map(acceptedLogins);
  // Read by the dynamic provider process the CLI starts (components/ssh.ts).
  stack.env.NIX_SSH_CACHE_CONNECTION_REUSE = mode === "reuse" ? "1" : "0";
  // The example project transpiles only (tsconfig.json "ts-node"); "false" type-checks again.
  if (op === "preview-checked") stack.env.PULUMI_NODEJS_TRANSPILE_ONLY = "false";
  else delete stack.env.PULUMI_NODEJS_TRANSPILE_ONLY;
  // The file backend rewrites the whole state after every step; this measures `up` without
  // those rewrites (what Pulumi's service backend, which journals, does not pay either).
  if (op === "up-once") stack.env.PULUMI_SKIP_CHECKPOINTS = "true";
  else delete stack.env.PULUMI_SKIP_CHECKPOINTS;
  const before = snap();
  const r: TimedCli = await pulumiOk(stack, OP_ARGS[op], timeoutSeconds);
  const after = snap();
  const run: OpRun = {
    op,
    mode,
    hosts: prods.length,
    round,
    seconds: r.seconds,
    stagingLogins: loginsSince(before[0], after[0], "root"),
    productionLogins: prods.map((_, i) => loginsSince(before[i + 1], after[i + 1], "root")),
    serveLogins: loginsSince(before[0], after[0], "nix-ssh"),
    summary: summaryOf(r.output),
    cpuSeconds: r.cpuSeconds,
    cpuByProcess: r.cpuByProcess,
  };
  log(
    `${prods.length} hosts, round ${round}: ${op} (${mode}) ${r.seconds.toFixed(1)} s, CPU ${r.cpuSeconds?.toFixed(1)} s; logins staging ${run.stagingLogins}, production ${run.productionLogins.join("/")}${run.summary ? `; ${run.summary}` : ""}`,
  );
  return run;
}

/** A stack of the example project with `stage` and the given production hosts. */
export async function exampleStack(
  name: string,
  stage: TestHost,
  prods: TestHost[],
): Promise<PulumiStack> {
  const stack = new PulumiStack(repoRoot, name);
  await pulumiOk(stack, ["stack", "init", name], 60, { scope: "none" });
  const config = {
    staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
    production: prods.map((p) => ({ host: p.address, hostKey: p.hostKey, name: p.name })),
  };
  await withTimeout("pulumi config", 60, stack.setConfigObjects(config, PROJECT));
  await withTimeout(
    "pulumi config",
    60,
    stack.setConfig("sshKey", stage.privateKey, { secret: true }),
  );
  return stack;
}

/** An empty TypeScript program (imports @pulumi/pulumi, declares no resource). */
function emptyProject(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-bench-empty-"));
  fs.writeFileSync(
    path.join(dir, "Pulumi.yaml"),
    "name: bench-empty\nruntime:\n  name: nodejs\n  options:\n    typescript: true\nmain: index.ts\n",
  );
  fs.writeFileSync(path.join(dir, "package.json"), '{ "name": "bench-empty", "private": true }\n');
  fs.writeFileSync(
    path.join(dir, "index.ts"),
    'import * as pulumi from "@pulumi/pulumi";\n\nexport const stackName = pulumi.getStack();\n',
  );
  fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"));
  return dir;
}

/** Options of {@link overheadBench}. */
export interface OverheadOptions {
  hostCounts: number[];
  /** Passes over all host counts; a pass after the first runs only when time is left. */
  rounds: number;
  /** No-op previews and refreshes per stack lifecycle. */
  previews: number;
  /**
   * `up`s from scratch per stack lifecycle and connection mode (a `destroy` between two), for a
   * host count; the modes alternate.
   */
  upsFor: (hosts: number) => number;
  timeoutSeconds: number;
  /**
   * Also measure the landed changes' "before" side by side: one connection per step
   * (`NIX_SSH_CACHE_CONNECTION_REUSE=0`) and the type-checked program. Doubles the section's time.
   */
  beforeAfter: boolean;
  /** Seconds left in the whole bench's budget. */
  secondsLeft: () => number;
  /**
   * Called once, with the 1-host stack up (first pass): part 1 runs there. The 1-host stack
   * runs first (the substitution and network sections must not be the part a shortened run
   * loses); then the largest, then the others (a run cut short by its budget loses those).
   */
  withConfiguredStack?: (stage: TestHost, prod: TestHost) => Promise<void>;
}

/** The runs of `op` in `mode` with `hosts` production hosts (any host count when omitted). */
export function runsOf(
  o: OverheadResults,
  op: OpName,
  mode: ConnectionMode,
  hosts?: number,
): OpRun[] {
  return o.runs.filter(
    (r) => r.op === op && r.mode === mode && (hosts === undefined || r.hosts === hosts),
  );
}

/** An empty result, filled as the bench goes (a partial report still has what was measured). */
export function emptyOverhead(): OverheadResults {
  return {
    runs: [],
    emptyPreview: [],
    emptyPreviewCpu: [],
    emptyPreviewCpuByProcess: [],
    resources: {},
    timelines: {},
    emptyTimelines: [],
  };
}

/** Runs part 2: passes × host counts, each a fresh stack lifecycle; fills `results`. */
export async function overheadBench(
  stage: TestHost,
  prods: TestHost[],
  o: OverheadOptions,
  results: OverheadResults,
): Promise<void> {
  const { runs, emptyPreview, emptyPreviewCpu, emptyPreviewCpuByProcess, resources } = results;
  const emptyDir = emptyProject();
  const empty = new PulumiStack(emptyDir, "empty");
  // Smallest first (it carries the substitution and network sections), then largest to smallest,
  // so a run cut short by its budget loses the middle host counts first.
  const sorted = [...o.hostCounts].sort((a, b) => b - a);
  const order = [sorted[sorted.length - 1], ...sorted.slice(0, -1)];
  try {
    await pulumiOk(empty, ["stack", "init", "empty"], 60, { scope: "none" });
    fs.writeFileSync(empty.configFile, "config: {}\n");
    await pulumiOk(empty, ["up", "--yes", "--skip-preview"], o.timeoutSeconds);
    let hookDone = false;
    let passSeconds = 0;
    for (let round = 1; round <= o.rounds; round++) {
      if (round > 1 && o.secondsLeft() < passSeconds * 1.1) {
        log(`overhead: no time left for pass ${round} (a pass took ${passSeconds.toFixed(0)} s)`);
        break;
      }
      const passStart = Date.now();
      let hookSeconds = 0;
      for (let i = 0; i < o.previews; i++) {
        const r = await pulumiOk(empty, ["preview", "--expect-no-changes"], o.timeoutSeconds);
        emptyPreview.push(r.seconds);
        if (r.cpuSeconds !== undefined) emptyPreviewCpu.push(r.cpuSeconds);
        if (r.cpuByProcess) emptyPreviewCpuByProcess.push(r.cpuByProcess);
        log(
          `empty stack, round ${round}: preview ${r.seconds.toFixed(1)} s, CPU ${r.cpuSeconds?.toFixed(1)} s`,
        );
      }
      results.emptyTimelines.push(await timedPreview(empty, o.timeoutSeconds));
      for (const n of order) {
        const hostsOfStack = prods.slice(0, n);
        const stack = await exampleStack(`bench${n}r${round}`, stage, hostsOfStack);
        try {
          const m = (op: OpName, mode: ConnectionMode = "reuse") =>
            measured(stack, op, mode, stage, hostsOfStack, round, o.timeoutSeconds);
          // Both connection modes side by side, the first one alternating between passes:
          // up A, destroy B, up B, (destroy A, up A, destroy B, up B, ...) ... destroy A.
          // Without beforeAfter, only the default mode (one connection per host).
          const modes: ConnectionMode[] = !o.beforeAfter
            ? ["reuse"]
            : round % 2 === 1
              ? ["reuse", "per-step"]
              : ["per-step", "reuse"];
          for (let k = 0; k < modes.length * o.upsFor(n); k++) {
            if (k > 0) runs.push(await m("destroy", modes[k % modes.length]));
            runs.push(await m("up", modes[k % modes.length]));
            if (k === 0) {
              const state = JSON.parse(
                (await pulumiOk(stack, ["stack", "export"], 60, { scope: "stack" })).output,
              ) as { deployment?: { resources?: unknown[] } };
              resources[n] = state.deployment?.resources?.length ?? 0;
            }
          }
          // The same `up`, the state written once at the end instead of after every step.
          runs.push(await m("destroy", modes[(modes.length * o.upsFor(n) - 1) % modes.length]));
          runs.push(await m("up-once"));
          if (!hookDone && n === 1 && o.withConfiguredStack) {
            hookDone = true;
            const hookStart = Date.now();
            await o.withConfiguredStack(stage, hostsOfStack[0]);
            hookSeconds = (Date.now() - hookStart) / 1000;
          }
          // No SSH in these (diff is local): one connection mode is enough. The no-op preview
          // also runs with the program type-checked on every run, as before tsconfig.json's
          // "ts-node": { "transpileOnly": true }, side by side.
          for (let i = 0; i < o.previews; i++) {
            runs.push(await m("preview"));
            if (o.beforeAfter) runs.push(await m("preview-checked"));
          }
          // One more, with the engine's gRPC log: where its wall time goes (not in the medians).
          const timeline = await timedPreview(stack, o.timeoutSeconds);
          (results.timelines[n] ??= []).push(timeline);
          log(
            `${n} hosts, round ${round}: preview timeline: provider ready ${timeline.providerReady?.toFixed(2)} s, last diff ${timeline.lastDiff?.toFixed(2)} s, end ${timeline.end.toFixed(2)} s`,
          );
          runs.push(await m("up-noop"));
          for (let i = 0; i < o.previews; i++) {
            for (const mode of modes) runs.push(await m("preview-refresh", mode));
          }
          runs.push(await m("destroy", modes[0]));
        } finally {
          await stack.dispose().catch(() => undefined);
        }
      }
      passSeconds = (Date.now() - passStart) / 1000 - hookSeconds;
    }
  } finally {
    await empty.dispose().catch(() => undefined);
    fs.rmSync(emptyDir, { recursive: true, force: true });
  }
}
