/**
 * `npm run bench`: the benchmarks of issue 7, on local test hosts, writing `bench/results.md`.
 *
 *   1. substitution: three closure shapes through the cache (ssh://, ssh-ng://, parameters,
 *      AES-GCM), built locally, and streamed raw over SSH (the limit)
 *   2. the tool's overhead: up / preview / no-op up / preview --refresh with 1, 4, 8 hosts, the
 *      empty-stack floor, SSH logins per host per operation; the operations that reach hosts
 *      with and without connection reuse (before / after)
 *   1b. the same over emulated networks (Toxiproxy: loopback, LAN, same region, cross-region)
 *      with every mode: raw stream, ssh://, ssh-ng://, an HTTP cache through an SSH forward, the
 *      component's nix-ssh-cache-fetch (bench/network.ts); NSC_BENCH_NETWORK=0 skips it, NSC_BENCH_PROFILES=a,b
 *      picks profiles (also `slow`, 80 ms and 20 Mbit/s, run only when named)
 *   1c. compression (issue 23): ssh:// with and without `compress=true`, nix-ssh-cache-fetch with
 *      and without `--compress`, on the compressible `text` shape and the incompressible ones, in
 *      the network section's runs (one table of gains)
 *   1d. time to fallback (issue 23): a production realise that falls back to building with
 *      staging up, refused and hung (NSC_BENCH_FALLBACK=0 skips it; NSC_BENCH_FALLBACK_CHAIN
 *      paths in the longer chain, default 3)
 *   3. connection reuse in isolation (the component's runScript, pooled and per script)
 *
 * Never run from tests. Every step is time-bounded; the whole run is bounded by
 * NSC_BENCH_BUDGET_MINUTES (default 30). Hosts start at 127.0.0.<NSC_BENCH_FIRST_ADDRESS> (default 2).
 * Knobs: NSC_BENCH_ROUNDS (substitution rounds, default 1), NSC_BENCH_OVERHEAD_ROUNDS (default 1),
 * NSC_BENCH_SUBSTITUTION=0 (section 2 only), NSC_BENCH_OUTPUT=file (instead of bench/results.md),
 * NSC_BENCH_EXTRAS=1 (section 1 also runs the AES-GCM and compress variants of issue 7),
 * NSC_BENCH_HOSTS (production host counts, default 1,4,8), NSC_BENCH_PREVIEWS (no-op previews and
 * refreshes per stack, default 3), NSC_BENCH_UPS (ups from scratch per stack, default 2),
 * NSC_BENCH_BEFORE_AFTER=1 (section 2
 * also measures the landed changes' before side: one connection per step, type-checked program), NSC_BENCH_QUICK=1 (small closures,
 * one round, 1 host: to check the bench itself; writes bench/results.quick.md).
 * NSC_BENCH_NETWORK_ONLY=1: one stack (staging + 1 production host), sections 1b-1d only (no
 * loopback rounds, no overhead); with NSC_BENCH_MODES=raw,ssh,… and NSC_BENCH_SHAPES=large,text,…
 * to pick the network section's modes and shapes, e.g. the compression figures alone:
 *   NSC_BENCH_NETWORK_ONLY=1 NSC_BENCH_MODES=ssh,ssh-compress,fetch,fetch-compress
 *   NSC_BENCH_SHAPES=large,text NSC_BENCH_OUTPUT=bench/results.compression.md npm run bench
 */
import * as fs from "fs";
import * as path from "path";
import { pulumiSkipReason, repoRoot } from "../tests/e2e/pulumi";
import { e2eSkipReason, startHosts, TestHosts } from "../tests/hosts/harness";
import { FULL_SIZES, ShapeSizes } from "./closures";
import { connectionReuseBench, ReuseResults } from "./connections";
import { emptyFallback, fallbackBench, FallbackResults } from "./fallback";
import { elapsedSeconds, envNumber, log, pulumiOk } from "./lib";
import { emptyNetwork, networkBench, NetworkResults } from "./network";
import { loadNow, machineInfo } from "./machine";
import { emptyOverhead, exampleStack, overheadBench, OverheadResults } from "./overhead";
import { renderReport } from "./report";
import { emptySubstitution, substitutionBench, SubstitutionResults } from "./substitution";

async function main(): Promise<number> {
  const skip = e2eSkipReason() ?? pulumiSkipReason();
  if (skip) {
    process.stderr.write(`[bench] cannot run: ${skip}\n`);
    return 1;
  }
  const quick = process.env.NSC_BENCH_QUICK === "1";
  const firstAddress = envNumber("NSC_BENCH_FIRST_ADDRESS", 2);
  const rounds = envNumber("NSC_BENCH_ROUNDS", 1);
  const overheadRounds = envNumber("NSC_BENCH_OVERHEAD_ROUNDS", 1);
  const budgetMinutes = envNumber("NSC_BENCH_BUDGET_MINUTES", 30);
  const runTimeout = envNumber("NSC_BENCH_RUN_TIMEOUT", 120);
  const hangTimeout = envNumber("NSC_BENCH_HANG_TIMEOUT", 6);
  const sizes: ShapeSizes = quick
    ? {
        largeBytes: 16 * 1024 * 1024,
        textBytes: 8 * 1024 * 1024,
        chainLength: 40,
        chainBytes: 64 * 1024,
        mixedLeaves: 9,
        work: 2_000,
      }
    : { ...FULL_SIZES, work: envNumber("NSC_BENCH_WORK", FULL_SIZES.work) };
  const networkOnly = process.env.NSC_BENCH_NETWORK_ONLY === "1";
  // The proxy's address stays after the 8 production hosts' whatever runs.
  const productionHosts = 8;
  const startedProduction = networkOnly ? 1 : productionHosts;
  const hostCounts = (process.env.NSC_BENCH_HOSTS || (quick ? "1" : "1,4,8"))
    .split(",")
    .map(Number);
  if (hostCounts.some((n) => !Number.isInteger(n) || n < 1 || n > productionHosts)) {
    throw new Error(`NSC_BENCH_HOSTS: host counts from 1 to ${productionHosts}, e.g. 1,4,8`);
  }

  const machine = machineInfo();
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, load ${machine.loadAtStart}`);
  const errors: string[] = [];
  let hosts: TestHosts | undefined;
  const substitution: SubstitutionResults = emptySubstitution(sizes);
  const overhead: OverheadResults = emptyOverhead();
  let reuse: ReuseResults | undefined;
  const network: NetworkResults = emptyNetwork();
  const fallback: FallbackResults = emptyFallback();
  const fallbackOn = process.env.NSC_BENCH_FALLBACK !== "0";
  const list = (name: string) => process.env[name]?.split(",").filter(Boolean);
  const networkOn = process.env.NSC_BENCH_NETWORK !== "0";
  const profiles = process.env.NSC_BENCH_PROFILES?.split(",").filter(Boolean);
  const networkTimeout = envNumber("NSC_BENCH_NETWORK_RUN_TIMEOUT", 90);
  const file = process.env.NSC_BENCH_OUTPUT
    ? path.resolve(process.env.NSC_BENCH_OUTPUT)
    : path.join(repoRoot, "bench", quick ? "results.quick.md" : "results.md");
  const substitutionOn = process.env.NSC_BENCH_SUBSTITUTION !== "0";
  const write = () =>
    fs.writeFileSync(
      file,
      renderReport({
        machine,
        loadAtEnd: loadNow(),
        totalSeconds: elapsedSeconds(),
        firstAddress,
        substitution: substitution.closures.length ? substitution : undefined,
        overhead: overhead.runs.length ? overhead : undefined,
        reuse,
        network: network.profiles.length ? network : undefined,
        fallback: fallback.runs.length ? fallback : undefined,
        errors,
      }),
    );
  // Planning leaves a margin for teardown and the report; the watchdog is the hard bound.
  const secondsLeft = () => budgetMinutes * 60 - 60 - elapsedSeconds();
  const watchdog = setTimeout(() => {
    errors.push(
      `the whole bench exceeded ${budgetMinutes} min and was stopped; figures are partial`,
    );
    log(`the whole bench exceeded ${budgetMinutes} min: stopping`);
    void (hosts?.teardown() ?? Promise.resolve()).finally(() => {
      write();
      process.exit(2);
    });
  }, budgetMinutes * 60_000);
  watchdog.unref();
  // Ctrl-C / kill: tear the test hosts down and keep what was measured.
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      errors.push(`stopped by ${sig}; figures are partial`);
      log(`${sig}: stopping`);
      void (hosts?.teardown() ?? Promise.resolve()).finally(() => {
        write();
        process.exit(130);
      });
    });
  }

  try {
    hosts = await startHosts(
      [
        { name: "stage" },
        ...Array.from({ length: startedProduction }, (_, i) => ({ name: `prod${i + 1}` })),
      ],
      { firstAddress },
    );
    const stage = hosts.byName("stage");
    const prods = hosts.hosts.filter((h) => h.name !== "stage");
    log(`test hosts up: ${hosts.hosts.map((h) => `${h.name}=${h.address}`).join(" ")}`);
    /** Sections 1-1d and 3 on a configured stack's staging and first production host. */
    const withConfiguredStack = async (s: typeof stage, p: typeof stage): Promise<void> => {
      try {
        await substitutionBench(
          s,
          p,
          {
            sizes,
            rounds: networkOnly ? 0 : rounds,
            runTimeout,
            hangTimeout,
            extras: process.env.NSC_BENCH_EXTRAS === "1",
            shapes: list("NSC_BENCH_SHAPES"),
            // The network section runs after the loopback rounds: keep its share.
            secondsLeft: () => secondsLeft() - 120 - (networkOn ? 780 : 0),
            afterRounds: async (closures) => {
              if (networkOn) {
                await networkBench(
                  s,
                  p,
                  closures,
                  {
                    proxyAddress: `127.0.0.${firstAddress + productionHosts + 1}`,
                    runTimeout: networkTimeout,
                    profiles,
                    modes: list("NSC_BENCH_MODES"),
                    shapes: list("NSC_BENCH_SHAPES"),
                    secondsLeft: () => secondsLeft() - 120,
                  },
                  network,
                ).catch((e: Error) => {
                  errors.push(`network: ${e.message.split("\n")[0]}`);
                  log(`network FAILED: ${e.message}`);
                });
              }
              if (fallbackOn) {
                await fallbackBench(
                  s,
                  p,
                  { chain: envNumber("NSC_BENCH_FALLBACK_CHAIN", 3), boundSeconds: 120 },
                  fallback,
                ).catch((e: Error) => {
                  errors.push(`time to fallback: ${e.message.split("\n")[0]}`);
                  log(`time to fallback FAILED: ${e.message}`);
                });
              }
            },
          },
          substitution,
        );
      } catch (e) {
        errors.push(`substitution: ${(e as Error).message.split("\n")[0]}`);
        log(`substitution FAILED: ${(e as Error).message}`);
      }
      if (networkOnly) return;
      try {
        reuse = await connectionReuseBench(prods, quick ? 2 : 3);
      } catch (e) {
        errors.push(`connection reuse prototype: ${(e as Error).message.split("\n")[0]}`);
        log(`connection reuse FAILED: ${(e as Error).message}`);
      }
    };
    if (networkOnly) {
      const stack = await exampleStack("benchnet", stage, [prods[0]]);
      try {
        await pulumiOk(stack, ["up", "--yes", "--skip-preview"], 300);
        log("network only: stack up");
        await withConfiguredStack(stage, prods[0]);
      } finally {
        await stack.dispose().catch((e: Error) => log(`stack dispose failed: ${e.message}`));
      }
    } else {
      await overheadBench(
        stage,
        prods,
        {
          hostCounts,
          rounds: overheadRounds,
          // Medians of several samples: one sample of a few seconds of CPU varies by ±10 % here.
          previews: envNumber("NSC_BENCH_PREVIEWS", quick ? 1 : 3),
          upsFor: () => envNumber("NSC_BENCH_UPS", quick ? 1 : 2),
          beforeAfter: process.env.NSC_BENCH_BEFORE_AFTER === "1",
          timeoutSeconds: 300,
          secondsLeft,
          withConfiguredStack: !substitutionOn ? undefined : withConfiguredStack,
        },
        overhead,
      );
    }
  } catch (e) {
    errors.push((e as Error).message.split("\n")[0]);
    log(`FAILED: ${(e as Error).message}`);
  } finally {
    await hosts?.teardown().catch((e: Error) => errors.push(`teardown: ${e.message}`));
  }

  clearTimeout(watchdog);
  write();
  log(`wrote ${path.relative(process.cwd(), file)} (${errors.length} errors)`);
  return errors.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`[bench] ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
