/**
 * Drives the real Pulumi CLI against a local file backend in a temporary directory.
 *
 * The toolchain must be on PATH (`source .tools/env.sh`, as `scripts/test` does). Each
 * `PulumiStack` has its own backend, PULUMI_HOME and stack config file, so tests never touch
 * the user's `~/.pulumi` or write files into the repository.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

/** The repository root (tests run from build/tests/e2e). */
export const repoRoot = path.resolve(__dirname, "..", "..", "..");

/** What one CLI run printed. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Both streams, in order of arrival. */
  output: string;
}

/** Why a Pulumi e2e test cannot run here, or undefined. */
export function pulumiSkipReason(): string | undefined {
  const found = (process.env.PATH ?? "")
    .split(":")
    .some((dir) => dir && fs.existsSync(path.join(dir, "pulumi")));
  return found
    ? undefined
    : "pulumi CLI not on PATH (run: bash scripts/setup && source .tools/env.sh)";
}

/** Options of {@link PulumiStack.run}. */
export interface RunOptions {
  /** Standard input of the CLI (e.g. a secret config value). */
  stdin?: string;
  /** Which stack flags the command takes: `--stack` and `--config-file`, only `--stack`, none. */
  scope?: "config" | "stack" | "none";
}

/** Options of {@link PulumiStack}. */
export interface PulumiStackOptions {
  /**
   * A local backend directory shared with other stacks (e.g. from {@link makeBackendDir}), so
   * they can read each other's outputs with a `StackReference`. The caller removes it.
   * @defaultValue a private backend in the stack's temporary directory
   */
  backendDir?: string;
}

/** Makes a temporary directory for a local backend that several stacks share. */
export function makeBackendDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "nsc-backend-"));
}

/** A stack of a project directory, on a local file backend (private unless shared). */
export class PulumiStack {
  readonly workDir: string;
  readonly configFile: string;
  readonly backendDir: string;
  readonly env: NodeJS.ProcessEnv;

  /**
   * @param projectDir directory holding Pulumi.yaml
   * @param stack stack name
   * @param options e.g. a shared backend directory
   */
  constructor(
    readonly projectDir: string,
    readonly stack = "e2e",
    options: PulumiStackOptions = {},
  ) {
    this.workDir = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-pulumi-"));
    this.backendDir = options.backendDir ?? path.join(this.workDir, "backend");
    if (!options.backendDir) fs.mkdirSync(this.backendDir);
    this.configFile = path.join(this.workDir, `Pulumi.${stack}.yaml`);
    this.env = {
      ...process.env,
      PULUMI_BACKEND_URL: `file://${this.backendDir}`,
      PULUMI_CONFIG_PASSPHRASE: "nix-ssh-cache-e2e",
      PULUMI_HOME: path.join(this.workDir, "home"),
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_NODEJS_TRANSPILE_ONLY: "true",
      NO_COLOR: "1",
    };
  }

  /** Runs `pulumi <args>` in the project with this stack's backend and config file. */
  run(args: string[], opts: RunOptions = {}): Promise<CliResult> {
    const full = [...args, "--non-interactive", "--cwd", this.projectDir];
    const scope = opts.scope ?? "config";
    if (scope !== "none") full.push("--stack", this.stack);
    if (scope === "config") full.push("--config-file", this.configFile);
    return new Promise((resolve, reject) => {
      const child = spawn("pulumi", full, { env: this.env, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      let output = "";
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
        output += d.toString();
      });
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
        output += d.toString();
      });
      child.on("error", reject);
      child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr, output }));
      child.stdin.end(opts.stdin ?? "");
    });
  }

  /** Runs and throws with the output when the exit code is not 0. */
  async ok(args: string[], opts: RunOptions = {}): Promise<CliResult> {
    const r = await this.run(args, opts);
    if (r.code !== 0) {
      throw new Error(`pulumi ${args.join(" ")} exited ${r.code}:\n${r.output.slice(-6000)}`);
    }
    return r;
  }

  /** Creates the stack. */
  async init(): Promise<void> {
    await this.ok(["stack", "init", this.stack], { scope: "none" });
  }

  /** Sets a config value (secret values travel on stdin, never on the command line). */
  async setConfig(key: string, value: string, opts: { secret?: boolean; path?: boolean } = {}) {
    const args = ["config", "set", key];
    if (opts.secret) args.push("--secret");
    if (opts.path) args.push("--path");
    await this.ok(args, { stdin: value });
  }

  /** Sets plain (non-secret) config values of any JSON shape, e.g. objects and lists. */
  async setConfigObjects(values: Record<string, unknown>, project: string): Promise<void> {
    const json: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(values)) {
      json[`${project}:${key}`] = {
        value: JSON.stringify(value),
        objectValue: value,
        secret: false,
      };
    }
    await this.ok(["config", "set-all", "--json", JSON.stringify(json)]);
  }

  /** `pulumi up --yes`. */
  up(extra: string[] = []): Promise<CliResult> {
    return this.run(["up", "--yes", "--skip-preview", ...extra]);
  }

  /** `pulumi preview`. */
  preview(extra: string[] = []): Promise<CliResult> {
    return this.run(["preview", ...extra]);
  }

  /** The stack outputs (secrets shown). */
  async outputs(): Promise<Record<string, unknown>> {
    const r = await this.ok(["stack", "output", "--json", "--show-secrets"], { scope: "stack" });
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }

  /** The exported state, as text (`--show-secrets` when asked). */
  async exportState(showSecrets = false): Promise<string> {
    const args = ["stack", "export"];
    if (showSecrets) args.push("--show-secrets");
    return (await this.ok(args, { scope: "stack" })).stdout;
  }

  /** Destroys the stack's resources, removes the stack and the temporary directory. */
  async dispose(): Promise<void> {
    try {
      await this.run(["destroy", "--yes", "--skip-preview"]);
      await this.run(["stack", "rm", "--yes", "--force", this.stack], { scope: "none" });
    } finally {
      this.killStrayProcesses();
      fs.rmSync(this.workDir, { recursive: true, force: true });
    }
  }

  /**
   * SIGKILLs processes started for this stack that outlived their CLI: the CLI starts plugins
   * (language host, dynamic provider) in process groups of their own, so a killed CLI leaves
   * them behind. They are recognised by this stack's private PULUMI_HOME in their environment.
   * Returns their PIDs.
   */
  killStrayProcesses(): number[] {
    const marker = `PULUMI_HOME=${this.env.PULUMI_HOME}\0`;
    const killed: number[] = [];
    for (const entry of fs.readdirSync("/proc")) {
      const pid = Number(entry);
      if (!Number.isInteger(pid) || pid === process.pid) continue;
      let environ: string;
      try {
        environ = fs.readFileSync(`/proc/${pid}/environ`, "latin1") + "\0";
      } catch {
        continue; // gone, or not ours to read
      }
      if (!environ.includes(marker)) continue;
      try {
        process.kill(pid, "SIGKILL");
        killed.push(pid);
      } catch {
        // already gone
      }
    }
    return killed;
  }
}

/** Writes a JavaScript Pulumi program into a new temporary project and returns its directory. */
export function makeProgram(name: string, programJs: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nsc-program-${name}-`));
  fs.writeFileSync(
    path.join(dir, "Pulumi.yaml"),
    `name: ${name}\nruntime: nodejs\nmain: index.js\n`,
  );
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name, private: true }) + "\n");
  fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"));
  fs.writeFileSync(path.join(dir, "index.js"), programJs);
  return dir;
}
