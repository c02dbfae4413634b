/**
 * `scripts/setup` picks the Pulumi toolchain a user already has: a `pulumi` on PATH with
 * `pulumi-language-nodejs` and `pulumi-resource-pulumi-nodejs` beside it is used (no build), unless
 * NSC_PULUMI_DIR names another; one that is older than the locked SDK, or has no language host
 * beside it, is passed over with the reason. Runs the real script (warm: seconds) with the
 * toolchain found on this test's PATH, linked into temporary directories; the script writes its
 * env file to a temporary path (NSC_SETUP_ENV_FILE), never the repository's `.tools/env.sh`.
 * And its checks (`scripts/setup-check`) name what a fresh machine lacks: run in a private mount
 * namespace where `/etc/nix` is empty and `/etc/group` has no `nixbld`, as with `nix-bin` alone.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { e2eSkipReason } from "../hosts/harness";
import { pulumiSkipReason, repoRoot } from "./pulumi";

const skip = pulumiSkipReason();
const TOOLS = ["pulumi", "pulumi-language-nodejs", "pulumi-resource-pulumi-nodejs"];

/** The directory of the toolchain this test runs with (the real files, symlinks resolved). */
function currentToolchainDir(): string {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const candidate = path.join(dir, "pulumi");
    if (dir && fs.existsSync(candidate)) return path.dirname(fs.realpathSync(candidate));
  }
  throw new Error("no pulumi on PATH");
}

interface SetupRun {
  code: number;
  output: string;
  /** The PATH line of the env file setup wrote. */
  envPath: string;
}

/** Runs scripts/setup with `dir` first on PATH and extra environment. */
function runSetup(work: string, dir: string, env: NodeJS.ProcessEnv = {}): Promise<SetupRun> {
  const envFile = path.join(work, `env-${Math.random().toString(36).slice(2)}.sh`);
  return new Promise((resolve) => {
    execFile(
      "bash",
      [path.join(repoRoot, "scripts", "setup")],
      {
        cwd: repoRoot,
        env: {
          ...process.env,
          NSC_PULUMI_DIR: "",
          ...env,
          PATH: `${dir}:${process.env.PATH}`,
          NSC_SETUP_ENV_FILE: envFile,
        },
      },
      (err, stdout, stderr) => {
        const text = fs.existsSync(envFile) ? fs.readFileSync(envFile, "utf8") : "";
        resolve({
          code: err ? Number(err.code ?? 1) : 0,
          output: stdout + stderr,
          envPath: /^export PATH="([^"]*)"/m.exec(text)?.[1] ?? "",
        });
      },
    );
  });
}

describe("scripts/setup: an existing Pulumi", { skip }, () => {
  let work: string;
  let real: string;

  /** A directory with the given files: symlinks to the real toolchain, or scripts. */
  function toolDir(name: string, files: Record<string, "link" | string>): string {
    const dir = path.join(work, name);
    fs.mkdirSync(dir);
    for (const [file, how] of Object.entries(files)) {
      const target = path.join(dir, file);
      if (how === "link") fs.symlinkSync(path.join(real, file), target);
      else fs.writeFileSync(target, how, { mode: 0o755 });
    }
    return dir;
  }

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-setup-"));
    real = currentToolchainDir();
  });

  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("uses a pulumi on PATH with its language host and launcher beside it", async () => {
    const dir = toolDir("user-bin", Object.fromEntries(TOOLS.map((t) => [t, "link"])));
    const r = await runSetup(work, dir);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, new RegExp(`using the pulumi on PATH: ${dir}\\)`));
    assert.doesNotMatch(r.output, /building the pulumi CLI/);
    assert.equal(r.envPath, `${dir}:$PATH`);
  });

  it("NSC_PULUMI_DIR wins over the pulumi on PATH", async () => {
    const dir = toolDir("user-bin-2", Object.fromEntries(TOOLS.map((t) => [t, "link"])));
    const r = await runSetup(work, dir, { NSC_PULUMI_DIR: real });
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, new RegExp(`using NSC_PULUMI_DIR=${real}\\)`));
    assert.equal(r.envPath, `${real}:$PATH`);
  });

  it("passes over a pulumi older than the locked SDK, saying so", async () => {
    const dir = toolDir("old-bin", {
      pulumi: "#!/bin/sh\necho v3.1.0\n",
      "pulumi-language-nodejs": "link",
      "pulumi-resource-pulumi-nodejs": "link",
    });
    const r = await runSetup(work, dir);
    assert.equal(r.code, 0, r.output);
    assert.match(
      r.output,
      /pulumi on PATH \(.*old-bin\/pulumi\) is v3\.1\.0, older than the locked @pulumi\/pulumi 3\.\d+\.\d+: not used/,
    );
    assert.notEqual(r.envPath, `${dir}:$PATH`);
  });

  it("passes over a pulumi without its language host beside it, saying so", async () => {
    const dir = toolDir("lonely-bin", {
      pulumi: `#!/bin/sh\nexec ${JSON.stringify(path.join(real, "pulumi"))} "$@"\n`,
    });
    const r = await runSetup(work, dir);
    assert.equal(r.code, 0, r.output);
    assert.match(
      r.output,
      /pulumi on PATH \(.*lonely-bin\/pulumi\) has no pulumi-language-nodejs and pulumi-resource-pulumi-nodejs beside it: not used/,
    );
    assert.notEqual(r.envPath, `${dir}:$PATH`);
  });
});

/** Runs `scripts/setup-check` as root in a private mount namespace after `prepare` (bash). */
function runCheck(toolchain: string, prepare: string): Promise<{ code: number; output: string }> {
  const script = `${prepare}\nexec bash ${JSON.stringify(path.join(repoRoot, "scripts", "setup-check"))} "$1"`;
  return new Promise((resolve) => {
    execFile(
      "unshare",
      ["--mount", "--propagation", "private", "bash", "-euc", script, "check", toolchain],
      { cwd: repoRoot },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, output: stdout + stderr }),
    );
  });
}

describe(
  "scripts/setup-check: what a fresh machine lacks",
  { skip: e2eSkipReason() ?? skip },
  () => {
    let work: string;
    before(() => {
      work = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-setup-check-"));
    });
    after(() => {
      if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    it("passes on this machine", async () => {
      const r = await runCheck(currentToolchainDir(), "true");
      assert.equal(r.code, 0, r.output);
      assert.match(r.output, /^\d+ checks passed$/m);
    });

    it("names the missing nix.conf and build group, with what to do, and fails", async () => {
      const group = path.join(work, "group");
      const prepare = [
        "mount -t tmpfs tmpfs /etc/nix",
        `grep -v '^nixbld:' /etc/group > ${group}`,
        `mount --bind ${group} /etc/group`,
      ].join("\n");
      const r = await runCheck(currentToolchainDir(), prepare);
      assert.equal(r.code, 1, r.output);
      const missing = r.output.split("\n").filter((l) => l.startsWith("[setup] MISSING: "));
      assert.deepEqual(
        missing.map((l) => l.slice("[setup] MISSING: ".length).split(":")[0]),
        ["group nixbld (Nix build users)", "members of group nixbld", "/etc/nix/nix.conf"],
        r.output,
      );
      for (const line of missing) assert.match(line, /apt-get install nix-setup-systemd/);
      assert.match(r.output, /3 of \d+ checks failed/);
    });
  },
);
