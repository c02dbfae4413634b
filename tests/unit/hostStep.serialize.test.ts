/**
 * The text the dynamic provider process loads as HostStep's provider: the loader
 * (`providerText`), which requires the compiled provider module, loaded here as the provider
 * process loads it (`require-from-string`, then `handler()`), from the program's directory and
 * from a project that has the package in its node_modules; and, when the component runs from
 * TypeScript sources, the provider itself through Pulumi's closure serializer, which must accept
 * it (it rejects, for example, a closure that uses a `const` declared further down, or reads a
 * method of an object it copied only in part). Both run (through the connection pool, to a
 * closed port).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { hostStepProvider, providerText } from "../../components/hostStep";

/** Loads a provider text as the dynamic provider process does, from the current directory. */
function loadText(text: string): { handler: () => pulumi.dynamic.ResourceProvider } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const requireFromString = require("require-from-string") as (code: string) => unknown;
  return requireFromString(text) as { handler: () => pulumi.dynamic.ResourceProvider };
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

  it("loads the compiled provider from the program's directory, with a small text", async () => {
    const text = providerText(path.relative(process.cwd(), PROVIDER_MODULE));
    // The loader, not the SSH client: no ssh2, no connection pool in the text.
    assert.ok(text.length < 450, `the loader is ${text.length} characters`);
    assert.doesNotMatch(text, /ssh2|ssh-pool/);
    const provider = loadText(text).handler();
    assert.equal(provider, hostStepProvider, "the provider of the compiled module itself");
    const create = provider.create.bind(provider);
    await assert.rejects(create(CLOSED_PORT_STEP), /^Error: root@127\.0\.0\.1:1: cannot connect: /);
  });

  it("by package name alone (the program's directory reaches it so), with fewer bytes", () => {
    const text = providerText();
    assert.ok(text.length < providerText("build/components/hostStepProvider.js").length);
    assert.equal(loadText(text).handler(), hostStepProvider);
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
      process.chdir(project);
      const loader = loadText(providerText("moved/build/components/hostStepProvider.js"));
      assert.equal(loader.handler(), hostStepProvider);
      // Without the package either, the error says where it ran and what it could not find.
      fs.rmSync(path.join(project, "node_modules"), { recursive: true });
      assert.throws(
        () => loader.handler(),
        /^Error: nix-ssh-cache, in .*: Cannot find module 'nix-ssh-cache\/build\/components\/hostStepProvider\.js'; run Pulumi in the project that uses nix-ssh-cache, with its node_modules$/,
      );
    } finally {
      process.chdir(cwd);
      fs.rmSync(project, { recursive: true, force: true });
    }
  });
});
