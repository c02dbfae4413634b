/**
 * Reliability, item 2: faults. Each fault gives a clear error naming the host (and the cause),
 * and after the fault is gone one `pulumi up` converges: staging's sshd stopped during up, one
 * production host unreachable, `pulumi up` SIGKILLed mid-apply (CLI recovery of pending
 * operations, no half-written files), nix-daemon stopped on staging (verification names it),
 * and two stacks applying to the same staging host at once.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "child_process";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../../hosts/harness";
import { CliResult, pulumiSkipReason, PulumiStack } from "../pulumi";
import {
  buildOnStaging,
  exampleStack,
  hostConfig,
  leftoverTempFiles,
  PROJECT,
  substitute,
  TEST_TIMEOUT_MS,
} from "./common";
import { excerpt, reliabilityCase } from "./record";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const ITEM = "faults";

/**
 * `pulumi up` whose output is watched: `onLine` sees every output line and may return `"kill"`
 * to SIGKILL the CLI's process group (the CLI, its language host and the program).
 */
function upWatched(
  stack: PulumiStack,
  onLine: (line: string, output: string) => "kill" | void,
): Promise<CliResult & { killed: boolean }> {
  const args = ["up", "--yes", "--skip-preview", "--non-interactive", "--cwd", stack.projectDir];
  args.push("--stack", stack.stack, "--config-file", stack.configFile);
  return new Promise((resolve, reject) => {
    const child = spawn("pulumi", args, {
      env: stack.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    let stdout = "";
    let stderr = "";
    let killed = false;
    let partial = "";
    const feed = (d: Buffer, which: "out" | "err") => {
      const text = d.toString();
      output += text;
      if (which === "out") stdout += text;
      else stderr += text;
      partial += text;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (!killed && onLine(line, output) === "kill") {
          killed = true;
          try {
            process.kill(-child.pid!, "SIGKILL");
          } catch {
            /* gone */
          }
        }
      }
    };
    child.stdout.on("data", (d: Buffer) => feed(d, "out"));
    child.stderr.on("data", (d: Buffer) => feed(d, "err"));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 137, stdout, stderr, output, killed }));
  });
}

/** Lines of `output` that report an error, joined (for the `observed` column). */
function errorLines(output: string, pattern: RegExp): string {
  return output
    .split("\n")
    .filter((l) => pattern.test(l))
    .map((l) => l.trim())
    .slice(0, 2)
    .join(" / ");
}

async function assertConverged(
  stack: PulumiStack,
  stage: TestHost,
  prods: TestHost[],
): Promise<void> {
  const out = await stack.outputs();
  assert.equal(out.verified, true, "verified");
  const { out: path } = await buildOnStaging(stage, "converged");
  for (const p of prods) await substitute(p, path);
  for (const h of [stage, ...prods]) await h.exec("sshd -t");
}

describe("reliability: faults on one deployment", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prods: TestHost[];

  before(async () => {
    hosts = await startHosts([
      { name: "stage" },
      { name: "prod1" },
      { name: "prod2", loginUser: "ship" },
    ]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1"), hosts.byName("prod2")];
    stack = await exampleStack("faults", stage.privateKey, hostConfig(stage, prods));
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it(
    "staging's sshd stopped during up: error names staging; after restart one up converges",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await reliabilityCase(
        ITEM,
        "staging sshd stopped during the first up",
        "up fails naming staging; restart + one up converges",
        async () => {
          let stopping: Promise<void> | undefined;
          const r = await upWatched(stack, (line) => {
            // Staging goes down: its sshd stops and the open sessions end (the provider
            // keeps one connection per host open, which a stopped listener alone would spare).
            if (!stopping && /cache-staging-probe\s+created/.test(line))
              stopping = stage
                .stopSshd()
                .then(() => stage.exec("pkill -f '^sshd: ' || true"))
                .then(() => undefined);
          });
          await stopping;
          assert.ok(stopping, `staging probe never created:\n${r.output.slice(-3000)}`);
          assert.notEqual(r.code, 0, r.output.slice(-3000));
          const named = errorLines(
            r.output,
            new RegExp(`error: .*${stage.address.replace(/\./g, "\\.")}`),
          );
          assert.ok(named, `no error naming ${stage.address}:\n${r.output.slice(-3000)}`);
          await stage.startSshd();
          const again = await stack.up();
          assert.equal(again.code, 0, again.output.slice(-3000));
          await assertConverged(stack, stage, prods);
          return `${excerpt(named, 200)} → after restart: up exit 0, verified`;
        },
      );
    },
  );

  it(
    "one production host unreachable: the others complete, the host is named; later up converges",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await reliabilityCase(
        ITEM,
        "prod2 unreachable during an update (protocol ssh → ssh-ng), up --continue-on-error",
        "staging and prod1 complete, error names prod2; one up converges",
        async () => {
          await stack.setConfigObjects({ protocol: "ssh-ng" }, PROJECT);
          await prods[1].stopSshd();
          // --continue-on-error: by default the engine starts no new step after a failure
          const r = await stack.up(["--continue-on-error"]).finally(() => prods[1].startSshd());
          assert.notEqual(r.code, 0, r.output.slice(-3000));
          const named = errorLines(
            r.output,
            new RegExp(`error: .*${prods[1].address.replace(/\./g, "\\.")}`),
          );
          assert.ok(named, `no error naming ${prods[1].address}:\n${r.output.slice(-3000)}`);
          assert.doesNotMatch(
            r.output,
            new RegExp(`error: .*(${stage.address}|${prods[0].address})[^0-9]`),
          );
          // staging and prod1 completed: prod1 substitutes over ssh-ng already
          assert.match(
            (await prods[0].exec("cat /etc/nix/nix-ssh-cache.conf")).stdout,
            /ssh-ng:\/\//,
          );
          const { out } = await buildOnStaging(stage, "prod1-alone");
          await substitute(prods[0], out);
          const again = await stack.up();
          assert.equal(again.code, 0, again.output.slice(-3000));
          await assertConverged(stack, stage, prods);
          return `${excerpt(named, 200)}; prod1 substituted meanwhile → up exit 0, verified`;
        },
      );
    },
  );

  it(
    "nix-daemon stopped on staging: verification names the cause; restart + up fixes",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await reliabilityCase(
        ITEM,
        "nix-daemon stopped on staging, verification re-run (up --replace <verify>)",
        "up fails naming staging's nix-daemon; start + one up converges",
        async () => {
          const urns = (await stack.exportState())
            .split("\n")
            .map((l) => /"urn": "([^"]*cache-prod1-verify)"/.exec(l)?.[1])
            .filter((u): u is string => !!u);
          assert.ok(urns.length > 0, "no verify resource in the state");
          await stage.stopNixDaemon();
          const r = await stack.up(["--replace", urns[0]]).finally(() => stage.startNixDaemon());
          assert.notEqual(r.code, 0, r.output.slice(-3000));
          const named = errorLines(r.output, /error: .*nix-daemon/);
          assert.ok(named, `no error naming nix-daemon:\n${r.output.slice(-3000)}`);
          const again = await stack.up();
          assert.equal(again.code, 0, again.output.slice(-3000));
          await assertConverged(stack, stage, prods);
          return `${excerpt(named, 240)} → after start: up exit 0, verified`;
        },
      );
    },
  );
});

describe("reliability: pulumi up SIGKILLed mid-apply", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prods: TestHost[];

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1")];
    stack = await exampleStack("killed", stage.privateKey, hostConfig(stage, prods));
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  /** up after a kill: the CLI's own recovery when it refuses (pending operations, lock). */
  async function recover(): Promise<string> {
    const steps: string[] = [];
    let r = await stack.up();
    for (let i = 0; i < 3 && r.code !== 0; i++) {
      if (/pending operations|pending create|interrupted while/i.test(r.output)) {
        const refresh = await stack.run([
          "refresh",
          "--yes",
          "--skip-preview",
          "--clear-pending-creates",
        ]);
        steps.push(`refresh --clear-pending-creates (exit ${refresh.code})`);
      } else if (/locked|lock/i.test(r.output)) {
        const cancel = await stack.run(["cancel", "--yes"], { scope: "stack" });
        steps.push(`cancel (exit ${cancel.code})`);
      } else {
        steps.push(`retry after: ${excerpt(errorLines(r.output, /error:/), 120)}`);
      }
      r = await stack.up();
    }
    assert.equal(r.code, 0, r.output.slice(-3000));
    return steps.length ? steps.join(", then ") : "plain up";
  }

  for (const [label, after_] of [
    ["after 4 resources created (probes, root key)", 4],
    ["after 9 resources created (staging mid-configuration)", 9],
    ["after 13 resources created (production files)", 13],
  ] as const) {
    it(
      `killed ${label}: recovery, then up converges, no half-written file`,
      { timeout: TEST_TIMEOUT_MS },
      async () => {
        await reliabilityCase(
          ITEM,
          `up SIGKILLed ${label}`,
          "CLI recovery, then up converges; no temp files on any host",
          async () => {
            let created = 0;
            const r = await upWatched(stack, (line) => {
              if (/\s(created|updated)\s*\(/.test(line) && ++created >= after_) return "kill";
            });
            const recovery = r.killed ? await recover() : "(up finished before the kill point)";
            await assertConverged(stack, stage, prods);
            for (const h of [stage, ...prods]) {
              const left = await leftoverTempFiles(h);
              assert.equal(left, "", `${h.name} has temp files:\n${left}`);
            }
            // Next round starts from scratch again.
            const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
            assert.equal(destroy.code, 0, destroy.output.slice(-3000));
            return `killed=${r.killed} after ${created} resources; recovery: ${recovery}; converged, no temp files`;
          },
        );
      },
    );
  }
});

describe("reliability: two stacks on one staging host at once", { skip }, () => {
  let hosts: TestHosts;
  let stacks: PulumiStack[] = [];
  let stage: TestHost;
  let prods: TestHost[];

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1")];
    stacks = [
      await exampleStack("twin-a", stage.privateKey, hostConfig(stage, prods)),
      await exampleStack("twin-b", stage.privateKey, hostConfig(stage, prods)),
    ];
  });

  after(async () => {
    for (const s of stacks) await s.dispose();
    await hosts?.teardown();
  });

  it("concurrent ups: files intact, one signing key", { timeout: TEST_TIMEOUT_MS }, async () => {
    await reliabilityCase(
      ITEM,
      "two stacks, same staging and keyDirectory, up at the same time",
      "both converge (at most one retry), same cachePublicKey, files intact",
      async () => {
        const results = await Promise.all(stacks.map((s) => s.up()));
        const retried: string[] = [];
        for (const [i, r] of results.entries()) {
          if (r.code !== 0) {
            retried.push(
              `stack ${i} retried after: ${excerpt(errorLines(r.output, /error:/), 160)}`,
            );
            const again = await stacks[i].up();
            assert.equal(again.code, 0, again.output.slice(-3000));
          }
        }
        const keys = await Promise.all(
          stacks.map(async (s) => String((await s.outputs()).cachePublicKey)),
        );
        assert.equal(keys[0], keys[1], "the stacks report different signing keys");
        const onDisk = (
          await stage.exec("cat /etc/shipnix/binary/cache-pub-key.pem")
        ).stdout.trim();
        assert.equal(keys[0], onDisk);
        const includes = (
          await stage.exec("grep -c '^!include nix-ssh-cache.conf$' /etc/nix/nix.conf")
        ).stdout.trim();
        assert.equal(includes, "1");
        await stage.exec(
          "sshd -t && ssh-keygen -l -f /etc/ssh/nix-ssh-cache/authorized_keys >/dev/null",
        );
        for (const h of [stage, ...prods]) assert.equal(await leftoverTempFiles(h), "");
        await assertConverged(stacks[0], stage, prods);
        return `same key ${keys[0].split(":")[0]}:…; include line once; sshd -t ok${retried.length ? "; " + retried.join("; ") : "; both ups exit 0 first time"}`;
      },
    );
  });
});
