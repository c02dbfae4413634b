/**
 * Where the wall time of one no-op `pulumi preview` goes, read from the engine's own gRPC log
 * (`PULUMI_DEBUG_GRPC=file`: every call between the CLI, the language host, the program's
 * resource monitor and the provider plugins, with its time): when the program started,
 * registered its stack and its first resource, when the dynamic provider answered its first
 * call, the last `Diff`, the program's end and the CLI's.
 *
 * The log holds the stack's configuration in the clear (the `Run` request), secrets included:
 * it is written to a private temporary directory and removed as soon as it is read.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PulumiStack } from "../tests/e2e/pulumi";
import { pulumiOk } from "./lib";

/** Seconds since the CLI started, of the events of one no-op preview. */
export interface PreviewTimeline {
  /** The language host was asked to run the program. */
  run?: number;
  /** The program's stack resource was registered (the Pulumi SDK loaded and connected). */
  stack?: number;
  /** The first resource the program declares was registered (its own code ran). */
  firstResource?: number;
  /** The dynamic provider's first answer (the engine's handshake with the started plugin). */
  providerReady?: number;
  /** The last `Diff` answered. */
  lastDiff?: number;
  /** `Check` and `Diff` calls to providers. */
  providerCalls: number;
  /** The program ended (`Run` answered). */
  runDone?: number;
  /** The CLI ended. */
  end: number;
}

/** One entry of the engine's gRPC log (the fields read here). */
interface GrpcLogEntry {
  method?: string;
  progress?: string;
  timestamp?: string;
  request?: { type?: string };
}

/**
 * The timeline of one run from its gRPC log (JSON lines). Entries without a usable time (the
 * monitor's own request starts carry none) are skipped.
 *
 * @param startMs - when the CLI was started (epoch ms)
 * @param endMs - when it ended (epoch ms)
 */
export function timelineOf(logText: string, startMs: number, endMs: number): PreviewTimeline {
  const t: PreviewTimeline = { providerCalls: 0, end: (endMs - startMs) / 1000 };
  const at = (e: GrpcLogEntry): number | undefined => {
    const ms = e.timestamp ? Date.parse(e.timestamp) : NaN;
    return Number.isFinite(ms) && ms >= startMs ? (ms - startMs) / 1000 : undefined;
  };
  for (const line of logText.split("\n")) {
    if (!line.trim()) continue;
    let e: GrpcLogEntry;
    try {
      e = JSON.parse(line) as GrpcLogEntry;
    } catch {
      continue; // a line cut short when the CLI exited
    }
    const s = at(e);
    if (s === undefined) continue;
    const method = e.method?.split("/").pop();
    const service = e.method?.split("/")[1];
    const done = e.progress === "response_completed";
    if (method === "Run" && !done) t.run ??= s;
    else if (method === "Run" && done) t.runDone = s;
    else if (method === "RegisterResource" && done && e.request?.type === "pulumi:pulumi:Stack")
      t.stack ??= s;
    else if (method === "RegisterResource" && done) t.firstResource ??= s;
    else if (service === "pulumirpc.ResourceProvider" && method === "Handshake" && !done)
      t.providerReady ??= s;
    else if (service === "pulumirpc.ResourceProvider" && done && method === "Diff") {
      t.lastDiff = s;
      t.providerCalls++;
    } else if (service === "pulumirpc.ResourceProvider" && done && method === "Check") {
      t.providerCalls++;
    }
  }
  return t;
}

/** One no-op preview of `stack` with the engine's gRPC log, and its timeline. */
export async function timedPreview(
  stack: PulumiStack,
  timeoutSeconds: number,
): Promise<PreviewTimeline> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-bench-grpc-"));
  const file = path.join(dir, "grpc.jsonl");
  stack.env.PULUMI_DEBUG_GRPC = file;
  try {
    const start = Date.now();
    await pulumiOk(stack, ["preview", "--expect-no-changes"], timeoutSeconds);
    const end = Date.now();
    return timelineOf(fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "", start, end);
  } finally {
    delete stack.env.PULUMI_DEBUG_GRPC;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
