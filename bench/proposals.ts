/**
 * The "Proposed changes" section: each proposal with the figures of this run that motivate it.
 * The wording that depends on a comparison is chosen from the figures, so a rerun on another
 * machine does not keep a stale conclusion.
 */
import { fmt, fmtSeconds, median } from "./lib";
import type { OpName, OverheadResults } from "./overhead";
import type { Report } from "./report";
import { medianRoundRatio, medianSeconds, SubstitutionResults } from "./substitution";

function opMedian(o: OverheadResults, op: OpName, n: number): number | undefined {
  return median(o.runs.filter((r) => r.op === op && r.hosts === n).map((r) => r.seconds));
}

function loginsPerProd(o: OverheadResults, op: OpName): number | undefined {
  return median(o.runs.filter((r) => r.op === op).flatMap((r) => r.productionLogins));
}

function loginsStaging(o: OverheadResults, op: OpName): number | undefined {
  return median(o.runs.filter((r) => r.op === op).map((r) => r.stagingLogins));
}

/** Time of variant `a` / time of variant `b`, per round, median (>1: `a` is slower). */
function timeRatio(
  s: SubstitutionResults,
  shape: string,
  a: string,
  b: string,
): number | undefined {
  const runs = s.runs[shape] ?? {};
  return medianRoundRatio(runs[a], runs[b], (x, y) => x / y);
}

function faster(ratio: number | undefined): string {
  if (ratio === undefined) return "not measured";
  if (ratio > 1.1) return `${fmt(ratio, 2)}× faster`;
  if (ratio < 0.9) return `${fmt(1 / ratio, 2)}× slower`;
  return `about as fast (×${fmt(ratio, 2)})`;
}

function protocolProposal(s: SubstitutionResults): string[] {
  const shapesOf = s.closures.map((c) => c.shape.attr);
  const ngVsSsh = shapesOf.map((a) => `${a}: ${faster(timeRatio(s, a, "ssh", "ng"))}`).join("; ");
  const aesSsh = shapesOf
    .map((a) => `${a}: ${faster(timeRatio(s, a, "ssh", "ssh-aes"))}`)
    .join("; ");
  const aesNg = shapesOf.map((a) => `${a}: ${faster(timeRatio(s, a, "ng", "ng-aes"))}`).join("; ");
  const aesRaw = shapesOf
    .map((a) => `${a}: ${faster(timeRatio(s, a, "raw", "raw-aes"))}`)
    .join("; ");
  const compress = shapesOf
    .map(
      (a) =>
        `${a}: ssh:// ${faster(timeRatio(s, a, "ssh", "ssh-compress"))}, ssh-ng:// ${faster(timeRatio(s, a, "ng", "ng-compress"))}`,
    )
    .join("; ");
  const mc8 = shapesOf
    .flatMap((a) =>
      ["ssh-mc8", "ng-mc8"].map((v) => {
        const r = (s.runs[a]?.[v] ?? [])[0];
        if (!r) return `${a} ${v}: not run`;
        return `${a} ${v}: ${r.ok ? fmtSeconds(r.seconds) : (r.error ?? "failed")}, ${r.connections} logins on staging`;
      }),
    )
    .join("; ");
  const largeRaw = medianRoundRatio(s.runs.large?.ssh, s.runs.large?.raw, (a, raw) => raw / a);
  const chainRaw = medianRoundRatio(s.runs.chain?.ssh, s.runs.chain?.raw, (a, raw) => raw / a);
  const chainNgRaw = medianRoundRatio(s.runs.chain?.ng, s.runs.chain?.raw, (a, raw) => raw / a);
  const local = s.closures
    .map(
      (c) =>
        `${c.shape.attr}: ${fmt(
          medianRoundRatio(s.runs[c.shape.attr]?.ssh, s.runs[c.shape.attr]?.local, (a, l) => l / a),
          1,
        )}×`,
    )
    .join(", ");
  return [
    "### Substitution defaults (protocol, cipher, parameters)",
    "",
    `- Figures: the component's default (\`ssh://\`) reaches ${fmt(largeRaw, 2)} of the raw SSH` +
      ` stream for the large path and ${fmt(chainRaw, 2)} for the ${s.closures.find((c) => c.shape.attr === "chain")?.paths.length ?? "?"}-path chain` +
      ` (\`ssh-ng://\`: ${fmt(chainNgRaw, 2)}). Speed-up over building locally: ${local}` +
      ` (each derivation here burns only ${s.sizes.work.toLocaleString("en")} loop iterations, so a` +
      " large path that is cheap to build — `head -c` of `/dev/urandom` — can be faster to build" +
      ` than to fetch: fetching it took ${fmtSeconds(medianSeconds(s.runs.large?.ssh))}, against` +
      ` ${fmtSeconds(medianSeconds(s.runs.large?.local))} to build; real builds of that size take longer).` +
      " Per path, `ssh://` pays one round trip for the path's info and one for its NAR, so the" +
      " many-small-paths chain is where it is furthest from the raw stream.",
    `- \`ssh-ng://\` against \`ssh://\`: ${ngVsSsh}.`,
    `- \`aes128-gcm@openssh.com\` against the default cipher: raw stream ${aesRaw}; \`ssh://\` ${aesSsh}; \`ssh-ng://\` ${aesNg}.`,
    `- \`compress=true\` (incompressible data): ${compress}.`,
    `- \`max-connections=8\` (bounded at ${s.variants.find((v) => v.id === "ssh-mc8")?.timeoutSeconds ?? "?"} s, once per shape): ${mc8}.` +
      " A hang with no login at all on staging points at Nix's SSH master connection (Nix 2.8 starts" +
      " `ssh -M` when a store's pool has more than one connection), not at the transfer.",
    "",
    "Proposals:",
    "",
    "1. **Never set `max-connections` or `compress`** (document why in the TSDoc of the URL" +
      " parameters, with these figures); keep the verify step's timeout, which turns such a hang" +
      " into an error.",
    "2. **Cipher**: the ssh client drop-in the component already writes for the staging `Host`" +
      " (`renderSshClientConfig`) can carry `Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com`" +
      " (AES-GCM preferred, the default kept as fallback for hosts without AES-NI). One line in" +
      " a pure renderer plus a unit test; worth it only where the figures above show AES-GCM" +
      " faster on the raw stream *and* through the cache on this kind of CPU (`aes` in" +
      " /proc/cpuinfo flags). It affects only root's connections to the staging host.",
    "3. **Protocol**: keep `ssh://` as the default (the seed's, no daemon socket exposure) unless" +
      " the `ssh-ng://` line above shows a consistent gain on the many-small-paths chain; the" +
      ' component already supports `protocol: "ssh-ng"` for users who want it.',
    "",
  ];
}

function overheadProposal(r: Report, o: OverheadResults): string[] {
  const counts = [...new Set(o.runs.map((x) => x.hosts))].sort((a, b) => a - b);
  const lo = counts[0];
  const hi = counts[counts.length - 1];
  const floor = median(o.emptyPreview);
  const preview1 = opMedian(o, "preview", lo);
  const refreshLo = opMedian(o, "preview-refresh", lo);
  const refreshHi = opMedian(o, "preview-refresh", hi);
  const upLo = opMedian(o, "up", lo);
  const upHi = opMedian(o, "up", hi);
  const reuse = r.reuse;
  const reuseMed = (s: string, n: number) =>
    median(
      (reuse?.runs ?? []).filter((x) => x.strategy === s && x.hosts === n).map((x) => x.seconds),
    );
  const reuseHosts = reuse ? Math.max(...reuse.runs.map((x) => x.hosts)) : 0;
  return [
    "### Fewer round trips per host",
    "",
    `- Figures: every production host gets ${fmt(loginsPerProd(o, "up"), 0)} SSH logins on \`up\`,` +
      ` ${fmt(loginsPerProd(o, "preview-refresh"), 0)} on \`preview --refresh\`, ${fmt(loginsPerProd(o, "destroy"), 0)} on \`destroy\`;` +
      ` staging ${fmt(loginsStaging(o, "up"), 0)} / ${fmt(loginsStaging(o, "preview-refresh"), 0)} / ${fmt(loginsStaging(o, "destroy"), 0)}` +
      " (a no-op `preview` and a no-op `up` open none: `diff` is local). Two of a production host's" +
      " steps (the NixOS module and `nixos-rebuild`) only report `skipped` on plain Linux, yet" +
      " each costs a login, on `up` and (the module) on refresh.",
    `- \`up\` from scratch: ${fmtSeconds(upLo, 1)} with ${lo} host(s), ${fmtSeconds(upHi, 1)} with ${hi}` +
      ` (×${fmt(upHi && upLo ? upHi / upLo : undefined, 2)}); \`preview --refresh\` ${fmtSeconds(refreshLo, 1)} /` +
      ` ${fmtSeconds(refreshHi, 1)}, against ${fmtSeconds(preview1, 1)} for a plain no-op preview` +
      ` and ${fmtSeconds(floor, 1)} for an empty stack: the engine, the Node.js program and the` +
      " dynamic-provider process are the floor every operation pays; the SSH steps come on top.",
    reuse
      ? `- Prototype (section 3): the ${reuse.steps} refresh reads of one host took` +
        ` ${fmtSeconds(reuseMed("today", 1), 3)} with a connection each,` +
        ` ${fmtSeconds(reuseMed("pooled", 1), 3)} over one pooled connection and` +
        ` ${fmtSeconds(reuseMed("batched", 1), 3)} as one batched script; on ${reuseHosts} hosts at once` +
        ` ${fmtSeconds(reuseMed("today", reuseHosts), 3)} / ${fmtSeconds(reuseMed("pooled", reuseHosts), 3)} /` +
        ` ${fmtSeconds(reuseMed("batched", reuseHosts), 3)}. Each login costs a key exchange, a` +
        " public-key signature check and an sshd fork on the host: with many hosts on few" +
        " cores (and on real networks, with latency per round trip) connections add up."
      : "- (The connection-reuse prototype did not run.)",
    "",
    "Proposals, in order of value for effort:",
    "",
    "1. **Connection reuse in the dynamic provider** (`components/ssh.ts`): keep one ssh2" +
      " `Client` per `user@host:port`+host key in the provider process (on `globalThis`, since the" +
      " module is serialized into the provider and must not keep module state), run each step" +
      " on its own channel (`exec`), close idle clients after a few seconds and on process exit;" +
      " keep the per-run timeout per channel. sshd's default `MaxSessions 10` bounds the" +
      " channels per connection: queue beyond 8. Logins per host per operation drop to 1, the" +
      " scripts and the engine are unchanged, the figures are in section 3.",
    `2. **Fewer HostSteps per production host** (${fmt(loginsPerProd(o, "up"), 0)} → 3): one \`identity\` step` +
      " (probe + root key: one script, one JSON), one `client config` step writing the known_hosts" +
      " file, the ssh drop-in and the nix.conf include together (atomically, one nix-daemon" +
      " restart instead of up to one per file), and `verify`. Drift detection keeps working:" +
      " the combined `read` reports every file's sha256 and the diff names the file. Staging" +
      ` likewise (${fmt(loginsStaging(o, "up"), 0)} → 4): probe + signing key; serve user + authorized keys + sshd drop-in +` +
      " nix.conf; canary; plus the NixOS pair only on NixOS.",
    "3. **Skip the other OS's steps when the OS is known**: create the NixOS module and" +
      " `nixos-rebuild` steps (or the plain-Linux files) only when the probe's result says so" +
      " (it is known on every run after the first, and at the first `up` once the probe ran);" +
      " on Linux this removes 2 logins per host from `up` and 1 from each refresh even without" +
      " proposal 2.",
    "4. Batching all of a host's steps into one script (`batched` in section 3) saves the most" +
      " logins but serialises the steps within a host; with pooling (1) the gain over `pooled`" +
      " is small and it would fight Pulumi's one-resource-one-step model. Not proposed.",
    "",
  ];
}

/** Renders the proposals from the measured figures. */
export function proposals(r: Report): string {
  const out: string[] = ["## Proposed changes", ""];
  if (r.overhead && r.overhead.runs.length) out.push(...overheadProposal(r, r.overhead));
  if (r.substitution && r.substitution.closures.length)
    out.push(...protocolProposal(r.substitution));
  if (out.length === 2) out.push("(No figures: nothing was measured.)", "");
  return out.join("\n");
}
