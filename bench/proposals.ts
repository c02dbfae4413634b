/**
 * The "Proposed changes" section: each proposal with the figures of this run that motivate it.
 * The wording that depends on a comparison is chosen from the figures, so a rerun on another
 * machine does not keep a stale conclusion.
 */
import { fmt, fmtSeconds, median } from "./lib";
import { ConnectionMode, OpName, OverheadResults, runsOf } from "./overhead";
import type { Report } from "./report";
import { medianRoundRatio, medianSeconds, SubstitutionResults } from "./substitution";

function opMedian(
  o: OverheadResults,
  op: OpName,
  n: number,
  mode: ConnectionMode = "reuse",
): number | undefined {
  return median(runsOf(o, op, mode, n).map((r) => r.seconds));
}

function loginsPerProd(
  o: OverheadResults,
  op: OpName,
  mode: ConnectionMode = "reuse",
): number | undefined {
  return median(runsOf(o, op, mode).flatMap((r) => r.productionLogins));
}

function loginsStaging(
  o: OverheadResults,
  op: OpName,
  mode: ConnectionMode = "reuse",
): number | undefined {
  return median(runsOf(o, op, mode).map((r) => r.stagingLogins));
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
    "1. **Never set `max-connections` or `compress`** (in place: the component refuses" +
      " `maxConnections` above 1 before anything runs, `compress` is off unless asked for and its" +
      " TSDoc gives these figures; the verify step's timeout turns such a hang into an error).",
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
  const beforeAfter = (before: number | undefined, after: number | undefined) =>
    before && after
      ? `${fmtSeconds(before, 1)} → ${fmtSeconds(after, 1)} (×${fmt(before / after, 2)})`
      : "not measured";
  /** `1 host(s) a → b (×r); 8 hosts a → b (×r)` for the smallest and largest host counts. */
  const byHosts = (f: (n: number) => string) =>
    (lo === hi ? [lo] : [lo, hi]).map((n) => `${n} host(s) ${f(n)}`).join("; ");
  const speedUp = (op: OpName) =>
    byHosts((n) => beforeAfter(opMedian(o, op, n, "per-step"), opMedian(o, op, n, "reuse")));
  const checked = byHosts((n) =>
    beforeAfter(opMedian(o, "preview-checked", n), opMedian(o, "preview", n)),
  );
  const logins = (op: OpName) =>
    `${fmt(loginsPerProd(o, op, "per-step"), 0)} → ${fmt(loginsPerProd(o, op, "reuse"), 0)}`;
  const stagingLogins = (op: OpName) =>
    `${fmt(loginsStaging(o, op, "per-step"), 0)} → ${fmt(loginsStaging(o, op, "reuse"), 0)}`;
  const reuse = r.reuse;
  const reuseMed = (s: string, n: number) =>
    median(
      (reuse?.runs ?? []).filter((x) => x.strategy === s && x.hosts === n).map((x) => x.seconds),
    );
  const reuseHosts = reuse ? Math.max(...reuse.runs.map((x) => x.hosts)) : 0;
  return [
    "### Fewer round trips per host",
    "",
    "**Landed: connection reuse in the dynamic provider** (`components/ssh.ts`): the steps of a" +
      " host share one SSH connection per provider process, one channel per step (at most 8 at" +
      " once, fewer when the host refuses a channel; idle connections close after 10 s; a step" +
      " that never started is retried on a new connection, one that started is not)." +
      " `NIX_SSH_CACHE_CONNECTION_REUSE=0` restores one connection per step. Before → after, in" +
      " this run:",
    "",
    `- \`up\` from scratch: ${speedUp("up")};` +
      ` logins per production host ${logins("up")}, staging ${stagingLogins("up")}.`,
    `- \`preview --refresh\`: ${speedUp("preview-refresh")};` +
      ` logins per production host ${logins("preview-refresh")},` +
      ` staging ${stagingLogins("preview-refresh")}.`,
    `- \`destroy\`: ${speedUp("destroy")};` + ` logins per production host ${logins("destroy")}.`,
    reuse
      ? `- In isolation (section 3): the ${reuse.steps} refresh reads of one host took` +
        ` ${fmtSeconds(reuseMed("per-step", 1), 3)} with a connection each and` +
        ` ${fmtSeconds(reuseMed("reuse", 1), 3)} over the pool; on ${reuseHosts} hosts at once` +
        ` ${fmtSeconds(reuseMed("per-step", reuseHosts), 3)} / ${fmtSeconds(reuseMed("reuse", reuseHosts), 3)}.` +
        " Each login costs a key exchange, a public-key signature check and an sshd fork on the" +
        " host; on real networks each also costs round trips of latency."
      : "- (Section 3 did not run.)",
    "",
    '**Landed: the example project transpiles only** (`"ts-node": { "transpileOnly": true }` in' +
      " tsconfig.json, which Pulumi's Node.js runtime passes to ts-node): every `pulumi`" +
      " operation used to type-check `index.ts` and the component's sources before running them;" +
      " `npm run build` and `npm run lint` (and CI) type-check them already." +
      ` No-op \`preview\`, type-checked → transpile-only: ${checked}.` +
      " `PULUMI_NODEJS_TRANSPILE_ONLY=false` type-checks on every run again. Users who import the" +
      " component into their own TypeScript project can do the same in their tsconfig.json.",
    "",
    `What remains is mostly the floor: a no-op \`preview\` takes ${fmtSeconds(preview1, 1)} with` +
      ` ${lo} host(s) against ${fmtSeconds(floor, 1)} for an empty stack, and opens no connection` +
      " (`diff` is local): the engine, the Node.js program and the dynamic-provider process.",
    "",
    "Further proposals, in order of value for effort:",
    "",
    `1. **Fewer HostSteps per production host** (${fmt(loginsPerProd(o, "up", "per-step"), 0)} steps reach a production host on \`up\` → 3):` +
      " one `identity` step (probe + root key: one script, one JSON), one `client config` step" +
      " writing the known_hosts file, the ssh drop-in and the nix.conf include together" +
      " (atomically, one nix-daemon restart instead of up to one per file), and `verify`. With" +
      " the pool this saves channels and engine round trips rather than logins; the three files" +
      " are written one after the other today (each depends on the previous one), so `up` on a" +
      " host also gets shorter. Drift detection keeps working: the combined `read` reports every" +
      " file's sha256 and the diff names the file.",
    "2. **Skip the other OS's steps when the OS is known**: the NixOS module and" +
      " `nixos-rebuild` steps only report `skipped` on plain Linux; the provider could skip the" +
      " script when the probe's result (an input) already says so. One channel less per step.",
    "3. Batching all of a host's steps into one script saves the most round trips but" +
      " serialises the steps within a host and fights Pulumi's one-resource-one-step model" +
      " (per-step drift, diffs and errors). Not proposed.",
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
