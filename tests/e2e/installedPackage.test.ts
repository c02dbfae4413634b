/**
 * The component used from outside, as a user does (docs/integration.md, "The package"): this
 * repository is packed with `npm pack` (from a copy of the working tree, so `prepare` builds it
 * as a git or fresh-checkout install does), installed into a separate TypeScript project in a
 * temporary directory beside that project's own `@pulumi/pulumi` of a DIFFERENT version than the
 * one pinned here, imported as `nix-ssh-cache`, type-checked with `tsc`, and composed with the
 * project's own resources (its own component as the parent, its own dynamic resource per
 * production host with `dependsOn: [cache]`). Then `up` → a path built on staging after `up` is
 * substituted on production → `preview --expect-no-changes` → `destroy`, and `npm ls` shows one
 * copy of the SDK.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const run = promisify(execFile);
const skip = e2eSkipReason() ?? pulumiSkipReason();

/**
 * The outside project's own SDK: another published version than the one this repository pins
 * (3.270.0 in package-lock.json; the registry has no other 3.270 patch release), inside the
 * package's peer range. npm must install ONE copy, used by the project and the component alike.
 */
const OUTSIDE_SDK_VERSION = "3.269.0";

// ===== The outside project's program (index.ts) =================================================
// Hosts are given in the component's host model, `{ connection, cacheHost?, name? }`, with the
// project's own connection objects (the two lines marked "NixSshCache hosts" below); nothing else
// in this test depends on the API.
const PROGRAM = `import * as fs from "fs";
import * as pulumi from "@pulumi/pulumi";
import { NixSshCache } from "nix-ssh-cache";

/** A server as the project already describes it. */
interface Server {
  name: string;
  host: string;
  port: number;
  user: string;
  hostKey: string;
}

const cfg = new pulumi.Config();
const sshKey = cfg.requireSecret("sshKey");
const stagingServer = cfg.requireObject<Server>("staging");
const productionServers = cfg.requireObject<Server[]>("production");

/** The project's existing connection objects (the shape of @pulumi/command's ConnectionArgs). */
const connectionOf = (s: Server) => ({
  host: s.host,
  port: s.port,
  user: s.user,
  privateKey: sshKey,
  hostKey: s.hostKey,
});

/** The project's own component: its platform, with the cache inside. */
class Platform extends pulumi.ComponentResource {
  readonly cache: NixSshCache;
  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("outside:index:Platform", name, {}, opts);
    this.cache = new NixSshCache(
      \`\${name}-cache\`,
      {
        staging: { connection: connectionOf(stagingServer), cacheHost: "stage.test" }, // NixSshCache hosts
        production: productionServers.map((s) => ({ connection: connectionOf(s), name: s.name })), // NixSshCache hosts
      },
      { parent: this },
    );
    this.registerOutputs({ cachePublicKey: this.cache.cachePublicKey });
  }
}

/** The project's own dynamic resource: a deploy record per production host. */
interface DeployInputs {
  file: string;
  host: string;
  substituter: string;
  trustedKey: string;
}
const deployProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: DeployInputs) {
    fs.writeFileSync(inputs.file, JSON.stringify(inputs));
    return { id: inputs.file, outs: inputs };
  },
  async delete(id: string) {
    fs.rmSync(id, { force: true });
  },
};
class DeployRecord extends pulumi.dynamic.Resource {
  constructor(
    name: string,
    args: { [K in keyof DeployInputs]: pulumi.Input<DeployInputs[K]> },
    opts?: pulumi.CustomResourceOptions,
  ) {
    super(deployProvider, name, args, opts);
  }
}

const platform = new Platform("platform");
const cache = platform.cache;
for (const s of productionServers) {
  new DeployRecord(
    \`deploy-\${s.name}\`,
    {
      file: \`\${cfg.require("recordDir")}/\${s.name}.json\`,
      host: s.host,
      substituter: cache.substituterUrl,
      trustedKey: cache.cachePublicKey,
    },
    { parent: platform, dependsOn: [cache] },
  );
}

export const cachePublicKey = cache.cachePublicKey;
export const substituterUrl = cache.substituterUrl;
export const verified = cache.verified;
`;
// ===== end of the outside project's program =====================================================

/** Versions the outside project uses for its TypeScript tooling: the ones this repository pins. */
function pinnedDevVersion(name: string): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")) as {
    devDependencies: Record<string, string>;
  };
  return pkg.devDependencies[name];
}

/** Copies the working tree's files (tracked and untracked, not ignored) into `dest`. */
async function copyWorkingTree(dest: string): Promise<void> {
  const { stdout } = await run(
    "git",
    ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    { cwd: repoRoot, maxBuffer: 16 << 20 },
  );
  for (const file of stdout.split("\0").filter(Boolean)) {
    const from = path.join(repoRoot, file);
    if (!fs.existsSync(from)) continue; // deleted in the working tree
    fs.mkdirSync(path.dirname(path.join(dest, file)), { recursive: true });
    fs.copyFileSync(from, path.join(dest, file));
    fs.chmodSync(path.join(dest, file), fs.statSync(from).mode);
  }
}

interface PackResult {
  tarball: string;
  files: string[];
}

/** `npm pack` of a copy of the working tree (its `prepare` builds the package). */
async function packRepository(work: string): Promise<PackResult> {
  const src = path.join(work, "checkout");
  await copyWorkingTree(src);
  // The build tools only: node_modules is never part of the package.
  fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(src, "node_modules"));
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", work], {
    cwd: src,
    maxBuffer: 16 << 20,
  });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf("["))) as {
    filename: string;
    files: { path: string }[];
  }[];
  return { tarball: path.join(work, packed.filename), files: packed.files.map((f) => f.path) };
}

/** Writes the outside TypeScript project and installs its dependencies with npm. */
async function makeOutsideProject(work: string, tarball: string): Promise<string> {
  const dir = path.join(work, "outside");
  fs.mkdirSync(dir);
  const pkg = {
    name: "outside",
    private: true,
    dependencies: { "@pulumi/pulumi": OUTSIDE_SDK_VERSION, "nix-ssh-cache": `file:${tarball}` },
    devDependencies: Object.fromEntries(
      ["typescript", "ts-node", "@types/node"].map((n) => [n, pinnedDevVersion(n)]),
    ),
  };
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
  fs.writeFileSync(
    path.join(dir, "Pulumi.yaml"),
    "name: outside\nruntime:\n  name: nodejs\n  options:\n    typescript: true\nmain: index.ts\n",
  );
  const tsconfig = {
    compilerOptions: {
      target: "ES2022",
      module: "commonjs",
      moduleResolution: "node",
      strict: true,
      esModuleInterop: true,
      types: ["node"],
    },
    files: ["index.ts"],
  };
  fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify(tsconfig, null, 2) + "\n");
  fs.writeFileSync(path.join(dir, "index.ts"), PROGRAM);
  await run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd: dir,
    maxBuffer: 16 << 20,
  });
  return dir;
}

/** Every installed copy of a package under `dir`/node_modules: `version` per directory. */
function installedCopies(dir: string, name: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (modules: string) => {
    if (!fs.existsSync(modules)) return;
    for (const entry of fs.readdirSync(modules)) {
      const names = entry.startsWith("@")
        ? fs.readdirSync(path.join(modules, entry)).map((e) => `${entry}/${e}`)
        : [entry];
      for (const n of names) {
        const pkgDir = path.join(modules, n);
        if (n === name) {
          const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
          found.set(path.relative(dir, pkgDir), (pkg as { version: string }).version);
        }
        walk(path.join(pkgDir, "node_modules"));
      }
    }
  };
  walk(path.join(dir, "node_modules"));
  return found;
}

describe("installed package: a separate TypeScript project composes NixSshCache", { skip }, () => {
  let work: string;
  let pack: PackResult;
  let project: string;
  let hosts: TestHosts;
  let stage: TestHost;
  let prod: TestHost;
  let stack: PulumiStack;
  let recordDir: string;

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-outside-"));
    recordDir = path.join(work, "records");
    fs.mkdirSync(recordDir);
    pack = await packRepository(work);
    project = await makeOutsideProject(work, pack.tarball);
    hosts = await startHosts([{ name: "stage" }, { name: "prod1", loginUser: "ship" }]);
    stage = hosts.byName("stage");
    prod = hosts.byName("prod1");
    stack = new PulumiStack(project, "outside");
    await stack.init();
    const server = (h: TestHost) => ({
      name: h.name,
      host: h.address,
      port: h.port,
      user: h.user,
      hostKey: h.hostKey,
    });
    await stack.setConfigObjects(
      { staging: server(stage), production: [server(prod)], recordDir },
      "outside",
    );
    await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("the tarball holds only the built component, its host scripts, README, LICENSE", () => {
    const unexpected = pack.files.filter(
      (f) =>
        !/^build\/components\/.+\.(js|d\.ts)$/.test(f) &&
        !/^build\/components\/remote\/[^/]+\.(sh|pl)$/.test(f) &&
        !["package.json", "README.md", "LICENSE"].includes(f),
    );
    assert.deepEqual(unexpected, []);
    for (const needed of [
      "build/components/index.js",
      "build/components/index.d.ts",
      "build/components/remote/lib.sh",
      "build/components/remote/nix-ssh-cache-fetch.pl",
      "README.md",
      "LICENSE",
    ]) {
      assert.ok(pack.files.includes(needed), `${needed} is not in the tarball`);
    }
  });

  it("one copy of @pulumi/pulumi: the project's own, of another version than pinned here", async () => {
    const pinned = JSON.parse(
      fs.readFileSync(path.join(repoRoot, "node_modules/@pulumi/pulumi/package.json"), "utf8"),
    ) as { version: string };
    assert.notEqual(OUTSIDE_SDK_VERSION, pinned.version, "the outside SDK must differ");
    const copies = installedCopies(project, "@pulumi/pulumi");
    assert.deepEqual(
      [...copies],
      [["node_modules/@pulumi/pulumi", OUTSIDE_SDK_VERSION]],
      "exactly one @pulumi/pulumi",
    );
    // npm agrees (exit 0 also means no missing or invalid peer dependency).
    const { stdout } = await run("npm", ["ls", "@pulumi/pulumi", "--all", "--parseable"], {
      cwd: project,
    });
    const paths = new Set(stdout.trim().split("\n").filter(Boolean));
    assert.deepEqual([...paths], [path.join(project, "node_modules/@pulumi/pulumi")]);
  });

  it("the project type-checks against the package's types (tsc --noEmit)", async () => {
    await run(path.join(project, "node_modules/.bin/tsc"), ["--noEmit", "-p", project], {
      cwd: project,
    });
  });

  it("up, a path built on staging after up is substituted on production, no-op preview, destroy", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output.slice(-6000));
    const out = await stack.outputs();
    assert.equal(out.verified, true, JSON.stringify(out));
    const keyName = String(out.cachePublicKey).split(":")[0];

    // The project's own resource ran after the cache, with its outputs.
    const record = JSON.parse(fs.readFileSync(path.join(recordDir, "prod1.json"), "utf8")) as {
      substituter: string;
      trustedKey: string;
    };
    assert.equal(record.substituter, out.substituterUrl);
    assert.equal(record.trustedKey, out.cachePublicKey);
    assert.match(up.output, /outside:index:Platform/);

    const built = await buildOnStaging(stage, "outside");
    const sigs = await substitute(prod, built);
    assert.ok(
      sigs.some((s) => s.startsWith(`${keyName}:`)),
      `${prod.name} has ${built.out} without staging's signature: ${sigs.join(" ")}`,
    );

    const preview = await stack.preview(["--expect-no-changes"]);
    assert.equal(preview.code, 0, preview.output.slice(-6000));

    const destroy = await stack.run(["destroy", "--yes", "--skip-preview"]);
    assert.equal(destroy.code, 0, destroy.output.slice(-6000));
    assert.deepEqual(fs.readdirSync(recordDir), [], "destroy removes the project's own records");
  });
});
