/**
 * Time to fallback (issue 23, item 2): how long a production `nix-store --realise` takes when
 * staging is down, with the settings `up` writes (root's ssh `ConnectTimeout` for staging, Nix
 * `fallback = true`). Production realises derivations no cache has (builder `/bin/sh`, a fresh
 * nonce each run, so Nix asks staging and then builds), with staging up (the baseline: the
 * build itself plus staging's "don't have it"), with staging's sshd stopped (connection refused)
 * and with a listener on staging's SSH address that accepts and never answers (a hung sshd or
 * host). One path and a chain of a few paths (Nix 2.8 tries the substituter again for each
 * path). Every realise is bounded; staging's sshd is started again whatever happens.
 */
import { randomBytes } from "crypto";
import { silentListener } from "../tests/e2e/helpers";
import { TestHost } from "../tests/hosts/harness";
import { fmtSeconds, log, table } from "./lib";
import { sh } from "./substitution";

/** What staging does during a run. */
export type StagingState = "up" | "refused" | "hung";

/** Labels of the states in the report. */
export const STATE_LABELS: Record<StagingState, string> = {
  up: "up (the path is not on staging: asked, then built)",
  refused: "sshd stopped (connection refused)",
  hung: "accepts TCP, never answers (hung sshd or host)",
};

/** One timed realise. */
export interface FallbackRun {
  state: StagingState;
  /** Paths to build (a chain). */
  paths: number;
  seconds: number;
  /** nix-store's exit status (124: cut off by the bound). */
  exitCode: number;
  /** Whether every path was built. */
  ok: boolean;
  error?: string;
}

/** Everything the time-to-fallback rows measured. */
export interface FallbackResults {
  runs: FallbackRun[];
  /** `ssh -G` of production's root for staging's serve user: connecttimeout. */
  connectTimeout: string;
  /** `fallback` in production's Nix configuration. */
  fallback: string;
  /** Bound of one realise, seconds. */
  boundSeconds: number;
  errors: string[];
}

/** An empty result. */
export function emptyFallback(): FallbackResults {
  return { runs: [], connectTimeout: "", fallback: "", boundSeconds: 0, errors: [] };
}

/** A chain of `n` derivations no cache has, instantiated on `host`; the top one. */
async function localChain(host: TestHost, n: number): Promise<string> {
  const nonce = randomBytes(4).toString("hex");
  const expr =
    `let mk = i: prev: builtins.derivation { name = "bench-fallback-${nonce}-\${toString i}"; ` +
    `system = builtins.currentSystem; builder = "/bin/sh"; ` +
    `args = [ "-c" "echo \${toString i} \${prev} > $out" ]; }; ` +
    `go = i: if i == 0 then mk 0 "" else mk i (go (i - 1)); in go ${n - 1}`;
  return (await sh(host, `nix-instantiate -E '${expr}' 2>/dev/null`)).trim();
}

/** Realises a fresh chain of `paths` derivations on production; the time is measured there. */
async function timedRealise(
  prod: TestHost,
  state: StagingState,
  paths: number,
  bound: number,
): Promise<FallbackRun> {
  const drv = await localChain(prod, paths);
  const out = await sh(
    prod,
    `log=$(mktemp); rc=0
     s=$(date +%s%N)
     timeout -k 5 ${bound} nix-store --realise ${drv} </dev/null >/dev/null 2>"$log" || rc=$?
     e=$(date +%s%N)
     printf '%s %s\\n' "$rc" "$((e - s))"
     tail -n 2 "$log" | tr '\\n' ' '; rm -f "$log"`,
  );
  const [first, ...rest] = out.split("\n");
  const [rc, ns] = first.trim().split(/\s+/).map(Number);
  const run: FallbackRun = { state, paths, seconds: ns / 1e9, exitCode: rc, ok: rc === 0 };
  if (rc !== 0) {
    run.error =
      rc === 124 || rc === 137 ? `cut off after ${bound} s` : rest.join(" ").trim().slice(0, 200);
  }
  log(
    `fallback: staging ${state}, ${paths} path(s): ${run.ok ? `built in ${run.seconds.toFixed(2)} s` : `FAILED (${run.error})`}`,
  );
  return run;
}

/** Options of {@link fallbackBench}. */
export interface FallbackOptions {
  /** Paths of the longer chain (the short one is 1 path). */
  chain: number;
  /** Bound of one realise, seconds. */
  boundSeconds: number;
}

/** Runs the time-to-fallback rows on a configured stack's staging and one production host. */
export async function fallbackBench(
  stage: TestHost,
  prod: TestHost,
  o: FallbackOptions,
  results: FallbackResults,
): Promise<void> {
  results.boundSeconds = o.boundSeconds;
  results.connectTimeout =
    /^connecttimeout (\S+)$/m.exec(await sh(prod, `ssh -G nix-ssh@${stage.fqdn}`))?.[1] ?? "none";
  results.fallback =
    /^fallback = (\S+)$/m.exec(
      await sh(prod, "nix --extra-experimental-features nix-command show-config"),
    )?.[1] ?? "?";
  const sizes = [1, o.chain];
  for (const n of sizes) results.runs.push(await timedRealise(prod, "up", n, o.boundSeconds));
  await stage.stopSshd();
  try {
    for (const n of sizes) {
      results.runs.push(await timedRealise(prod, "refused", n, o.boundSeconds));
    }
    const close = await silentListener(stage);
    try {
      for (const n of sizes) {
        results.runs.push(await timedRealise(prod, "hung", n, o.boundSeconds));
      }
    } finally {
      await close();
    }
  } finally {
    await stage.startSshd();
  }
}

/** The time-to-fallback table. */
export function fallbackSection(f: FallbackResults): string {
  const baseline = (paths: number) => f.runs.find((r) => r.state === "up" && r.paths === paths);
  const rows = f.runs.map((r) => [
    STATE_LABELS[r.state],
    String(r.paths),
    r.state === "up" || !r.ok || !baseline(r.paths)?.ok
      ? ""
      : fmtSeconds(r.seconds - (baseline(r.paths)?.seconds ?? 0)),
    r.ok
      ? `built in ${fmtSeconds(r.seconds)}`
      : `exit ${r.exitCode} after ${fmtSeconds(r.seconds)}: ${r.error ?? "?"}`,
  ]);
  return [
    "## 1d. Time to fallback: staging down (issue 23)",
    "",
    "A production `nix-store --realise` of derivations no cache has (builder `/bin/sh`, a fresh" +
      " nonce each run: Nix asks staging, then builds), with the settings `up` writes on" +
      ` production: root's ssh \`ConnectTimeout\` for staging = ${f.connectTimeout} s, Nix` +
      ` \`fallback = ${f.fallback}\`. Each realise is bounded at ${f.boundSeconds} s. "up" is the` +
      " baseline (the build itself); the difference to it is the time lost to staging's outage." +
      " Nix 2.8 tries the substituter again for each path, so a hung staging costs about" +
      " `ConnectTimeout` × 3 per path to build.",
    "",
    ...f.errors.map((e) => `- error: ${e}`),
    table(["staging", "paths to build", "lost to the outage (vs up)", "result"], rows),
    "",
  ].join("\n");
}
