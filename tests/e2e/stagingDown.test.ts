/**
 * Production keeps working when staging is down (issue 23, item 2). `up` gives root's ssh a
 * `ConnectTimeout` for staging and Nix `fallback = true`, so a production `nix-store --realise`
 * of a path no substituter has (a local derivation, builder /bin/sh) builds it from source when
 * staging refuses connections (sshd stopped) or accepts them and never answers (a hung host):
 * in seconds, not in a failure or a hang. The bound asserted (60 s, on a monotonic clock) is a
 * hang guard only; the measured figures are reported as test diagnostics.
 *
 * With NSC_MEASURE_BEFORE=1 the test also measures the settings before this change (no
 * ConnectTimeout, `fallback = false`), cutting a hang off after 90 s.
 */
import { after, before, describe, it, TestContext } from "node:test";
import * as assert from "node:assert/strict";
import { randomBytes } from "crypto";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { exampleStack, silentListener } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
/** Hang guard for one realise (the measured time is far below it). */
const BOUND_MS = 60_000;
const SSH_DROP_IN = "/etc/ssh/ssh_config.d/nix-ssh-cache.conf";

/** A derivation instantiated on `host` that no cache has: realising it means building it. */
async function localDerivation(host: TestHost, label: string): Promise<string> {
  const nonce = `${label}-${randomBytes(4).toString("hex")}`;
  const expr = `builtins.derivation { name = "outage-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }`;
  return (await host.exec(`nix-instantiate -E '${expr}'`)).stdout.trim();
}

/** A chain of `n` local derivations on `host`, each referring to the one before; the top one. */
async function localChain(host: TestHost, n: number): Promise<string> {
  const nonce = randomBytes(4).toString("hex");
  const expr =
    `let mk = i: prev: builtins.derivation { name = "outage-chain-${nonce}-\${toString i}"; ` +
    `system = builtins.currentSystem; builder = "/bin/sh"; ` +
    `args = [ "-c" "echo \${toString i} \${prev} > $out" ]; }; ` +
    `go = i: if i == 0 then mk 0 "" else mk i (go (i - 1)); in go ${n - 1}`;
  return (await host.exec(`nix-instantiate -E '${expr}'`)).stdout.trim();
}

/** Realises `drv` on `host` (extra nix-store flags `options`); its result and elapsed ms. */
async function timedRealise(host: TestHost, drv: string, options = "", cutOffSeconds = 120) {
  const start = process.hrtime.bigint();
  const r = await host.exec(`timeout ${cutOffSeconds} nix-store ${options} --realise ${drv}`, {
    check: false,
  });
  const ms = Number((process.hrtime.bigint() - start) / 1_000_000n);
  return { ...r, ms };
}

describe("staging down: production falls back to building, in seconds", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod: TestHost;

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prod = hosts.byName("prod1");
    stack = await exampleStack(repoRoot, "e2e", stage, [prod]);
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
  });

  after(async () => {
    await stage?.startSshd().catch(() => undefined);
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("up sets ConnectTimeout for staging in root's ssh and fallback = true in Nix", async () => {
    const g = await prod.exec(`ssh -G nix-ssh@${stage.fqdn}`);
    assert.match(g.stdout, /^connecttimeout 5$/m);
    const conf = await prod.exec("nix --extra-experimental-features nix-command show-config");
    assert.match(conf.stdout, /^fallback = true$/m);
  });

  it("sshd stopped (connection refused): the realise builds the path", async (t: TestContext) => {
    const drv = await localDerivation(prod, "refused");
    await stage.stopSshd();
    try {
      const r = await timedRealise(prod, drv);
      t.diagnostic(`time to build with staging refusing: ${r.ms} ms`);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.ms < BOUND_MS, `took ${r.ms} ms`);
      assert.match(r.stdout.trim(), /^\/nix\/store\/[a-z0-9]{32}-outage-refused-/);
      if (process.env.NSC_MEASURE_BEFORE === "1") {
        const old = await timedRealise(
          prod,
          await localDerivation(prod, "refused-before"),
          "--option fallback false",
          90,
        );
        t.diagnostic(
          `before (fallback = false): exit ${old.code} after ${old.ms} ms: ${old.stderr.trim().split("\n").pop()}`,
        );
      }
    } finally {
      await stage.startSshd();
    }
  });

  it("staging accepts and never answers (a hung host): the realise builds the path", async (t: TestContext) => {
    const drv = await localDerivation(prod, "silent");
    await stage.stopSshd();
    const close = await silentListener(stage);
    try {
      const r = await timedRealise(prod, drv);
      t.diagnostic(`time to build with staging silent: ${r.ms} ms`);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.ms < BOUND_MS, `took ${r.ms} ms`);
      assert.match(r.stdout.trim(), /^\/nix\/store\/[a-z0-9]{32}-outage-silent-/);
      if (process.env.NSC_MEASURE_BEFORE === "1") {
        // The settings before this change: no ConnectTimeout, fallback = false.
        await prod.exec(
          `cp ${SSH_DROP_IN} /tmp/drop-in && sed -i '/ConnectTimeout/d' ${SSH_DROP_IN}`,
        );
        try {
          const old = await timedRealise(
            prod,
            await localDerivation(prod, "silent-before"),
            "--option fallback false",
            90,
          );
          t.diagnostic(
            `before (no ConnectTimeout, fallback = false): exit ${old.code} after ${old.ms} ms (124: cut off by timeout)`,
          );
          const noTimeout = await timedRealise(
            prod,
            await localDerivation(prod, "silent-fallback-only"),
            "",
            90,
          );
          t.diagnostic(
            `fallback = true without ConnectTimeout: exit ${noTimeout.code} after ${noTimeout.ms} ms`,
          );
          // The settings of this change, on 5 paths to build instead of 1.
          await prod.exec(`cp /tmp/drop-in ${SSH_DROP_IN}`);
          const many = await timedRealise(prod, await localChain(prod, 5), "", 200);
          t.diagnostic(`a chain of 5 paths to build: exit ${many.code} after ${many.ms} ms`);
        } finally {
          await prod.exec(`cp /tmp/drop-in ${SSH_DROP_IN}`);
        }
      }
    } finally {
      await close();
      await stage.startSshd();
    }
  });

  it("staging back: production substitutes from it again", async () => {
    const nonce = randomBytes(4).toString("hex");
    const expr = `builtins.derivation { name = "back-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }`;
    const out = (await stage.exec(`nix-build --no-out-link -E '${expr}'`)).stdout.trim();
    const r = await prod.exec(`nix-store --realise ${out}`, { check: false });
    assert.equal(r.code, 0, r.stderr);
  });
});
