/**
 * The network section of `bench/results.md` (issue 15): one table per profile, every mode.
 */
import { fmt, fmtSeconds, table } from "./lib";
import { NetworkResults } from "./network";
import { Closure, medianSeconds, Run, SubstitutionResults } from "./substitution";
import { NetworkProfile } from "./toxiproxy";

/** Time of the raw stream / time of the mode (1.00 = at the limit). */
export function vsRaw(byMode: Record<string, Run> | undefined, mode: string): number | undefined {
  const raw = byMode?.raw;
  const m = byMode?.[mode];
  return raw?.ok && m?.ok ? raw.seconds / m.seconds : undefined;
}

/** The fastest mode other than the raw stream, with its ratio to raw. */
export function bestMode(
  n: NetworkResults,
  profile: string,
  shape: string,
): { id: string; label: string; ratio: number } | undefined {
  const byMode = n.runs[profile]?.[shape];
  let best: { id: string; label: string; ratio: number } | undefined;
  for (const v of n.modes) {
    if (v.id === "raw") continue;
    const r = vsRaw(byMode, v.id);
    if (r !== undefined && (!best || r > best.ratio)) best = { id: v.id, label: v.label, ratio: r };
  }
  return best;
}

/** Paths a run moved: all when it succeeded, else those valid when it was stopped. */
function moved(c: Closure, run: Run | undefined): number | undefined {
  if (run?.ok) return c.paths.length;
  return run?.timedOut && run.pathsDone ? run.pathsDone : undefined;
}

/** Ratio to raw, or its upper bound for a run stopped by its time bound. */
function ratioCell(byMode: Record<string, Run> | undefined, mode: string): string {
  const run = byMode?.[mode];
  const raw = byMode?.raw;
  if (run?.ok) return fmt(vsRaw(byMode, mode), 2);
  return run?.timedOut && raw?.ok ? `< ${fmt(raw.seconds / run.seconds, 2)}` : "—";
}

function roundTripsPerPath(p: NetworkProfile, c: Closure, run: Run | undefined): string {
  const n = moved(c, run);
  if (!run || n === undefined || p.rttMs === 0) return "—";
  return fmt(run.seconds / n / (p.rttMs / 1000), 1);
}

/**
 * A run stopped by its time bound still says something: the paths it moved in that time give
 * its rate and an upper bound of its ratio to raw.
 */
function timeCell(c: Closure, run: Run | undefined): string {
  if (!run) return "not run";
  if (run.ok) return fmtSeconds(run.seconds);
  const n = moved(c, run);
  return n !== undefined
    ? `> ${fmtSeconds(run.seconds, 0)} (stopped; ${n} of ${c.paths.length} paths)`
    : `failed: ${run.error ?? "?"}`;
}

function profileTable(
  n: NetworkResults,
  p: NetworkProfile,
  closures: Closure[],
  s: SubstitutionResults,
): string {
  const rows: string[][] = [];
  for (const c of closures) {
    const byMode = n.runs[p.id]?.[c.shape.attr];
    if (!byMode) continue;
    const local = medianSeconds(s.runs[c.shape.attr]?.local);
    for (const v of n.modes) {
      if (v.onlyShapes && !v.onlyShapes.includes(c.shape.attr)) continue;
      const run = byMode[v.id];
      const t = run?.ok ? run.seconds : undefined;
      const n = moved(c, run);
      const raw = byMode.raw?.ok ? byMode.raw.seconds : undefined;
      rows.push([
        c.shape.attr,
        v.label,
        timeCell(c, run),
        t ? fmt(c.narBytes / 1e6 / t, 1) : "—",
        run && n ? fmt(n / run.seconds, 1) : "—",
        v.id === "raw"
          ? t
            ? "1.00"
            : "—"
          : t
            ? fmt(vsRaw(byMode, v.id), 2)
            : run && raw && n
              ? `< ${fmt(raw / run.seconds, 2)}`
              : "—",
        t && local && v.id !== "raw" ? `×${fmt(local / t, 2)}` : "",
        roundTripsPerPath(p, c, run),
        run ? String(run.connections) : "—",
      ]);
    }
  }
  return table(
    [
      "shape",
      "mode",
      "time",
      "MB/s",
      "paths/s",
      "vs raw",
      "speed-up over local build",
      "RTTs per path",
      "logins",
    ],
    rows,
  );
}

/** The section. */
export function networkSection(n: NetworkResults, s: SubstitutionResults): string {
  const out: string[] = ["## 1b. Substitution over emulated networks (issue 15)", ""];
  out.push(
    "Production reaches staging's sshd through a Toxiproxy 2.5.0 proxy (user space: this" +
      " kernel has no `netem`) on another loopback address of the bench's range, with half the" +
      " RTT of latency and the bandwidth in each direction (Toxiproxy's latency is whole" +
      " milliseconds: the LAN profile's 0.5 ms is a wait of 0 or 1 ms per chunk, 0.25 ms on" +
      " average each way); the loopback profile bypasses the proxy. Production's name for" +
      " staging (`/etc/hosts`) points at the proxy, so every mode's SSH connection crosses it." +
      " One run per profile, shape and mode, all modes side by side; production's copies are" +
      " deleted before every run. Modes:",
    "",
    "- **raw SSH stream**: `ssh root@staging tar` of the closure, one connection: the limit.",
    "- **ssh://** (the component's substituter) and **ssh-ng://**: Nix substitutes path by path," +
      " one request at a time on one connection.",
    ...(n.modes.some((v) => v.id === "http")
      ? [
          `- **HTTP cache through an SSH forward**: \`nix copy --to file://…?compression=none\` on` +
            ` staging fills a binary cache (${fmt((n.cacheFillSeconds ?? 0) || undefined, 1)} s for the` +
            ` shapes, ${fmt((n.cacheBytes ?? 0) / 1e6, 0)} MB on disk), Debian's nginx serves it on` +
            " staging's loopback; production holds one SSH connection as a tunnel-only user whose key" +
            ' allows nothing but a local forward to that one port (`restrict,port-forwarding,permitopen="…"`,' +
            ' `command="/bin/false"`, sshd `PermitOpen`), and substitutes from' +
            " `http://<its own address>:5080` with Nix's HTTP substituter (parallel queries and" +
            " downloads, `http-connections` 25), narinfo disk cache off for the run. The tunnel is" +
            " opened before the runs (like a service would keep it); opening it took " +
            n.profiles.map((p) => `${fmtSeconds(n.tunnelSeconds[p.id])} (${p.id})`).join(", ") +
            ".",
        ]
      : []),
    "- **nix-ssh-cache-fetch** (the component's closure fetcher, the file `up` installs on" +
      " production, run from a copy in the bench's own directory): one SSH session as the same confined serve user (`nix-store --serve`, the" +
      " ForceCommand `ssh://` uses): the closure of the path in one round trip, then the infos" +
      " and NARs of the paths production lacks, pipelined (one round trip plus the bytes); Nix" +
      " adds them from a temporary `file://` cache, checking staging's signatures as for any" +
      " substituter (`--no-fallback` in the bench, so a failure shows instead of `ssh://`).",
    "- **`ssh://?compress=true`** and **`nix-ssh-cache-fetch --compress`**: the same with ssh's" +
      " zlib compression (section 1c compares them).",
    `- **max-connections**: ${n.maxConnections.reason}.`,
    "",
    '"RTTs per path" = time / paths / RTT: how many round trips each path costs. Speed-up over' +
      " local build uses the loopback section's local build time (the network does not change it)." +
      ` Each run is bounded at ${n.modes[0]?.timeoutSeconds ?? "?"} s (NSC_BENCH_NETWORK_RUN_TIMEOUT);` +
      " a stopped run shows how many paths it had moved, its paths/s and RTTs per path from" +
      " those, and an upper bound of its ratio to raw.",
    "",
  );
  if (n.errors.length) out.push(...n.errors.map((e) => `- error: ${e}`), "");
  for (const p of n.profiles) {
    if (!n.runs[p.id]) continue;
    out.push(`### ${p.label}`, "", profileTable(n, p, s.closures, s), "");
  }
  const cross = n.runs.cross;
  if (cross) {
    const line = (shape: string) => {
      const b = bestMode(n, "cross", shape);
      return b ? `${shape}: best ${b.label}, ${fmt(b.ratio, 2)} of raw` : `${shape}: —`;
    };
    out.push(
      `Cross-region summary: ${["chain", "large", "mixed"].map(line).join("; ")}; ssh:// (default):` +
        ` chain ${ratioCell(cross.chain, "ssh")}, large ${ratioCell(cross.large, "ssh")},` +
        ` mixed ${ratioCell(cross.mixed, "ssh")} of raw.`,
      "",
    );
  }
  return out.join("\n");
}

function rtts(n: NetworkResults, s: SubstitutionResults, mode: string): string {
  const c = s.closures.find((x) => x.shape.attr === "chain");
  const p = n.profiles.find((x) => x.id === "cross");
  const run = n.runs.cross?.chain?.[mode];
  return c && p ? roundTripsPerPath(p, c, run) : "—";
}

/** The study's conclusions, worded from this run's figures. */
export function networkProposals(n: NetworkResults, s: SubstitutionResults): string {
  const cross = n.runs.cross;
  if (!cross) return "";
  const r = (shape: string, mode: string) => ratioCell(cross[shape], mode);
  return [
    "### Beating the round trips (issue 15)",
    "",
    `- Cross-region, the ${s.closures.find((c) => c.shape.attr === "chain")?.paths.length ?? "?"}-path` +
      ` chain costs ${rtts(n, s, "ssh")} RTTs per path through \`ssh://\`, ${rtts(n, s, "ng")} through` +
      ` \`ssh-ng://\` and ${rtts(n, s, "http")} through the HTTP cache (ratios to raw: ${r("chain", "ssh")},` +
      ` ${r("chain", "ng")}, ${r("chain", "http")}). Nix learns a path's references only from its` +
      " info and starts a path's download only when its references are valid, so along a chain" +
      " every substituter protocol pays round trips in sequence; the HTTP cache's parallel" +
      " queries and downloads pay off on wide closures and large NARs (mixed:" +
      ` ${r("mixed", "http")} against ${r("mixed", "ssh")} for \`ssh://\`; large: ${r("large", "http")}` +
      ` against ${r("large", "ssh")}), not on deep ones.`,
    `- \`nix-ssh-cache-fetch\` asks staging for the closure, so the whole transfer costs two` +
      ` round trips plus the bytes: chain ${r("chain", "fetch")}, large ${r("large", "fetch")},` +
      ` mixed ${r("mixed", "fetch")} of raw. It needs nothing new on staging (the serve user's` +
      " forced `nix-store --serve`), and signatures are still checked by Nix (production adds the" +
      " paths from a `file://` cache with its usual `trusted-public-keys`). What it does not" +
      " remove is Nix's own per-path cost of adding paths to the store, which is most of what" +
      " separates it from the raw stream on the chain.",
    `- \`max-connections\`: ${n.maxConnections.reason}.`,
    "",
    "The component's choice: the substituter stays `ssh://` (every Nix operation falls back to" +
      " it; it needs nothing on staging beyond sshd and Nix, and no long-lived tunnel to" +
      ` supervise; on the chain the HTTP cache reached ${r("chain", "http")} of raw against` +
      ` ${r("chain", "ssh")} for \`ssh://\`), and \`nix-ssh-cache-fetch\` is installed on every` +
      " production host by default (`fetcher: true`): deploys call it with the system closure" +
      " before switching, and it falls back to `ssh://` when its one session fails. Not built:",
    "",
    '1. **`protocol: "http-tunnel"`** for wide closures: nginx (or any static server) on' +
      " staging's loopback over a `file://` cache that Nix fills, a tunnel-only account" +
      ' (`restrict,port-forwarding,permitopen="127.0.0.1:PORT",command="/bin/false"`, sshd' +
      " `PermitOpen`), a supervised `ssh -N -L` on production, and `http://127.0.0.1:PORT` as the" +
      " substituter listed before `ssh://`. It beats `ssh://` on wide closures and large NARs," +
      " but not the fetcher on chains, and it costs a second copy of the served paths, a server" +
      " and a tunnel to supervise.",
    "2. **`max-connections`** on `ssh://` once production runs Nix >= 2.32 (detect with" +
      " `nix-store --version`, keep 1 below): parallel queries on one substituter, same" +
      " chain-depth limit as HTTP.",
    "",
  ].join("\n");
}

/** Time without compression / time with it (> 1: compression wins), when both succeeded. */
export function compressionGain(
  byMode: Record<string, Run> | undefined,
  plain: string,
  compressed: string,
): number | undefined {
  const a = byMode?.[plain];
  const b = byMode?.[compressed];
  return a?.ok && b?.ok ? a.seconds / b.seconds : undefined;
}

/** The compression table of issue 23: each profile and shape, each mode with and without. */
export function compressionSection(n: NetworkResults, closures: Closure[]): string {
  const pairs: [string, string][] = [
    ["ssh", "ssh-compress"],
    ["fetch", "fetch-compress"],
  ].filter(([a, b]) => n.modes.some((v) => v.id === a) && n.modes.some((v) => v.id === b)) as [
    string,
    string,
  ][];
  if (!pairs.length) return "";
  const rows: string[][] = [];
  for (const p of n.profiles) {
    for (const c of closures) {
      const byMode = n.runs[p.id]?.[c.shape.attr];
      if (!byMode) continue;
      for (const [plain, compressed] of pairs) {
        if (!byMode[compressed]) continue;
        const g = compressionGain(byMode, plain, compressed);
        rows.push([
          p.label,
          c.shape.attr,
          fmt(n.gzipRatio[c.shape.attr], 2),
          plain === "ssh" ? "`ssh://`" : "`nix-ssh-cache-fetch`",
          timeCell(c, byMode[plain]),
          timeCell(c, byMode[compressed]),
          g === undefined ? "—" : `×${fmt(g, 2)}`,
          g === undefined ? "—" : g >= 1.1 ? "**on**" : g > 0.9 ? "either" : "off",
        ]);
      }
    }
  }
  return [
    "## 1c. Compression (issue 23)",
    "",
    "The same runs as section 1b, side by side: each substituter without and with ssh's own" +
      " compression (zlib level 6: `ssh://…?compress=true` makes Nix pass `-C` to ssh;" +
      " `nix-ssh-cache-fetch --compress` passes `-o Compression=yes`). zstd is not an option" +
      " without changing staging: its serve user is forced to `nix-store --serve`, so only ssh" +
      ' can compress. "gzip -6 ratio" = NAR bytes / `gzip -6` bytes of the closure\'s first' +
      ' 32 MiB (how much zlib can gain); "gain" = time without / time with compression' +
      ' (above 1: compression wins); "choose" = on when it wins by 10 % or more, off when it' +
      " loses by 10 % or more.",
    "",
    table(
      [
        "profile",
        "shape",
        "gzip -6 ratio",
        "mode",
        "without",
        "with compression",
        "gain",
        "choose",
      ],
      rows,
    ),
    "",
  ].join("\n");
}
