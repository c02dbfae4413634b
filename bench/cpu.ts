/**
 * Where the operator's CPU goes while a `pulumi` command runs: its descendant processes, by kind
 * (the engine, the language host, the Node.js program, the dynamic provider), sampled from
 * `/proc/<pid>/stat` every few hundred milliseconds. Each process counts with the last CPU time
 * sampled, so a process that ends between two samples loses what it did since the last one (the
 * total from bash's `times` stays the reference; see `TimedCli.cpuSeconds`).
 */
import * as fs from "fs";

/** The processes of a `pulumi` command, by what they do. */
export type ProcessKind = "engine" | "program" | "provider" | "languageHost" | "other";

/** Label of each process kind in the report. */
export const PROCESS_LABELS: Record<ProcessKind, string> = {
  engine: "engine (`pulumi`)",
  program: "Node.js program",
  provider: "dynamic provider (Node.js)",
  languageHost: "language host",
  other: "other",
};

/** CPU seconds by process kind. */
export type CpuByProcess = Partial<Record<ProcessKind, number>>;

const TICKS_PER_SECOND = 100;

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime of the process itself, in seconds. */
  cpu: number;
}

function readStat(pid: number): ProcStat | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return {
      pid,
      ppid: Number(rest[1]),
      cpu: (Number(rest[11]) + Number(rest[12])) / TICKS_PER_SECOND,
    };
  } catch {
    return undefined;
  }
}

function kindOf(pid: number): ProcessKind | undefined {
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return undefined;
  }
  if (!cmdline) return undefined;
  if (/dynamic-provider/.test(cmdline)) return "provider";
  if (/@pulumi\/pulumi\/cmd\/run/.test(cmdline)) return "program";
  if (/pulumi-language-nodejs/.test(cmdline)) return "languageHost";
  if (/(^|\/)pulumi\s/.test(cmdline)) return "engine";
  return "other";
}

/** Samples the CPU of `rootPid`'s descendants until {@link stop}. */
export class ProcessCpuSampler {
  private readonly seen = new Map<number, { kind: ProcessKind; cpu: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly rootPid: number,
    intervalMs = 250,
  ) {
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    const stats = new Map<number, ProcStat>();
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const s = readStat(Number(entry));
      if (s) stats.set(s.pid, s);
    }
    for (const s of stats.values()) {
      let a: ProcStat | undefined = s;
      for (let depth = 0; a && a.pid !== this.rootPid && depth < 32; depth++) a = stats.get(a.ppid);
      if (!a || s.pid === this.rootPid) continue;
      const known = this.seen.get(s.pid);
      const kind = known?.kind ?? kindOf(s.pid);
      if (!kind) continue;
      this.seen.set(s.pid, { kind, cpu: Math.max(known?.cpu ?? 0, s.cpu) });
    }
  }

  /** Stops sampling (after a last sample) and returns the CPU seconds by process kind. */
  stop(): CpuByProcess {
    this.sample();
    clearInterval(this.timer);
    const byKind: CpuByProcess = {};
    for (const { kind, cpu } of this.seen.values()) byKind[kind] = (byKind[kind] ?? 0) + cpu;
    return byKind;
  }
}
