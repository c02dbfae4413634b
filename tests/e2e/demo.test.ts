/**
 * The README's main command, `npm run demo` (scripts/demo), run as a user runs it: set-up, build,
 * the example stack on three test hosts, the app fetched through the cache, a second `up`,
 * `destroy`, teardown. CI cannot pass while the main command fails.
 *
 * The hosts go where NSC_HOSTS_FIRST_ADDRESS says (inherited). Asserts on the outcome the demo
 * prints (exit 0, `verified = true`, the whole closure fetched from staging on both production
 * hosts, the speed-up line, a second `up` with nothing to do), never on its timings.
 */
import { describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "child_process";
import { e2eSkipReason } from "../hosts/harness";
import { pulumiSkipReason, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();

/** Runs `npm run demo` in the repository; resolves with its exit code and combined output. */
function runDemo(): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("npm", ["run", "--silent", "demo"], {
      cwd: repoRoot,
      env: process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, output }));
  });
}

describe("npm run demo (the README's main command)", { skip }, () => {
  it("runs the example stack end to end: verified, app fetched from staging, speed-up shown", async (t) => {
    const { code, output } = await runDemo();
    const tail = output.slice(-8000);
    assert.equal(code, 0, `npm run demo exited ${code}:\n${tail}`);
    assert.match(output, /\[setup\] ready in /, tail);
    assert.match(output, /verified {11}= true/, tail);

    // Both production hosts copied the app's whole closure, and only from staging's cache: prod1
    // through Nix's ssh:// substituter, prod2 with nix-ssh-cache-fetch in one SSH session.
    const parts = Number(process.env.NSC_DEMO_PARTS || 20);
    const ways = [
      ["prod1", "nix-store --realise", "paths from"],
      ["prod2", "nix-ssh-cache-fetch", "paths in one SSH session from"],
    ];
    for (const [prod, how, what] of ways) {
      const fetched = new RegExp(
        `${prod} fetches it \\(${how}\\) \\.+ +[\\d.]+ s \\((\\d+) ${what} (.+)\\)`,
      ).exec(output);
      assert.ok(fetched, `no fetch line for ${prod}:\n${tail}`);
      assert.equal(Number(fetched[1]), parts, `${prod} copied the whole closure`);
      assert.equal(fetched[2], "ssh://nix-ssh@stage.test", `${prod} fetched only from staging`);
      assert.match(output, new RegExp(`${prod}: all ${parts} paths carry the signature `), tail);
    }
    const speedUp = /speed-up: [\d.]+ s building vs [\d.]+ s downloading = [\d.]+x faster.*/.exec(
      output,
    );
    assert.ok(speedUp, `no speed-up line:\n${tail}`);
    t.diagnostic(speedUp[0]); // shown in the test report, not asserted on

    // The second `up` changes nothing; destroy and teardown ran; the demo says done.
    const again = /5\. pulumi up again \.+ +[\d.]+ s \(([^)]*)\)/.exec(output);
    assert.ok(again, `no second up line:\n${tail}`);
    assert.match(again[1], /^\d+ unchanged$/, `the second up changed something: ${again[1]}`);
    assert.match(output, /pulumi destroy \.+ +[\d.]+ s \(\d+ deleted\)/, tail);
    assert.match(output, /teardown of the test hosts/, tail);
    assert.match(output, /\[demo\] done: total /, tail);
  });
});
