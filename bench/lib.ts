/**
 * Small helpers of the benchmarks: logging, medians, time bounds, the Pulumi CLI with a timeout.
 * (SSH login counts come from the test-host harness: `acceptedLogins`, `loginsSince`.)
 */
import { spawn } from "child_process";
import { PulumiStack } from "../tests/e2e/pulumi";
import { CpuByProcess, ProcessCpuSampler } from "./cpu";

const benchStart = Date.now();

/** Prints one progress line with the elapsed time of the whole run. */
export function log(text: string): void {
  const t = ((Date.now() - benchStart) / 1000).toFixed(0).padStart(4);
  process.stdout.write(`[bench ${t}s] ${text}\n`);
}

/** Seconds since the benchmark started. */
export function elapsedSeconds(): number {
  return (Date.now() - benchStart) / 1000;
}

/** A positive number from the environment, or the default. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw}: must be a number >= 0`);
  return n;
}

/** Median of the numbers (undefined for none). */
export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Median of what `pick` gives for the items that have it (undefined for none). */
export function medianOf<T>(items: T[], pick: (item: T) => number | undefined): number | undefined {
  return median(items.map(pick).filter((x): x is number => x !== undefined));
}

/** `1.23 s` (or `—`). */
export function fmtSeconds(s: number | undefined, digits = 2): string {
  return s === undefined ? "—" : `${s.toFixed(digits)} s`;
}

/** A number with a fixed count of digits (or `—`). */
export function fmt(n: number | undefined, digits = 1): string {
  return n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(digits);
}

/** `×1.23` (or `—`). */
export function fmtRatio(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? "—" : `×${n.toFixed(2)}`;
}

/** A Markdown table. */
export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** The result of one CLI run with a time bound. */
export interface TimedCli {
  code: number;
  output: string;
  seconds: number;
  timedOut: boolean;
  /**
   * CPU seconds (user + system) of the `pulumi` process and every process it waited for: the
   * language host, the Node.js program, the provider plugins (bash's `times` for its children).
   */
  cpuSeconds?: number;
  /** The same CPU by process kind (engine, program, provider, ...), sampled from /proc. */
  cpuByProcess?: CpuByProcess;
}

/** Sums the children's line of bash's `times` ("0m1.250s 0m0.300s"). */
export function parseTimes(text: string): number | undefined {
  const line = text.trim().split("\n")[1];
  if (!line) return undefined;
  let total = 0;
  for (const m of line.matchAll(/(\d+)m([\d.]+)s/g)) total += Number(m[1]) * 60 + Number(m[2]);
  return total;
}

/**
 * `pulumi <args>` for a stack, like {@link PulumiStack.run}, but killed (its whole process
 * group) after `timeoutSeconds`.
 */
export function pulumiTimed(
  stack: PulumiStack,
  args: string[],
  timeoutSeconds: number,
  opts: { stdin?: string; scope?: "config" | "stack" | "none" } = {},
): Promise<TimedCli> {
  const full = [...args, "--non-interactive", "--cwd", stack.projectDir];
  const scope = opts.scope ?? "config";
  if (scope !== "none") full.push("--stack", stack.stack);
  if (scope === "config") full.push("--config-file", stack.configFile);
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    // bash runs pulumi and reports its children's CPU time on fd 3.
    const child = spawn(
      "bash",
      ["-c", 'pulumi "$@"; rc=$?; times >&3; exit $rc', "bash", ...full],
      { env: stack.env, stdio: ["pipe", "pipe", "pipe", "pipe"], detached: true },
    );
    const sampler = child.pid ? new ProcessCpuSampler(child.pid) : undefined;
    let times = "";
    (child.stdio[3] as NodeJS.ReadableStream | null)?.on(
      "data",
      (d: Buffer) => (times += d.toString()),
    );
    let output = "";
    let timedOut = false;
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }, timeoutSeconds * 1000);
    child.on("error", (e) => {
      clearTimeout(timer);
      sampler?.stop();
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const cpuByProcess = sampler?.stop();
      resolve({
        code: code ?? 1,
        output,
        seconds,
        timedOut,
        cpuSeconds: parseTimes(times),
        cpuByProcess,
      });
    });
    child.stdin?.end(opts.stdin ?? "");
  });
}

/** Runs `pulumi <args>` with a time bound and throws with the output's tail when it fails. */
export async function pulumiOk(
  stack: PulumiStack,
  args: string[],
  timeoutSeconds: number,
  opts: { stdin?: string; scope?: "config" | "stack" | "none" } = {},
): Promise<TimedCli> {
  const r = await pulumiTimed(stack, args, timeoutSeconds, opts);
  if (r.timedOut) {
    throw new Error(`pulumi ${args.join(" ")} timed out after ${timeoutSeconds}s`);
  }
  if (r.code !== 0) {
    throw new Error(`pulumi ${args.join(" ")} exited ${r.code}:\n${r.output.slice(-4000)}`);
  }
  return r;
}

/** Rejects after `seconds` (labelled), or resolves/rejects with the promise. */
export async function withTimeout<T>(label: string, seconds: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${label}: timed out after ${seconds}s`)),
      seconds * 1000,
    );
  });
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}
