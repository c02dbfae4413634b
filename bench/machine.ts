/**
 * The machine a benchmark ran on: CPU, memory, kernel, tool versions, load.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";

/** What the report says about the machine. */
export interface MachineInfo {
  date: string;
  nproc: number;
  cpuModel: string;
  aesNi: boolean;
  memory: string;
  kernel: string;
  nix: string;
  openssh: string;
  node: string;
  pulumi: string;
  loadAtStart: string;
}

function output(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n")[0] ?? "";
}

/** Reads the machine's description now. */
export function machineInfo(): MachineInfo {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    nproc: Number(output("nproc", [])) || os.cpus().length,
    cpuModel: model,
    aesNi: /^flags\s*:.*\baes\b/m.test(cpuinfo),
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    nix: output("nix-store", ["--version"]),
    openssh: output("ssh", ["-V"]),
    node: process.version,
    pulumi: output("pulumi", ["version"]),
    loadAtStart: os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
  };
}

/** The 1-minute load average now. */
export function loadNow(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
}
