/**
 * What of the HostStep provider goes through Pulumi's closure serializer on every run (the
 * dynamic provider process runs the serialized text, not this module): the loader
 * (`providerLoader`), which requires the compiled provider module in the provider process; and,
 * when the component runs from TypeScript sources, the provider itself. Checks here that the
 * serializer accepts both — it rejects, for example, a closure that uses a `const` declared
 * further down, or reads a method of an object it copied only in part — and that the serialized
 * text loads and runs (through the connection pool, to a closed port), from the program's
 * directory and from a project that has the package in its node_modules.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { hostStepProvider, providerLoader } from "../../components/hostStep";

/** Writes a serialized provider into a new directory under `parent` and loads it. */
async function loadSerialized(
  provider: pulumi.dynamic.ResourceProvider,
  parent: string,
): Promise<{ provider: pulumi.dynamic.ResourceProvider; text: string; dir: string }> {
  const serialized = await pulumi.runtime.serializeFunction(() => provider, {
    allowSecrets: true,
  });
  const dir = fs.mkdtempSync(path.join(parent, ".serialized-"));
  const file = path.join(dir, "provider.js");
  fs.writeFileSync(file, serialized.text);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const loaded = require(file) as Record<string, () => pulumi.dynamic.ResourceProvider>;
  return { provider: loaded[serialized.exportName](), text: serialized.text, dir };
}

/** The inputs of a step on a closed port of loopback: a run fails fast (no host needed). */
const CLOSED_PORT_STEP = {
  connection: { host: "127.0.0.1", port: 1, user: "root", become: "none" },
  spec: "probe | probe | script 0000000000000000 | read yes | remove no | drift none | timeout 5s",
  script: "true",
  env: {},
  triggers: [],
};

/** The compiled provider module (tests run from build/tests/unit). */
const PROVIDER_MODULE = path.join(__dirname, "..", "..", "components", "hostStepProvider.js");

describe("HostStep provider serialization", () => {
  it("serializes as the dynamic provider does, and the text loads", async () => {
    const serialized = await pulumi.runtime.serializeFunction(() => hostStepProvider, {
      allowSecrets: true,
    });
    // The pool lives on globalThis, so it is shared by every step of the provider process.
    assert.match(serialized.text, /Symbol\.for\("nix-ssh-cache\/ssh-pool"\)/);
    // Next to this file, so that `require("ssh2/...")` in the text resolves to our node_modules.
    const dir = fs.mkdtempSync(path.join(__dirname, ".serialized-"));
    try {
      const file = path.join(dir, "provider.js");
      fs.writeFileSync(file, serialized.text);
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const loaded = require(file) as Record<string, () => pulumi.dynamic.ResourceProvider>;
      const provider = loaded[serialized.exportName]();
      for (const method of ["create", "diff", "update", "read", "delete"] as const) {
        assert.equal(typeof provider[method], "function", method);
      }
      // Run the serialized code through the connection pool: a closed port on loopback fails
      // fast with the component's own message (no host needed).
      const props = {
        connection: { host: "127.0.0.1", port: 1, user: "root", become: "none" },
        step: "probe",
        script: "true",
        env: {},
        readable: true,
        removable: false,
        removeEnv: {},
        driftKeys: [],
        triggers: [],
        timeoutSeconds: 5,
      };
      const create = provider.create as (inputs: typeof props) => Promise<unknown>;
      await assert.rejects(create(props), /^Error: root@127\.0\.0\.1:1: cannot connect: /);
      await assert.rejects(create(props), /cannot connect/, "a failed connection is not kept");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("serializes the loader small, and it runs the compiled provider from the program's directory", async () => {
    const loader = providerLoader(path.relative(process.cwd(), PROVIDER_MODULE));
    const { provider, text, dir } = await loadSerialized(loader, __dirname);
    try {
      // The loader, not the SSH client: no ssh2, no connection pool in the text.
      assert.ok(text.length < 8000, `serialized loader is ${text.length} characters`);
      assert.doesNotMatch(text, /ssh2|ssh-pool/);
      const create = provider.create.bind(provider);
      await assert.rejects(
        create(CLOSED_PORT_STEP),
        /^Error: root@127\.0\.0\.1:1: cannot connect: /,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("loads the provider by package name when the path it recorded is not there", async () => {
    const project = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-loader-"));
    const cwd = process.cwd();
    try {
      // A project with the package in its node_modules (as npm installs it: the package root,
      // with package.json "exports"); the recorded path points nowhere.
      const packageRoot = path.join(__dirname, "..", "..", "..");
      fs.mkdirSync(path.join(project, "node_modules"));
      fs.symlinkSync(packageRoot, path.join(project, "node_modules", "nix-ssh-cache"));
      const loader = providerLoader("moved/build/components/hostStepProvider.js");
      const { provider, dir } = await loadSerialized(loader, project);
      process.chdir(project);
      const create = provider.create.bind(provider);
      await assert.rejects(create(CLOSED_PORT_STEP), /cannot connect/);
      // Without the package either, the error says where it looked.
      fs.rmSync(path.join(project, "node_modules"), { recursive: true });
      await assert.rejects(
        create(CLOSED_PORT_STEP),
        /cannot load the HostStep provider from .*moved\/build\/components\/hostStepProvider\.js, nix-ssh-cache\/build\/components\/hostStepProvider\.js/,
      );
      fs.rmSync(dir, { recursive: true, force: true });
    } finally {
      process.chdir(cwd);
      fs.rmSync(project, { recursive: true, force: true });
    }
  });
});
