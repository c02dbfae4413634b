/**
 * The demo (`npm run demo`): the seed tutorial "Speed up NixOS deployments", done by the example
 * stack (Pulumi.yaml + index.ts) with the real Pulumi CLI on local test hosts, step by step and
 * timed.
 *
 *   1. three test hosts: `stage` (root login), `prod1` (login `ship` + sudo, as in the seed),
 *      `prod2` (root has no SSH key yet)
 *   2. a stack on a private local backend, configured like a user would
 *   3. `pulumi preview`, `pulumi up`, the stack outputs
 *   4. the point of it all: staging builds an "app" (a chain of CPU-bound derivations), the
 *      production hosts fetch it from staging instead of building it
 *   5. a second `pulumi up` changes nothing; `pulumi destroy`; teardown
 *
 * Needs root (the test hosts are namespaces). Run through `scripts/demo`, which sets up the
 * toolchain and builds. NSC_HOSTS_FIRST_ADDRESS moves the hosts (default 127.0.0.2, .3, .4).
 */
import * as crypto from "crypto";
import * as fs from "fs";
import { CliResult, PulumiStack, pulumiSkipReason, repoRoot } from "../tests/e2e/pulumi";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../tests/hosts/harness";

/** A positive integer from the environment, or the default. */
function envCount(name: string, fallback: number): number {
  const raw = process.env[name];
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`[demo] ERROR: ${name}=${raw}: must be a positive integer\n`);
    process.exit(1);
  }
  return n;
}

/** Derivations in the demo app's chain, and the CPU work of each (iterations of a sh loop). */
const APP_PARTS = envCount("NSC_DEMO_PARTS", 20);
const APP_WORK = envCount("NSC_DEMO_WORK", 1_000_000);
/** MiB of (incompressible) output per derivation. */
const APP_MIB = envCount("NSC_DEMO_MIB", 4);

const LABEL_WIDTH = 50;
const demoStart = Date.now();

function say(text: string): void {
  process.stdout.write(`[demo] ${text}\n`);
}

function detail(text: string): void {
  process.stdout.write(`[demo]      ${text}\n`);
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** A failure with the tail of what the failing command printed. */
class DemoError extends Error {
  constructor(
    message: string,
    readonly output = "",
  ) {
    super(message);
  }
}

/**
 * Runs one timed step: prints `[demo] <label> ....` first, then the duration and what `fn`
 * reports, on the same line.
 */
async function timed<T>(
  label: string,
  fn: () => Promise<T>,
  summary: (value: T) => string = () => "",
): Promise<{ value: T; ms: number }> {
  const dots = ".".repeat(Math.max(3, LABEL_WIDTH - label.length));
  process.stdout.write(`[demo] ${label} ${dots} `);
  const start = Date.now();
  let value: T;
  try {
    value = await fn();
  } catch (err) {
    process.stdout.write(`FAILED after ${seconds(Date.now() - start)}\n`);
    throw err;
  }
  const ms = Date.now() - start;
  const s = summary(value);
  process.stdout.write(`${seconds(ms).padStart(7)}${s ? ` (${s})` : ""}\n`);
  return { value, ms };
}

function tail(text: string, lines = 40): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** `pulumi <args>`, failing with the tail of its output. */
async function pulumi(what: string, r: Promise<CliResult>) {
  const res = await r;
  if (res.code !== 0) {
    throw new DemoError(`${what} exited ${res.code}`, res.output);
  }
  return res;
}

/** The counts of the "Resources:" block of a preview/up/destroy, e.g. "23 created". */
function resourceSummary(output: string): string {
  const lines = output.split("\n");
  const at = lines.findIndex((l) => /^Resources:\s*$/.test(l.trim()));
  if (at < 0) return "no resource summary";
  const counts: string[] = [];
  for (const line of lines.slice(at + 1)) {
    const m = /^\s*[-+~±]?\s*(\d+ [a-z -]+?)\s*$/.exec(line);
    if (!m) break;
    counts.push(m[1]);
  }
  return counts.join(", ") || "no changes";
}

/** "ssh-ed25519 AAAAC3Nz…k8Qw root@prod2" */
function shortKey(key: string): string {
  const [type, body, ...comment] = key.trim().split(/\s+/);
  if (!body) return key;
  const short = body.length > 24 ? `${body.slice(0, 12)}…${body.slice(-8)}` : body;
  return [type, short, ...comment].join(" ");
}

/** Runs a script as root inside a test host, failing with its stderr. */
async function onHost(host: TestHost, what: string, script: string, input?: string) {
  const r = await host.exec(script, { check: false, input });
  if (r.code !== 0) {
    throw new DemoError(`${what} on ${host.name} exited ${r.code}`, `${r.stdout}\n${r.stderr}`);
  }
  return r;
}

/**
 * The "app": APP_PARTS derivations in a chain (each needs the previous one, like compiling
 * modules of a program), each burning APP_WORK loop iterations of CPU and writing APP_MIB MiB.
 * No nixpkgs: the builder is /bin/sh with the host's coreutils (Debian's Nix has no sandbox).
 */
function appExpression(): string {
  return `{ nonce }:
let
  part = i: prev: builtins.derivation {
    name = "demo-app-part-\${toString i}-\${nonce}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    inherit prev nonce;
    args = [ "-c" ''
      i=0
      while [ "$i" -lt ${APP_WORK} ]; do i=$((i + 1)); done
      /bin/mkdir "$out"
      echo "$prev" > "$out/previous-part"
      /usr/bin/head -c ${APP_MIB}M /dev/urandom > "$out/object-code"
    '' ];
  };
  chain = i: if i == 0 then "none" else part i (chain (i - 1));
in chain ${APP_PARTS}
`;
}

/** What `nix-store --realise` of the app did on a production host. */
/** The component's closure fetcher on production (`fetcher`, on by default). */
const FETCHER = "/usr/local/sbin/nix-ssh-cache-fetch";

interface Fetch {
  paths: number;
  sources: string[];
  ms: number;
}

async function fetchApp(host: TestHost, app: string, expectedPaths: number): Promise<Fetch> {
  const start = Date.now();
  const r = await onHost(host, "nix-store --realise", `nix-store --realise ${app} 2>&1`);
  const ms = Date.now() - start;
  const copied = r.stdout.split("\n").filter((l) => /^copying path /.test(l));
  const sources = [...new Set(copied.map((l) => /from '([^']+)'/.exec(l)?.[1] ?? "?"))];
  if (copied.length !== expectedPaths) {
    throw new DemoError(
      `${host.name} copied ${copied.length} paths, expected ${expectedPaths} (the app's closure)`,
      r.stdout,
    );
  }
  return { paths: copied.length, sources, ms };
}

/** The same with the component's `nix-ssh-cache-fetch`: the whole closure in one SSH session. */
async function fetchAppInOneSession(
  host: TestHost,
  app: string,
  expectedPaths: number,
): Promise<Fetch> {
  const start = Date.now();
  const r = await onHost(host, "nix-ssh-cache-fetch", `${FETCHER} --json ${app}`);
  const ms = Date.now() - start;
  const report = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as {
    fetched?: number;
    fallback?: boolean;
  };
  const from = /to fetch from (\S+)/.exec(r.stderr)?.[1] ?? "?";
  if (report.fallback || report.fetched !== expectedPaths) {
    throw new DemoError(
      `${host.name} fetched ${report.fetched} paths in one session, expected ${expectedPaths} (the app's closure)`,
      r.stdout + r.stderr,
    );
  }
  return { paths: report.fetched, sources: [from], ms };
}

/** Checks that every path of the app's closure on `host` carries staging's signature. */
async function checkSigned(host: TestHost, app: string, keyName: string): Promise<number> {
  const r = await onHost(
    host,
    "nix path-info --sigs",
    `nix --extra-experimental-features nix-command path-info --recursive --sigs ${app}`,
  );
  const lines = r.stdout.trim().split("\n");
  const unsigned = lines.filter((l) => !l.split(/\s+/).some((w) => w.startsWith(`${keyName}:`)));
  if (unsigned.length) {
    throw new DemoError(`paths on ${host.name} not signed by ${keyName}`, unsigned.join("\n"));
  }
  return lines.length;
}

async function main(): Promise<void> {
  say(
    `Speed up NixOS deployments: staging becomes a private, signed binary cache (${repoRoot}/index.ts)`,
  );
  const cannot = e2eSkipReason() ?? pulumiSkipReason();
  if (cannot) throw new DemoError(`the demo cannot run here: ${cannot}`);
  let hosts: TestHosts | undefined;
  let stack: PulumiStack | undefined;
  let stackExists = false;
  let failed = false;
  try {
    // 1. hosts
    hosts = (
      await timed(
        "1. start test hosts",
        () =>
          startHosts([
            { name: "stage" },
            { name: "prod1", loginUser: "ship" },
            { name: "prod2", rootKey: false },
          ]),
        (h) => `${h.hosts.length} hosts`,
      )
    ).value;
    const stage = hosts.byName("stage");
    const prod1 = hosts.byName("prod1");
    const prod2 = hosts.byName("prod2");
    detail(`stage  ${stage.address} (stage.test)  login root`);
    detail(`prod1  ${prod1.address} (prod1.test)  login ship, sudo to root (the seed's setup)`);
    detail(`prod2  ${prod2.address} (prod2.test)  login root; root has no SSH key yet`);

    // 2. stack + config
    const s = new PulumiStack(repoRoot, "demo");
    stack = s;
    const config = {
      staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
      production: [prod1, prod2].map((p) => ({
        host: p.address,
        user: p.user,
        hostKey: p.hostKey,
        name: p.name,
      })),
    };
    await timed("2. pulumi stack init + config", async () => {
      await s.init();
      stackExists = true;
      const json: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(config)) {
        json[`nix-ssh-cache:${key}`] = {
          value: JSON.stringify(value),
          objectValue: value,
          secret: false,
        };
      }
      await s.ok(["config", "set-all", "--json", JSON.stringify(json)]);
      await s.setConfig("sshKey", stage.privateKey, { secret: true });
    });
    detail(`staging    = ${JSON.stringify({ ...config.staging, hostKey: "…" })}`);
    detail(
      `production = ${JSON.stringify(config.production.map((p) => ({ ...p, hostKey: "…" })))}`,
    );
    detail("sshKey     = (secret)");

    // The tutorial's situation: staging already built the app before the cache existed.
    const previous = (
      await timed(
        "   staging's previous release, built before up",
        async () => {
          const expr = `builtins.derivation { name = "demo-previous-release"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo previous > $out" ]; }`;
          const r = await onHost(stage, "nix-build", `nix-build --no-out-link -E '${expr}'`);
          return r.stdout.trim().split("\n").pop() ?? "";
        },
        () => "unsigned: no signing key yet",
      )
    ).value;
    detail(previous);

    // 3. preview, up, outputs
    await timed(
      "3. pulumi preview",
      () => pulumi("pulumi preview", s.preview()),
      (r) => resourceSummary(r.output),
    );
    await timed(
      "   pulumi up",
      () => pulumi("pulumi up", s.up()),
      (r) => resourceSummary(r.output),
    );
    const out = await s.outputs();
    const cachePublicKey = String(out.cachePublicKey);
    detail(`cachePublicKey     = ${cachePublicKey}`);
    detail(`substituterUrl     = ${String(out.substituterUrl)}`);
    detail(`stagingHostKey     = ${shortKey(String(out.stagingHostKey))}`);
    for (const k of (out.productionRootKeys as string[]) ?? []) {
      const note = k.trim().endsWith("-nix-ssh-cache") ? "  (generated: root had no key)" : "";
      detail(`productionRootKeys : ${shortKey(k)}${note}`);
    }
    detail(
      `signedPaths        = ${String(out.signedPaths)}  (paths already on staging, signed once: signExistingPaths)`,
    );
    detail(`verified           = ${String(out.verified)}`);
    if (out.verified !== true) {
      throw new DemoError(
        "the stack's output `verified` is not true",
        JSON.stringify(out, null, 2),
      );
    }
    const keyName = cachePublicKey.split(":")[0];
    await timed(
      "   prod1 fetches the previous release",
      async () => {
        await onHost(prod1, "nix-store --realise", `nix-store --realise ${previous}`);
        return checkSigned(prod1, previous, keyName);
      },
      () => `signed by ${keyName} on staging after the fact (signExistingPaths), substituted`,
    );

    // 4. the point of it all
    const nonce = `${Date.now().toString(36)}${crypto.randomBytes(3).toString("hex")}`;
    say(
      `4. the app: ${APP_PARTS} derivations in a chain, each ${APP_WORK} loop iterations of CPU and ${APP_MIB} MiB (nonce ${nonce})`,
    );
    await onHost(stage, "writing the app", "cat > /root/demo-app.nix", appExpression());
    const build = await timed(
      "   build on staging (no cache)",
      async () => {
        const r = await onHost(
          stage,
          "nix-build",
          `NIX_REMOTE=daemon nix-build /root/demo-app.nix --argstr nonce ${nonce} --no-out-link`,
        );
        const app = r.stdout.trim().split("\n").pop() ?? "";
        if (!app.startsWith("/nix/store/")) {
          throw new DemoError("nix-build on staging printed no store path", r.stdout + r.stderr);
        }
        return app;
      },
      () => "what every production host would pay without the cache",
    );
    const app = build.value;
    const closure = await onHost(
      stage,
      "nix-store -qR",
      `nix-store -qR ${app} | wc -l; nix-store -qR ${app} | xargs nix-store -q --size | awk '{s+=$1} END {print s}'`,
    );
    const [pathCount, bytes] = closure.stdout.trim().split("\n").map(Number);
    detail(`${app}`);
    detail(`closure: ${pathCount} paths, ${(bytes / 1048576).toFixed(1)} MiB`);
    const stagedSigned = await checkSigned(stage, app, keyName);
    detail(`all ${stagedSigned} paths signed on staging by ${keyName}`);

    const fetches: Fetch[] = [];
    // prod1 as Nix substitutes, path by path; prod2 with the fetcher, in one SSH session.
    const ways = [
      { prod: prod1, how: "nix-store --realise", fetch: fetchApp, what: "paths from" },
      {
        prod: prod2,
        how: "nix-ssh-cache-fetch",
        fetch: fetchAppInOneSession,
        what: "paths in one SSH session from",
      },
    ];
    for (const { prod, how, fetch, what } of ways) {
      const f = await timed(
        `   ${prod.name} fetches it (${how})`,
        () => fetch(prod, app, pathCount),
        (v) => `${v.paths} ${what} ${v.sources.join(", ")}`,
      );
      fetches.push(f.value);
      const signed = await checkSigned(prod, app, keyName);
      detail(
        `${prod.name}: all ${signed} paths carry the signature ${keyName}:… (nix path-info --sigs)`,
      );
    }
    const ratio = build.ms / fetches[0].ms;
    say(
      `   speed-up: ${seconds(build.ms)} building vs ${seconds(fetches[0].ms)} downloading = ${ratio.toFixed(1)}x faster on prod1 (ssh://); ${(build.ms / fetches[1].ms).toFixed(1)}x on prod2 (one session)`,
    );

    // 5. idempotence, destroy
    await timed(
      "5. pulumi up again",
      () => pulumi("second pulumi up", s.up()),
      (r) => resourceSummary(r.output),
    );
    await timed(
      "   pulumi destroy",
      () => pulumi("pulumi destroy", s.run(["destroy", "--yes", "--skip-preview"])),
      (r) => resourceSummary(r.output),
    );
    await s.ok(["stack", "rm", "--yes", s.stack], { scope: "none" });
    stackExists = false;
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    if (stack) {
      const s = stack;
      if (stackExists) {
        await timed("   cleanup: destroy + stack rm", () => s.dispose()).catch(() => undefined);
      } else {
        fs.rmSync(s.workDir, { recursive: true, force: true });
      }
    }
    if (hosts) {
      const h = hosts;
      await timed("   teardown of the test hosts", () => h.teardown());
    }
    say(`${failed ? "FAILED" : "done"}: total ${seconds(Date.now() - demoStart)}`);
  }
}

main().catch((err: unknown) => {
  const e = err as Error;
  process.stderr.write(`[demo] ERROR: ${e.message}\n`);
  if (err instanceof DemoError) {
    if (err.output)
      process.stderr.write(`[demo] --- tail of its output ---\n${tail(err.output)}\n`);
  } else if (e.stack) {
    process.stderr.write(`${e.stack}\n`);
  }
  process.exitCode = 1;
});
