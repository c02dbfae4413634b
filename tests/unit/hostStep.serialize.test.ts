/**
 * The HostStep provider goes through Pulumi's closure serializer on every `pulumi up` (the
 * dynamic provider process runs the serialized text, not this module). Checks here that the
 * serializer accepts it — it rejects, for example, a closure that uses a `const` declared further
 * down, or reads a method of an object it copied only in part — and that the serialized text
 * loads and runs (through the connection pool, to a closed port).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { hostStepProvider } from "../../components/hostStep";

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
});
