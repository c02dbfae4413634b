/**
 * Renders `bench/results.md` from the measurements.
 */
import { ReuseResults, STRATEGIES } from "./connections";
import { CpuByProcess, PROCESS_LABELS, ProcessKind } from "./cpu";
import { fmt, fmtRatio, fmtSeconds, median, medianOf, table } from "./lib";
import { MachineInfo } from "./machine";
import {
  ConnectionMode,
  MODE_LABELS,
  OP_LABELS,
  OpName,
  OpRun,
  OverheadResults,
  runsOf,
} from "./overhead";
import { NetworkResults } from "./network";
import { compressionSection, networkProposals, networkSection } from "./networkReport";
import { FallbackResults, fallbackSection } from "./fallback";
import { proposals } from "./proposals";
import { PreviewTimeline } from "./timeline";
import { medianRoundRatio, medianSeconds, Run, SubstitutionResults } from "./substitution";

/** Inputs of the report. */
export interface Report {
  machine: MachineInfo;
  loadAtEnd: string;
  totalSeconds: number;
  firstAddress: number;
  substitution?: SubstitutionResults;
  overhead?: OverheadResults;
  reuse?: ReuseResults;
  network?: NetworkResults;
  fallback?: FallbackResults;
  errors: string[];
}

function runsCell(runs: Run[] | undefined): string {
  const all = runs ?? [];
  const ok = all.filter((r) => r.ok).length;
  const failed = all.find((r) => !r.ok);
  return failed ? `${ok}/${all.length}; ${failed.error}` : `${ok}/${all.length}`;
}

function substitutionSection(s: SubstitutionResults): string {
  const out: string[] = ["## 1. Substitution", ""];
  out.push(
    `Staging (configured by the example stack's \`pulumi up\`) built each closure; production` +
      ` (\`prod1\`, same stack) then realised it in ${s.rounds} round(s), all variants side by` +
      " side in each round (`compress=true` and `max-connections=8` in the first round only)," +
      " its copies deleted (`nix-store --delete`) before every run." +
      ` Each derivation burns ${s.sizes.work.toLocaleString("en")} \`sh\` loop iterations of CPU` +
      ` and writes \`/dev/urandom\` bytes (incompressible). MB = 10^6 bytes of NAR` +
      ` (\`nix-store -q --size\`). Times are medians; ratios are medians of per-round ratios.` +
      ` "vs raw" = raw-stream time / variant time (1.00 = at the physical limit); "vs raw, same` +
      ` cipher" compares AES-GCM variants with the AES-GCM raw stream. Connections = serve-user` +
      ` logins in staging's sshd log per run (root for the raw stream).`,
    "",
  );
  for (const c of s.closures) {
    const runs = s.runs[c.shape.attr] ?? {};
    out.push(
      `### ${c.shape.title}`,
      "",
      `${c.paths.length} paths, ${(c.narBytes / 1e6).toFixed(1)} MB NAR; staging built it in` +
        ` ${c.stagingBuildSeconds.toFixed(1)} s.`,
      "",
    );
    const rows = s.variants.map((v) => {
      const vr = runs[v.id];
      const t = medianSeconds(vr);
      const sameCipherRaw = v.aes ? runs["raw-aes"] : runs.raw;
      return [
        v.label,
        fmtSeconds(t),
        t ? fmt(c.narBytes / 1e6 / t, 1) : "—",
        t ? fmt(c.paths.length / t, 1) : "—",
        v.id === "raw"
          ? "1.00"
          : fmt(
              medianRoundRatio(vr, runs.raw, (a, raw) => raw / a),
              2,
            ),
        v.aes && v.kind !== "raw"
          ? fmt(
              medianRoundRatio(vr, sameCipherRaw, (a, raw) => raw / a),
              2,
            )
          : "",
        v.kind === "local"
          ? "1.00"
          : v.kind === "raw"
            ? ""
            : fmtRatio(medianRoundRatio(vr, runs.local, (a, local) => local / a)),
        fmt(median((vr ?? []).map((r) => r.connections)), 0),
        runsCell(vr),
      ];
    });
    out.push(
      table(
        [
          "variant",
          "time",
          "MB/s",
          "paths/s",
          "vs raw",
          "vs raw, same cipher",
          "speed-up over local build",
          "connections",
          "runs ok",
        ],
        rows,
      ),
      "",
    );
  }
  return out.join("\n");
}

const OPS: OpName[] = [
  "up",
  "up-once",
  "preview",
  "preview-checked",
  "up-noop",
  "preview-refresh",
  "destroy",
];
/** The operations that reach hosts, measured in both connection modes. */
const SSH_OPS: OpName[] = ["up", "preview-refresh", "destroy"];
const MODES: ConnectionMode[] = ["reuse", "per-step"];

/** Median CPU seconds of `kind` over the samples that have it. */
function medianKind(samples: CpuByProcess[], kind: ProcessKind): number | undefined {
  return medianOf(samples, (c) => c[kind]);
}

/** Where the operator CPU of `up` and the no-op `preview` goes, by process (bench/cpu.ts). */
function cpuByProcessSection(o: OverheadResults, counts: number[]): string[] {
  const lines: { label: string; samples: CpuByProcess[] }[] = [];
  for (const op of ["up", "up-once", "preview"] as OpName[]) {
    for (const n of counts) {
      const samples = runsOf(o, op, "reuse", n).flatMap((r) => r.cpuByProcess ?? []);
      if (samples.length) lines.push({ label: `${OP_LABELS[op]}, ${n} host(s)`, samples });
    }
  }
  if (o.emptyPreviewCpuByProcess.length) {
    lines.push({
      label: "empty stack: no-op `pulumi preview`",
      samples: o.emptyPreviewCpuByProcess,
    });
  }
  // The kinds that used CPU somewhere.
  const kinds = (
    ["engine", "program", "provider", "languageHost", "other"] as ProcessKind[]
  ).filter((k) => lines.some((l) => (medianKind(l.samples, k) ?? 0) >= 0.005));
  if (!lines.length) return [];
  const rows = lines.map((l) => [
    l.label,
    ...kinds.map((k) => fmtSeconds(medianKind(l.samples, k) ?? 0, 2)),
  ]);
  return [
    "Where that CPU goes, by process (medians; sampled from `/proc` every 250 ms, so a process" +
      " loses what it did after its last sample; the engine's share of an `up` grows with the" +
      " state's size, which Pulumi writes whole after every step):",
    "",
    table(["operation", ...kinds.map((k) => PROCESS_LABELS[k])], rows),
    "",
  ];
}

/** Where the wall time of a no-op preview goes (bench/timeline.ts), against the empty stack. */
function timelineSection(o: OverheadResults, counts: number[]): string[] {
  const lines: { label: string; ts: PreviewTimeline[] }[] = [
    { label: "empty stack (floor)", ts: o.emptyTimelines },
    ...counts.map((n) => ({ label: `${n} host${n > 1 ? "s" : ""}`, ts: o.timelines[n] ?? [] })),
  ].filter((l) => l.ts.length > 0);
  if (!lines.length) return [];
  const events: [string, (t: PreviewTimeline) => number | undefined][] = [
    ["program started", (t) => t.run],
    ["stack registered", (t) => t.stack],
    ["first resource", (t) => t.firstResource],
    ["dynamic provider ready", (t) => t.providerReady],
    ["last `Diff`", (t) => t.lastDiff],
    ["program done", (t) => t.runDone],
    ["CLI done", (t) => t.end],
  ];
  const rows = lines.map((l) => [
    `${l.label} (n=${l.ts.length})`,
    ...events.map(([, pick]) => fmtSeconds(medianOf(l.ts, pick), 2)),
    fmt(
      medianOf(l.ts, (t) => t.providerCalls),
      0,
    ),
  ]);
  const out = [
    "Where the wall time of a no-op `preview` goes: one more preview per stack and pass, with" +
      " the engine's gRPC log (`PULUMI_DEBUG_GRPC`; not in the medians above), seconds since" +
      " the CLI started (medians). The program declares its first resource once its own code" +
      " has loaded; the engine starts Pulumi's Node.js dynamic-provider plugin when the first" +
      " step arrives, and answers each step only after that plugin's `Check` and `Diff`; a step" +
      " that depends on another is sent only once that one is answered:",
    "",
    table(["stack", ...events.map(([label]) => label), "`Check` + `Diff` calls"], rows),
    "",
  ];
  const one = o.timelines[counts[0]] ?? [];
  const first = medianOf(one, (t) => t.firstResource);
  const ready = medianOf(one, (t) => t.providerReady);
  const last = medianOf(one, (t) => t.lastDiff);
  const end = medianOf(one, (t) => t.end);
  const floorEnd = medianOf(o.emptyTimelines, (t) => t.end);
  if (first !== undefined && ready !== undefined && last !== undefined && end !== undefined) {
    out.push(
      `With ${counts[0]} host, of the ${fmtSeconds(end, 2)}: the program waits` +
        ` ${fmtSeconds(ready - first, 2)} from its first resource for the dynamic provider to` +
        ` start, then ${fmtSeconds(last - ready, 2)} for the chain of dependent steps' checks` +
        ` and diffs` +
        (floorEnd !== undefined
          ? `; the empty stack's whole preview takes ${fmtSeconds(floorEnd, 2)}.`
          : "."),
      "",
    );
  }
  return out;
}

function overheadSection(o: OverheadResults): string {
  const counts = [...new Set(o.runs.map((r) => r.hosts))].sort((a, b) => a - b);
  const maxN = counts[counts.length - 1];
  const minN = counts[0];
  const of = (op: OpName, n: number, mode: ConnectionMode) => runsOf(o, op, mode, n);
  const med = (op: OpName, n: number, mode: ConnectionMode = "reuse") =>
    median(of(op, n, mode).map((r) => r.seconds));
  const floor = median(o.emptyPreview);
  const out: string[] = ["## 2. The tool's overhead", ""];
  out.push(
    "The example stack (`Pulumi.yaml` + `index.ts`, TypeScript, `NixSshCache`) on the real Pulumi" +
      " CLI with a local file backend; staging + N production hosts, a fresh stack per host count" +
      " (`up --yes --skip-preview`: the update alone; a user's interactive `pulumi up` adds a" +
      " preview). " +
      (o.runs.some((r) => r.mode === "per-step")
        ? "The operations that reach hosts (`up`, `preview --refresh`, `destroy`) run in" +
          " both connection modes of the dynamic provider, side by side on the same stack: one" +
          " pooled connection per host (the default) and one connection per step" +
          " (`NIX_SSH_CACHE_CONNECTION_REUSE=0`, the behaviour before it); the mode that goes" +
          " first alternates between passes."
        : "The provider runs in its default connection mode (one pooled connection per host);" +
          " `NSC_BENCH_BEFORE_AFTER=1` adds one connection per step and the type-checked" +
          " program side by side.") +
      " Medians of n samples. No-op operations run with" +
      " `--expect-no-changes` (they would fail on a change)." +
      ` Resources in the stack: ${counts.map((n) => `${o.resources[n] ?? "?"} with ${n} host(s)`).join(", ")}.` +
      ` The floor is the no-op \`pulumi preview\` of an empty TypeScript stack (imports` +
      ` \`@pulumi/pulumi\`, declares nothing): ${fmtSeconds(floor)} (median of ${o.emptyPreview.length}).`,
    "",
  );
  const rows: string[][] = [];
  for (const op of OPS) {
    for (const mode of SSH_OPS.includes(op) ? MODES : (["reuse"] as ConnectionMode[])) {
      if (counts.every((n) => of(op, n, mode).length === 0)) continue;
      rows.push([
        OP_LABELS[op] + (SSH_OPS.includes(op) ? `, ${MODE_LABELS[mode]}` : ""),
        ...counts.map((n) => `${fmtSeconds(med(op, n, mode), 1)} (n=${of(op, n, mode).length})`),
        fmtRatio(ratio(med(op, maxN, mode), med(op, minN, mode))),
        fmtRatio(ratio(med(op, minN, mode), floor)),
      ]);
    }
  }
  rows.push([
    "empty stack: no-op `pulumi preview` (floor)",
    ...counts.map(() => fmtSeconds(floor, 1)),
    "",
    "×1.00",
  ]);
  out.push(
    table(
      [
        "operation",
        ...counts.map((n) => `${n} host${n > 1 ? "s" : ""}`),
        `${maxN}:${minN} hosts`,
        `${minN} host vs floor`,
      ],
      rows,
    ),
    "",
  );

  // Operator-side CPU next to wall time (issue 15).
  const cpu = (op: OpName, n: number, mode: ConnectionMode = "reuse") =>
    medianOf(of(op, n, mode), (r) => r.cpuSeconds);
  const cpuOps: OpName[] = ["up", "up-once", "preview", "up-noop", "preview-refresh", "destroy"];
  const cpuRows = cpuOps
    .filter((op) => counts.some((n) => cpu(op, n) !== undefined))
    .map((op) => [
      OP_LABELS[op],
      ...counts.map((n) => `${fmtSeconds(cpu(op, n), 1)} / ${fmtSeconds(med(op, n), 1)}`),
      fmtRatio(ratio(cpu(op, maxN), cpu(op, minN))),
    ]);
  const cpuFloor = median(o.emptyPreviewCpu);
  if (cpuFloor !== undefined) {
    cpuRows.push([
      "empty stack: no-op `pulumi preview` (floor)",
      ...counts.map(() => `${fmtSeconds(cpuFloor, 1)} / ${fmtSeconds(floor, 1)}`),
      "",
    ]);
  }
  if (cpuRows.length) {
    out.push(
      "Operator-side CPU seconds (user + system of the `pulumi` process and every process it" +
        " waited for: language host, Node.js program, provider plugins; from bash's `times`)" +
        " next to wall time, connection reuse on; the hosts' own work (sshd, Nix, scripts) is" +
        " not in it but shares the same 2 cores:",
      "",
      table(
        [
          "operation: CPU / wall",
          ...counts.map((n) => `${n} host${n > 1 ? "s" : ""}`),
          `CPU ${maxN}:${minN} hosts`,
        ],
        cpuRows,
      ),
      "",
      `No-op \`preview\` against the empty-stack floor, ${minN} host: wall` +
        ` ${fmtRatio(ratio(med("preview", minN), floor))}, CPU` +
        ` ${fmtRatio(ratio(cpu("preview", minN), cpuFloor))}; \`up\` CPU ${maxN}:${minN} hosts` +
        ` ${fmtRatio(ratio(cpu("up", maxN), cpu("up", minN)))} (wall` +
        ` ${fmtRatio(ratio(med("up", maxN), med("up", minN)))}); with the state written once` +
        ` at the end, ${fmtRatio(ratio(cpu("up-once", maxN), cpu("up-once", minN)))}.`,
      "",
    );
  }
  out.push(...cpuByProcessSection(o, counts));
  out.push(...timelineSection(o, counts));

  // Before / after: the same operation, same stack, measured side by side.
  const loginsOf = (rs: typeof o.runs) => median(rs.flatMap((r) => r.productionLogins));
  const pairs: { label: string; before: OpRun[]; after: OpRun[]; n: number }[] = [];
  for (const n of counts) {
    pairs.push({
      label: "no-op `pulumi preview`: type-checked → transpile-only",
      before: of("preview-checked", n, "reuse"),
      after: of("preview", n, "reuse"),
      n,
    });
  }
  for (const op of SSH_OPS) {
    for (const n of counts) {
      pairs.push({
        label: `${OP_LABELS[op]}: one connection per step → per host`,
        before: of(op, n, "per-step"),
        after: of(op, n, "reuse"),
        n,
      });
    }
  }
  const baRows: string[][] = [];
  for (const p of pairs) {
    if (p.before.length === 0 || p.after.length === 0) continue;
    const b = median(p.before.map((r) => r.seconds));
    const a = median(p.after.map((r) => r.seconds));
    baRows.push([
      p.label,
      String(p.n),
      fmtSeconds(b, 1),
      fmtSeconds(a, 1),
      fmtRatio(ratio(b, a)),
      `${fmt(median(p.before.map((r) => r.stagingLogins)), 0)} → ${fmt(median(p.after.map((r) => r.stagingLogins)), 0)}`,
      `${fmt(loginsOf(p.before), 0)} → ${fmt(loginsOf(p.after), 0)}`,
    ]);
  }
  if (baRows.length) {
    out.push(
      "### Before / after: the changes that landed",
      "",
      "The same operations on the same stacks, measured side by side in this run. Connection" +
        " reuse: before = one SSH connection per step (`NIX_SSH_CACHE_CONNECTION_REUSE=0`), after" +
        " = one pooled connection per host (`components/ssh.ts`). Transpile-only: before = ts-node" +
        " type-checks the program on every Pulumi operation (`PULUMI_NODEJS_TRANSPILE_ONLY=false`)," +
        ' after = `"ts-node": { "transpileOnly": true }` in tsconfig.json (`npm run build` and' +
        " `npm run lint` still type-check). Speed-up = before / after. Logins = the operator's" +
        " (root) logins on the host during the operation (median production host).",
      "",
      table(
        [
          "operation",
          "hosts",
          "before",
          "after",
          "speed-up",
          "staging logins before → after",
          "logins per production host before → after",
        ],
        baRows,
      ),
      "",
    );
  }

  out.push(
    "SSH logins opened by the operator (root) per host per operation (from each host's" +
      ' `/var/log/sshd.log`, "Accepted publickey" lines before/after; median over rounds;' +
      " production = the median production host, min–max across hosts in brackets when they" +
      " differ), and the production hosts' `nix-ssh` logins on staging (the verify step's" +
      " substitutions):",
    "",
  );
  const loginRows: string[][] = [];
  for (const op of OPS) {
    for (const mode of MODES) {
      for (const n of counts) {
        const rs = of(op, n, mode);
        if (rs.length === 0) continue;
        const perHost = rs.flatMap((r) => r.productionLogins);
        const lo = Math.min(...perHost);
        const hi = Math.max(...perHost);
        loginRows.push([
          OP_LABELS[op],
          SSH_OPS.includes(op) ? MODE_LABELS[mode] : "",
          String(n),
          fmt(median(rs.map((r) => r.stagingLogins)), 0),
          `${fmt(median(perHost), 0)}${lo !== hi ? ` (${lo}–${hi})` : ""}`,
          fmt(median(rs.map((r) => r.serveLogins)), 0),
          fmt(
            median(rs.map((r) => r.stagingLogins + r.productionLogins.reduce((a, b) => a + b, 0))),
            0,
          ),
        ]);
      }
    }
  }
  out.push(
    table(
      [
        "operation",
        "connections",
        "hosts",
        "staging",
        "per production host",
        "nix-ssh on staging",
        "operator total",
      ],
      loginRows,
    ),
    "",
  );
  return out.join("\n");
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

function reuseSection(r: ReuseResults): string {
  const counts = [...new Set(r.runs.map((x) => x.hosts))].sort((a, b) => a - b);
  const med = (s: string, n: number) =>
    median(r.runs.filter((x) => x.strategy === s && x.hosts === n).map((x) => x.seconds));
  const logins = (s: string, n: number) =>
    median(r.runs.filter((x) => x.strategy === s && x.hosts === n).map((x) => x.loginsPerHost));
  const labels: Record<string, string> = {
    "per-step": "one connection per script (`reuse: false`, before)",
    reuse: "pooled: one connection per host, one channel per script (default)",
  };
  const rows = STRATEGIES.map((s) => [
    labels[s] ?? s,
    ...counts.map((n) => `${fmtSeconds(med(s, n), 3)} (${fmt(logins(s, n), 0)} logins/host)`),
    ...counts.map((n) => fmtRatio(ratio(med("per-step", n), med(s, n)))),
  ]);
  return [
    "## 3. Connection reuse in isolation (bench/connections.ts)",
    "",
    `The ${r.steps} host scripts a \`preview --refresh\` runs per production host (probe, root` +
      " key, the three managed files, the NixOS module step that only reports `skipped` on Linux)," +
      " run by the component's own `runScript` from this process, without the Pulumi engine," +
      " concurrently like the engine issues them; on 1 host and on all production hosts at once;" +
      ` ${r.rounds} interleaved rounds, medians; the pool is emptied after every run.`,
    "",
    table(
      [
        "strategy",
        ...counts.map((n) => `${n} host${n > 1 ? "s" : ""}`),
        ...counts.map((n) => `speed-up, ${n} host${n > 1 ? "s" : ""}`),
      ],
      rows,
    ),
    "",
  ].join("\n");
}

/** The whole `bench/results.md`. */
export function renderReport(r: Report): string {
  const m = r.machine;
  const out: string[] = [
    "# nix-ssh-cache benchmarks",
    "",
    "Generated by `npm run bench` (bench/run.ts); do not edit by hand, rerun it.",
    "",
    table(
      ["", ""],
      [
        ["date", m.date],
        [
          "machine",
          `${m.nproc} CPUs (nproc), ${m.cpuModel}${m.aesNi ? ", AES-NI" : ""}, ${m.memory} RAM`,
        ],
        ["kernel", m.kernel],
        ["Nix", m.nix],
        ["OpenSSH", m.openssh],
        ["Node.js / Pulumi", `${m.node} / ${m.pulumi}`],
        ["load average (1/5/15 min)", `${m.loadAtStart} at start, ${r.loadAtEnd} at end`],
        ["test hosts", `127.0.0.${r.firstAddress} and up (NSC_BENCH_FIRST_ADDRESS)`],
        ["duration", `${(r.totalSeconds / 60).toFixed(1)} min`],
      ],
    ),
    "",
    "All hosts are namespaces on this one machine (loopback network, shared CPUs and disk); other" +
      " jobs may have shared the CPUs, so compare figures within one table (measured side by side)" +
      " rather than across runs.",
    "",
  ];
  if (r.errors.length) {
    out.push("**Errors during this run:**", "", ...r.errors.map((e) => `- ${e}`), "");
  }
  // NSC_BENCH_NETWORK_ONLY=1 runs no loopback rounds: no section 1 then, nor its proposals.
  const rounds = (r.substitution?.rounds ?? 0) > 0;
  if (r.substitution && rounds) out.push(substitutionSection(r.substitution));
  if (r.network && r.substitution) {
    out.push(networkSection(r.network, r.substitution));
    out.push(compressionSection(r.network, r.substitution.closures));
  }
  if (r.fallback?.runs.length) out.push(fallbackSection(r.fallback));
  if (r.overhead) out.push(overheadSection(r.overhead));
  if (r.reuse) out.push(reuseSection(r.reuse));
  if (rounds || r.overhead) out.push(proposals(r));
  if (r.network && r.substitution && rounds) {
    out.push(networkProposals(r.network, r.substitution));
  }
  return out.join("\n") + "\n";
}
