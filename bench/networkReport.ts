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

function roundTripsPerPath(p: NetworkProfile, c: Closure, run: Run | undefined): string {
  if (!run?.ok || p.rttMs === 0) return "—";
  return fmt(run.seconds / c.paths.length / (p.rttMs / 1000), 1);
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
      const run = byMode[v.id];
      const t = run?.ok ? run.seconds : undefined;
      rows.push([
        c.shape.attr,
        v.label,
        run?.ok ? fmtSeconds(t) : `failed: ${run?.error ?? "not run"}`,
        t ? fmt(c.narBytes / 1e6 / t, 1) : "—",
        t ? fmt(c.paths.length / t, 1) : "—",
        v.id === "raw" ? (t ? "1.00" : "—") : fmt(vsRaw(byMode, v.id), 2),
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
    `- **HTTP cache through an SSH forward**: \`nix copy --to file://…?compression=none\` on` +
      ` staging fills a binary cache (${fmt((n.cacheFillSeconds ?? 0) || undefined, 1)} s for the three` +
      ` shapes, ${fmt((n.cacheBytes ?? 0) / 1e6, 0)} MB on disk), Debian's nginx serves it on` +
      " staging's loopback; production holds one SSH connection as a tunnel-only user whose key" +
      ' allows nothing but a local forward to that one port (`restrict,port-forwarding,permitopen="…"`,' +
      ' `command="/bin/false"`, sshd `PermitOpen`), and substitutes from' +
      " `http://<its own address>:5080` with Nix's HTTP substituter (parallel queries and" +
      " downloads, `http-connections` 25), narinfo disk cache off for the run. The tunnel is" +
      " opened before the runs (like a service would keep it); opening it took " +
      n.profiles.map((p) => `${fmtSeconds(n.tunnelSeconds[p.id])} (${p.id})`).join(", ") +
      ".",
    "- **closure bundle**: one SSH command to staging streams the closure's `.narinfo` and" +
      " `.nar` files from that `file://` cache (`nix-store -qR`, `tar`); production unpacks them" +
      " and substitutes from the directory (`file://`), Nix checking staging's signatures as" +
      " for any substituter. The closure is known up front, so the whole transfer costs one" +
      " round trip plus the bytes (in the bench the command runs as root; as a product it would" +
      " be a forced command of a serve-only user).",
    `- **max-connections**: ${n.maxConnections.reason}.`,
    "",
    '"RTTs per path" = time / paths / RTT: how many round trips each path costs. Speed-up over' +
      " local build uses the loopback section's local build time (the network does not change it).",
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
        ` chain ${fmt(vsRaw(cross.chain, "ssh"), 2)}, large ${fmt(vsRaw(cross.large, "ssh"), 2)},` +
        ` mixed ${fmt(vsRaw(cross.mixed, "ssh"), 2)} of raw.`,
      "",
    );
  }
  return out.join("\n");
}
