/**
 * Part 1: substitution. Staging (configured by the real component) builds three closure shapes;
 * production realises them through the cache (`ssh://`, `ssh-ng://`, with parameters and with
 * the AES-GCM cipher), builds them itself, and streams the same bytes raw over one SSH
 * connection (the physical limit). Every run is time-bounded; production's copies are deleted
 * between runs so each run fetches everything.
 */
import { renderSshdMatchBlock, serveCommand } from "../components/render";
import { STAGING_FILES } from "../components/cacheServer";
import { acceptedLogins, loginsSince, TestHost } from "../tests/hosts/harness";
import { benchExpression, shapes, ShapeSizes, ShapeSpec } from "./closures";
import { log, median } from "./lib";

/** The serve user for `ssh-ng://`: same Match-block confinement, `nix-daemon --stdio`. */
const NG_USER = "nix-ssh-ng";
const NG_DROP_IN = "/etc/ssh/sshd_config.d/nix-ssh-cache-bench-ng.conf";
const AES = "aes128-gcm@openssh.com";

/** How production gets the closure. */
export interface Variant {
  id: string;
  /** Label in the report. */
  label: string;
  kind: "cache" | "raw" | "local";
  /** `--option substituters` value; undefined: the component's configured substituter. */
  substituter?: string;
  /** `Ciphers aes128-gcm@openssh.com` for the staging host in root's ~/.ssh/config. */
  aes: boolean;
  /** Time bound of one run, seconds. */
  timeoutSeconds: number;
  /** Run only in round 1: known to hang, or known to be slow (compression). */
  once?: boolean;
  /** The command production runs, for variants that are not a plain realise (bench/network.ts). */
  command?: (c: Closure) => string;
  /** Login users on staging counted as this variant's connections, beyond the serve users. */
  countLogins?: string[];
  /** Shapes (attrs) the variant runs on in the network section; default all. */
  onlyShapes?: string[];
}

/** The variants, in the order each round runs them. */
export function variants(
  stagingName: string,
  runTimeout: number,
  hangTimeout: number,
  extras = true,
): Variant[] {
  const ssh = `ssh://nix-ssh@${stagingName}`;
  const ng = `ssh-ng://${NG_USER}@${stagingName}`;
  const t = runTimeout;
  const all: Variant[] = [
    {
      id: "raw",
      label: "raw SSH stream (tar over 1 connection)",
      kind: "raw",
      aes: false,
      timeoutSeconds: t,
    },
    { id: "raw-aes", label: `raw SSH stream, ${AES}`, kind: "raw", aes: true, timeoutSeconds: t },
    {
      id: "ssh",
      label: "ssh:// (component default)",
      kind: "cache",
      aes: false,
      timeoutSeconds: t,
    },
    { id: "ssh-aes", label: `ssh://, ${AES}`, kind: "cache", aes: true, timeoutSeconds: t },
    {
      id: "ssh-compress",
      label: "ssh://?compress=true",
      kind: "cache",
      substituter: `${ssh}?compress=true`,
      aes: false,
      timeoutSeconds: t,
      once: true,
    },
    {
      id: "ssh-mc8",
      label: "ssh://?max-connections=8",
      kind: "cache",
      substituter: `${ssh}?max-connections=8`,
      aes: false,
      timeoutSeconds: hangTimeout,
      once: true,
    },
    { id: "ng", label: "ssh-ng://", kind: "cache", substituter: ng, aes: false, timeoutSeconds: t },
    {
      id: "ng-aes",
      label: `ssh-ng://, ${AES}`,
      kind: "cache",
      substituter: ng,
      aes: true,
      timeoutSeconds: t,
    },
    {
      id: "ng-compress",
      label: "ssh-ng://?compress=true",
      kind: "cache",
      substituter: `${ng}?compress=true`,
      aes: false,
      timeoutSeconds: t,
      once: true,
    },
    {
      id: "ng-mc8",
      label: "ssh-ng://?max-connections=8",
      kind: "cache",
      substituter: `${ng}?max-connections=8`,
      aes: false,
      timeoutSeconds: hangTimeout,
      once: true,
    },
    {
      id: "local",
      label: "build locally on production",
      kind: "local",
      aes: false,
      timeoutSeconds: t * 3,
    },
  ];
  // Without extras: no AES-GCM and no compress variants (issue 7 settled them; slow to run).
  return extras ? all : all.filter((v) => !v.aes && !v.id.endsWith("compress"));
}

/** A built closure on staging. */
export interface Closure {
  shape: ShapeSpec;
  drv: string;
  out: string;
  paths: string[];
  narBytes: number;
  /** Seconds staging took to build it. */
  stagingBuildSeconds: number;
}

/** One run of one variant. */
export interface Run {
  round: number;
  seconds: number;
  ok: boolean;
  timedOut: boolean;
  /** Logins of the serve users on staging during the run. */
  connections: number;
  /** Paths of the closure valid on production after the run (all of them when it succeeded). */
  pathsDone?: number;
  error?: string;
}

/** Options of {@link substitutionBench}. */
export interface SubstitutionOptions {
  sizes: ShapeSizes;
  /** Rounds at most; a round after the first runs only when time is left. */
  rounds: number;
  /** Time bound of one run, seconds. */
  runTimeout: number;
  /** Time bound of a run of a variant known to hang, seconds. */
  hangTimeout: number;
  /** Also the AES-GCM and compress variants. */
  extras: boolean;
  /** Shapes to build (attrs), default all. */
  shapes?: string[];
  /** Seconds left in the whole bench's budget. */
  secondsLeft: () => number;
  /**
   * Runs after the loopback rounds, with the closures built and staging still prepared (the
   * `ssh-ng` user, production's root key): the network section (bench/network.ts).
   */
  afterRounds?: (closures: Closure[]) => Promise<void>;
}

/** An empty result, filled as the bench goes. */
export function emptySubstitution(sizes: ShapeSizes): SubstitutionResults {
  return { closures: [], variants: [], runs: {}, sizes, rounds: 0 };
}

/** Everything part 1 measured. */
export interface SubstitutionResults {
  closures: Closure[];
  variants: Variant[];
  /** runs[shapeAttr][variantId] */
  runs: Record<string, Record<string, Run[]>>;
  sizes: ShapeSizes;
  rounds: number;
}

export async function sh(host: TestHost, script: string, input?: string): Promise<string> {
  return (await host.exec(`set -euo pipefail\n${script}`, { input })).stdout;
}

/** Builds the closures on staging (signed at build time) and reads their sizes. */
async function buildOnStaging(
  stage: TestHost,
  sizes: ShapeSizes,
  only?: string[],
): Promise<Closure[]> {
  await sh(stage, "cat > /root/bench.nix", benchExpression(sizes));
  const closures: Closure[] = [];
  for (const shape of shapes(sizes).filter((x) => !only || only.includes(x.attr))) {
    const drv = (
      await sh(stage, `nix-instantiate /root/bench.nix -A ${shape.attr} 2>/dev/null`)
    ).trim();
    const t = JSON.parse(
      await sh(
        stage,
        `s=$(date +%s%N); out=$(nix-store --realise ${drv} 2>/dev/null | tail -n 1); e=$(date +%s%N)
         printf '{"out":"%s","ns":%s}\\n' "$out" "$((e - s))"`,
      ),
    ) as { out: string; ns: number };
    const paths = (await sh(stage, `nix-store -qR ${t.out}`)).trim().split("\n");
    const sizes = (await sh(stage, `nix-store -q --size ${paths.join(" ")}`)).trim().split("\n");
    const narBytes = sizes.reduce((a, b) => a + Number(b), 0);
    const sigs = await sh(
      stage,
      `nix --extra-experimental-features nix-command path-info --sigs ${t.out}`,
    );
    if (!/stage\.test:/.test(sigs)) throw new Error(`staging did not sign ${t.out}: ${sigs}`);
    closures.push({ shape, drv, out: t.out, paths, narBytes, stagingBuildSeconds: t.ns / 1e9 });
    log(
      `staging built ${shape.attr}: ${paths.length} paths, ${(narBytes / 1e6).toFixed(1)} MB in ${(t.ns / 1e9).toFixed(1)} s`,
    );
  }
  return closures;
}

/** A second serve user for ssh-ng (same confinement), and root access for the raw stream. */
export async function prepareStaging(stage: TestHost, prod: TestHost): Promise<void> {
  const dropIn = renderSshdMatchBlock({
    user: NG_USER,
    authorizedKeysFile: STAGING_FILES.authorizedKeys,
    forceCommand: serveCommand("ssh-ng", false),
  });
  await sh(
    stage,
    `getent passwd ${NG_USER} >/dev/null || useradd --system --home-dir /var/empty --no-create-home --shell /bin/sh ${NG_USER}
     usermod -p '*' ${NG_USER}
     cat > ${NG_DROP_IN}
     /usr/sbin/sshd -t
     kill -HUP "$(cat /run/sshd.pid)"`,
    dropIn,
  );
  const prodRootKey = (await sh(prod, "cat /root/.ssh/id_ed25519.pub")).trim();
  await sh(stage, "cat >> /root/.ssh/authorized_keys", `${prodRootKey}\n`);
  await new Promise((r) => setTimeout(r, 300)); // sshd re-execs on HUP
}

/** Undoes {@link prepareStaging}, so `pulumi destroy` sees the host as the component left it. */
export async function restoreStaging(stage: TestHost, prod: TestHost): Promise<void> {
  const prodRootKey = (await sh(prod, "cat /root/.ssh/id_ed25519.pub")).trim().split(/\s+/)[1];
  await sh(
    stage,
    `rm -f ${NG_DROP_IN}
     kill -HUP "$(cat /run/sshd.pid)"
     userdel ${NG_USER} || true
     grep -vF '${prodRootKey}' /root/.ssh/authorized_keys > /root/.ssh/ak.tmp || true
     mv /root/.ssh/ak.tmp /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys`,
  );
  await sh(prod, "rm -f /root/.ssh/config");
}

async function setCipher(prod: TestHost, stagingName: string, aes: boolean): Promise<void> {
  if (aes) {
    await sh(
      prod,
      "install -d -m 700 /root/.ssh && cat > /root/.ssh/config && chmod 600 /root/.ssh/config",
      `Host ${stagingName}\n  Ciphers ${AES}\n`,
    );
  } else {
    await sh(prod, "rm -f /root/.ssh/config");
  }
}

/** Deletes the closure's outputs on production; fails when any is still there. */
export async function deleteOnProduction(prod: TestHost, c: Closure): Promise<void> {
  await sh(
    prod,
    `valid=$(nix-store --check-validity --print-invalid ${c.paths.join(" ")} | wc -l)
     if [ "$valid" != ${c.paths.length} ]; then nix-store --delete ${c.paths.join(" ")} >/dev/null 2>&1 || true; fi
     left=$(nix-store --check-validity --print-invalid ${c.paths.join(" ")} | wc -l)
     [ "$left" = ${c.paths.length} ] || { echo "still valid: $((${c.paths.length} - left)) paths" >&2; exit 1; }`,
  );
}

/** Runs one variant once; the time is measured inside production. */
export async function runVariant(
  prod: TestHost,
  stage: TestHost,
  c: Closure,
  v: Variant,
  round: number,
): Promise<Run> {
  const store = "/nix/store/";
  let command: string;
  if (v.command) {
    command = v.command(c);
  } else if (v.kind === "raw") {
    const names = c.paths.map((p) => p.slice(store.length)).join(" ");
    command = `ssh -o BatchMode=yes root@${stage.fqdn} 'cd /nix/store && tar -cf - ${names}'`;
  } else if (v.kind === "local") {
    command = `nix-store --realise ${c.drv} --option substituters ''`;
  } else {
    const opt = v.substituter ? ` --option substituters '${v.substituter}'` : "";
    command = `nix-store --realise ${c.out}${opt}`;
  }
  const before = acceptedLogins(stage);
  const out = await sh(
    prod,
    `log=$(mktemp); rc=0
     s=$(date +%s%N)
     timeout -k 5 ${v.timeoutSeconds} ${command} </dev/null >/dev/null 2>"$log" || rc=$?
     e=$(date +%s%N)
     invalid=$(nix-store --check-validity --print-invalid ${c.paths.join(" ")} | wc -l)
     printf '%s %s %s\\n' "$rc" "$((e - s))" "$invalid"
     tail -n 3 "$log" | tr '\\n' ' '; rm -f "$log"`,
  );
  const after = acceptedLogins(stage);
  const [first, ...rest] = out.split("\n");
  const [rc, ns, invalid] = first.trim().split(/\s+/).map(Number);
  const timedOut = rc === 124 || rc === 137;
  const complete = v.kind === "raw" || invalid === 0;
  const ok = rc === 0 && complete;
  const connections =
    loginsSince(before, after, "nix-ssh") +
    loginsSince(before, after, NG_USER) +
    (v.kind === "raw" ? loginsSince(before, after, "root") : 0) +
    (v.countLogins ?? []).reduce((n, user) => n + loginsSince(before, after, user), 0);
  const run: Run = {
    round,
    seconds: ns / 1e9,
    ok,
    timedOut,
    connections,
    pathsDone: v.kind === "raw" ? undefined : c.paths.length - invalid,
  };
  if (!ok) {
    run.error = timedOut
      ? `timed out after ${v.timeoutSeconds}s`
      : `exit ${rc}, ${invalid} paths missing: ${rest.join(" ").trim().slice(0, 200)}`;
  }
  return run;
}

/**
 * Runs part 1 on a configured stack's staging and one production host. `rounds` rounds; in each
 * round, every shape and every variant runs once, side by side.
 */
export async function substitutionBench(
  stage: TestHost,
  prod: TestHost,
  o: SubstitutionOptions,
  results: SubstitutionResults,
): Promise<void> {
  const { sizes, rounds } = o;
  results.sizes = sizes;
  results.rounds = 0;
  const closures = await buildOnStaging(stage, sizes, o.shapes);
  if (!closures.length) throw new Error(`NSC_BENCH_SHAPES: no shape among ${o.shapes?.join(",")}`);
  results.closures = closures;
  await prepareStaging(stage, prod);
  const vs = variants(stage.fqdn, o.runTimeout, o.hangTimeout, o.extras);
  results.variants = vs;
  const runs = results.runs;
  try {
    // The same derivations on production, for the local build.
    await sh(prod, "cat > /root/bench.nix", benchExpression(sizes));
    for (const c of closures) {
      const drv = (
        await sh(prod, `nix-instantiate /root/bench.nix -A ${c.shape.attr} 2>/dev/null`)
      ).trim();
      if (drv !== c.drv)
        throw new Error(`production evaluates ${c.shape.attr} to ${drv}, staging to ${c.drv}`);
      runs[c.shape.attr] = {};
    }
    let roundSeconds = 0;
    for (let round = 1; round <= rounds; round++) {
      if (round > 1 && o.secondsLeft() < roundSeconds * 1.1) {
        log(
          `substitution: no time left for round ${round} (a round takes ${roundSeconds.toFixed(0)} s)`,
        );
        break;
      }
      const roundStart = Date.now();
      // Variants run only in round 1 do not count towards the next round's estimate.
      let onceSeconds = 0;
      for (const c of closures) {
        for (const v of vs) {
          const previous = runs[c.shape.attr][v.id] ?? [];
          if (v.once && previous.length > 0) continue;
          const variantStart = Date.now();
          await setCipher(prod, stage.fqdn, v.aes);
          await deleteOnProduction(prod, c);
          const run = await runVariant(prod, stage, c, v, round);
          runs[c.shape.attr][v.id] = [...previous, run];
          if (v.once) onceSeconds += (Date.now() - variantStart) / 1000;
          log(
            `round ${round} ${c.shape.attr} ${v.id}: ${run.ok ? `${run.seconds.toFixed(2)} s` : `FAILED (${run.error})`}, ${run.connections} connections`,
          );
        }
        await setCipher(prod, stage.fqdn, false);
        await deleteOnProduction(prod, c);
      }
      results.rounds = round;
      roundSeconds = Math.max(roundSeconds, (Date.now() - roundStart) / 1000 - onceSeconds);
    }
    if (o.afterRounds) await o.afterRounds(closures);
  } finally {
    await restoreStaging(stage, prod);
  }
}

/** Median seconds of the successful runs of a variant. */
export function medianSeconds(runs: Run[] | undefined): number | undefined {
  return median((runs ?? []).filter((r) => r.ok).map((r) => r.seconds));
}

/**
 * Median over rounds of a per-round ratio `f(a, b)` of two variants measured in the same round
 * (side by side), e.g. raw time / variant time.
 */
export function medianRoundRatio(
  a: Run[] | undefined,
  b: Run[] | undefined,
  f: (a: number, b: number) => number,
): number | undefined {
  const ratios: number[] = [];
  for (const ra of a ?? []) {
    const rb = (b ?? []).find((x) => x.round === ra.round);
    if (ra.ok && rb?.ok) ratios.push(f(ra.seconds, rb.seconds));
  }
  return median(ratios);
}
