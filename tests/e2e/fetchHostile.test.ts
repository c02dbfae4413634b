/**
 * The closure fetcher against a hostile staging (issue 21, findings 5 and 8): `nix-ssh-cache-fetch`
 * runs as root on production and reads what staging sends. Staging's serve user is given a
 * ForceCommand (`tests/hosts/hostile-serve.pl`) that asks the real `nix-store --serve` and spoils
 * its answers: option-looking closure entries, a path outside the store, a line break, a
 * terminal escape, a count of 2^62, a string of 8 GiB, a flood of infos, a narSize of 2^62. Each
 * must be refused naming staging and the field, with nothing imported and no payload run, and
 * the fallback (Nix's own `ssh://` substituter, which gets the real `nix-store --serve`) must
 * still make the path valid. And signatures are checked whatever production's `require-sigs`:
 * with `require-sigs = false`, an unsigned path or one signed by a key production does not
 * trust is refused, fast path and fallback.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { remoteScriptText } from "../../components/remoteScripts";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, BuiltPath, exampleStack, signaturesOf } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
/**
 * The repository's fetcher, copied into production's own `/root`, so this test runs exactly the
 * checkout's file whatever `up` installed in `/usr/local/sbin`.
 */
const FETCH = "/root/nix-ssh-cache-fetch";
const HOSTILE = "/etc/nsc-hostile/serve";
const MODE_FILE = "/etc/nsc-hostile/mode";
/** Sorts before the component's drop-in: in a `Match` block, sshd's first ForceCommand wins. */
const HOSTILE_DROP_IN = "/etc/ssh/sshd_config.d/01-nsc-hostile.conf";
/** A library that, once loaded, writes {@link PAYLOAD_MARK} (who ran it). */
const PAYLOAD = "/tmp/nsc-payload.so";
const PAYLOAD_MARK = "/tmp/nsc-payload-ran";
const PAYLOAD_C = `#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void payload(void) {
  FILE *f = fopen("${PAYLOAD_MARK}", "w");
  if (f) { fprintf(f, "uid %d\\n", (int)getuid()); fclose(f); }
}
`;
const STAGING = "staging \\(ssh://nix-ssh@stage\\.test\\)";
/** Control characters other than a line break (a terminal escape, a carriage return, ...). */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f]/;

/** One way of lying, as `hostile-serve.pl` implements it, and how the refusal names it. */
interface Lie {
  mode: string;
  what: string;
  refusal: RegExp;
}

const LIES: Lie[] = [
  {
    mode: "option",
    what: "closure entries `--option plugin-files /tmp/nsc-payload.so`",
    refusal: /sent a closure entry '--option' that is not a store path in \/nix\/store/,
  },
  {
    mode: "outside",
    what: "a closure entry outside the store (/etc/passwd)",
    refusal: /sent a closure entry '\/etc\/passwd' that is not a store path in \/nix\/store/,
  },
  {
    mode: "newline",
    what: "a closure entry with a line break",
    refusal:
      /sent a closure entry '\/nix\/store\/[^']*\\x0aStorePath: [^']*' that is not a store path/,
  },
  {
    mode: "deriver",
    what: "a deriver ending in a terminal escape",
    refusal:
      /sent a deriver of \/nix\/store\/\S+ '\/nix\/store\/[^']*\\x1b\[2J' that is not a store path/,
  },
  {
    mode: "count",
    what: "a closure of 2^62 paths",
    refusal: /sent 4611686018427387904 paths in the closure \(at most 100000\)/,
  },
  {
    mode: "long",
    what: "a closure entry of 8 GiB",
    refusal: /sent a closure entry of 8589934592 bytes \(at most \d+\)/,
  },
  {
    mode: "flood",
    what: "the info of the one path asked for 10^6 times",
    refusal: /sent the info of \/nix\/store\/\S+ twice/,
  },
  {
    mode: "narsize",
    what: "a narSize of 2^62",
    refusal:
      /narSize 4611686018427387904 of \/nix\/store\/\S+\), more than \/var\/tmp has room for/,
  },
];

/** Whether `p` is valid on `host`. */
async function isValid(host: TestHost, p: string): Promise<boolean> {
  return (await host.exec(`nix-store --check-validity ${p}`, { check: false })).code === 0;
}

/** The `--json` report (last stdout line) of a fetcher run. */
function report(stdout: string): Record<string, unknown> {
  const last = stdout.trim().split("\n").pop() ?? "";
  return JSON.parse(last) as Record<string, unknown>;
}

describe("nix-ssh-cache-fetch against a hostile staging", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod1: TestHost;
  let signed: BuiltPath;

  /** Staging's serve user answers as `hostile-serve.pl` in `mode`. */
  const lie = (mode: string) => stage.exec(`echo ${mode} > ${MODE_FILE}`);

  /** Runs the fetcher for `p` on production, which does not have it before. */
  async function fetch(p: string, flags: string) {
    await prod1.exec(`nix-store --delete ${p} >/dev/null 2>&1 || true`);
    assert.equal(await isValid(prod1, p), false, `${p} still valid on production`);
    return prod1.exec(`${FETCH} --json ${flags} ${p}`, { check: false });
  }

  /** No payload ran, no work directory is left behind. */
  async function assertNoTrace(): Promise<void> {
    const mark = await prod1.exec(`cat ${PAYLOAD_MARK} 2>/dev/null || true`);
    assert.equal(mark.stdout, "", `the payload ran on production: ${mark.stdout}`);
    const left = await prod1.exec("ls -d /var/tmp/nix-ssh-cache-fetch.* 2>/dev/null | wc -l");
    assert.equal(left.stdout.trim(), "0", "no work directory left behind");
  }

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prod1 = hosts.byName("prod1");
    stack = await exampleStack(repoRoot, "e2e", stage, [prod1]);
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    await prod1.exec(`cat > ${FETCH} && chmod 755 ${FETCH}`, {
      input: remoteScriptText("nix-ssh-cache-fetch.pl"),
    });
    const cc = await prod1.exec(`cc -shared -fPIC -o ${PAYLOAD} -x c -`, {
      input: PAYLOAD_C,
      check: false,
    });
    assert.equal(cc.code, 0, `the payload library needs a C compiler (cc): ${cc.stderr}`);
    // The payload works: loaded through Nix's plugin-files, it runs as root.
    await prod1.exec(`nix-store --option plugin-files ${PAYLOAD} --version`);
    assert.equal((await prod1.exec(`cat ${PAYLOAD_MARK}`)).stdout, "uid 0\n");
    await prod1.exec(`rm ${PAYLOAD_MARK}`);

    signed = await buildOnStaging(stage, "hostile");
    const hostile = fs.readFileSync(path.join(repoRoot, "tests/hosts/hostile-serve.pl"), "utf8");
    await stage.exec(`install -d -m 755 ${path.dirname(HOSTILE)} && cat > ${HOSTILE}`, {
      input: hostile,
    });
    await stage.exec(
      `chmod 755 ${HOSTILE} && printf 'Match User nix-ssh\\n  ForceCommand ${HOSTILE}\\n' > ${HOSTILE_DROP_IN}`,
    );
    await stage.stopSshd();
    await stage.startSshd();
    await lie("honest");
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it("through the man in the middle telling the truth, the fetch works (the proxy is sound)", async () => {
    const r = await fetch(signed.out, "--no-fallback");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(report(r.stdout).fallback, false);
    assert.equal(await isValid(prod1, signed.out), true);
    assert.ok((await signaturesOf(prod1, signed.out)).some((s) => s.startsWith("stage.test:")));
  });

  for (const l of LIES) {
    it(`${l.mode}: ${l.what} is refused naming staging and the field; nothing imported; the fallback still gets the path`, async () => {
      await lie(l.mode);
      const started = Date.now();
      const fast = await fetch(signed.out, "--no-fallback");
      const seconds = (Date.now() - started) / 1000;
      assert.notEqual(fast.code, 0, `accepted ${l.what}:\n${fast.stderr}`);
      assert.match(fast.stderr, new RegExp(`one-session fetch failed: ${STAGING} `));
      assert.match(fast.stderr, l.refusal);
      assert.match(fast.stderr, /refused, nothing from this session is imported/);
      assert.doesNotMatch(fast.stderr, CONTROL, "staging's control characters reached stderr");
      assert.ok(seconds < 60, `refused only after ${seconds} s`);
      assert.equal(await isValid(prod1, signed.out), false, "nothing imported");
      await assertNoTrace();

      const withFallback = await fetch(signed.out, "");
      assert.equal(withFallback.code, 0, withFallback.stderr);
      const json = report(withFallback.stdout);
      assert.equal(json.fallback, true);
      assert.match(String(json.reason), l.refusal);
      assert.equal(await isValid(prod1, signed.out), true, "the fallback got the path");
      const sigs = await signaturesOf(prod1, signed.out);
      assert.ok(
        sigs.some((s) => s.startsWith("stage.test:")),
        `not signed by staging: ${sigs}`,
      );
      await assertNoTrace();
    });
  }

  it("staging's stderr (a forged sudo marker, escapes, 300 kB) reaches ours only filtered, fast path and fallback", async () => {
    await lie("stderr");
    const missing = `/var/tmp/nsc-no-such-dir-${Date.now()}`;
    const runs = [
      // The fast path: staging's words through ssh, at most 64 KiB of them.
      { flags: "--no-fallback", label: "staging", atMost: 70_000 },
      // The fallback: all of nix-store's output (its ssh's too), at most 1 MiB.
      { flags: `--work-dir ${missing}`, label: "nix-store", atMost: 1_100_000 },
    ];
    for (const { flags, label, atMost } of runs) {
      const r = await fetch(signed.out, flags);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await isValid(prod1, signed.out), true);
      // ssh.ts reads `nix-ssh-cache-sudo: ...` at the start of a line of a step's stderr.
      assert.doesNotMatch(r.stderr, /(^|\n)nix-ssh-cache-sudo:/, "a marker line of staging's");
      assert.match(
        r.stderr,
        new RegExp(`(^|\\n)nix-ssh-cache-fetch: ${label}: nix-ssh-cache-sudo: `),
      );
      assert.doesNotMatch(r.stderr, CONTROL, "staging's control characters reached stderr");
      assert.ok(r.stderr.length < atMost, `${r.stderr.length} bytes of stderr`);
      if (label === "staging") assert.match(r.stderr, /staging: \(more messages dropped\)/);
    }
    await lie("honest");
  });

  describe("production with require-sigs = false", () => {
    before(async () => {
      await lie("honest");
      await prod1.exec(
        "cp /etc/nix/nix.conf /etc/nix/nix.conf.e2e && echo 'require-sigs = false' >> /etc/nix/nix.conf",
      );
      const shown = await prod1.exec("nix --extra-experimental-features nix-command show-config");
      assert.match(shown.stdout, /^require-sigs = false$/m);
    });

    after(async () => {
      await prod1.exec("mv -f /etc/nix/nix.conf.e2e /etc/nix/nix.conf");
    });

    /** Fast path and fallback both refuse `p`, and say why. */
    async function assertRefused(p: string): Promise<void> {
      const fast = await fetch(p, "--no-fallback");
      assert.notEqual(fast.code, 0, `accepted ${p}:\n${fast.stderr}`);
      assert.match(
        fast.stderr,
        new RegExp(
          `${STAGING} sent ${p}, which lacks a valid signature by a key in trusted-public-keys`,
        ),
      );
      assert.equal(await isValid(prod1, p), false, "nothing imported");
      const withFallback = await fetch(p, "");
      assert.notEqual(withFallback.code, 0, `the fallback accepted ${p}:\n${withFallback.stderr}`);
      assert.match(withFallback.stderr, /falling back to nix-store --realise/);
      assert.match(
        withFallback.stderr,
        /is not signed by any of the keys in 'trusted-public-keys'/,
      );
      assert.equal(await isValid(prod1, p), false, "the fallback did not import it either");
      await assertNoTrace();
    }

    it("an unsigned path from staging is refused, fast path and fallback", async () => {
      const unsigned = await buildOnStaging(stage, "unsigned", "--option secret-key-files ''");
      assert.deepEqual(await signaturesOf(stage, unsigned.out), [], "built unsigned on staging");
      await assertRefused(unsigned.out);
    });

    it("a path signed by a key production does not trust is refused, fast path and fallback", async () => {
      await stage.exec(
        "nix-store --generate-binary-cache-key other.test /root/other.sec /root/other.pub",
      );
      const other = await buildOnStaging(
        stage,
        "other-key",
        "--option secret-key-files /root/other.sec",
      );
      const sigs = await signaturesOf(stage, other.out);
      assert.ok(sigs.length > 0 && sigs.every((s) => s.startsWith("other.test:")), `${sigs}`);
      await assertRefused(other.out);
    });

    it("a path signed by staging's key still comes through the fast path", async () => {
      const built = await buildOnStaging(stage, "signed-nosigs");
      const r = await fetch(built.out, "--no-fallback");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await isValid(prod1, built.out), true);
    });
  });
});
