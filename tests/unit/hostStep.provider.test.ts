/**
 * The HostStep provider's decisions without a host: what a diff counts as work, what `update`
 * does when only the transport changed, and the one-line step spec.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  decodeSpec,
  encodeSpec,
  HostStepOutputs,
  hostStepProvider,
  StepSpec,
} from "../../components/hostStep";
import { hostScript } from "../../components/host";
import { packScript, scriptBody } from "../../components/hostStepProvider";
import {
  packagedFileRef,
  packagedFileText,
  remoteScriptText,
} from "../../components/remoteScripts";
import { Connection } from "../../components/ssh";

const SPEC: StepSpec = {
  name: "cache-staging-sshd-config",
  step: "sshd drop-in /etc/ssh/sshd_config.d/nix-ssh-cache.conf",
  script: "1024ff0d643a39ad",
  readable: true,
  removable: true,
  removeEnv: { REMOVE_KEY: "0" },
  driftKeys: ["exists", "sha256"],
  anchorKeys: [],
  timeoutSeconds: 120,
};

/** A closed port on loopback: any attempt to run something fails at once. */
const CLOSED: Connection = { host: "127.0.0.1", port: 1, user: "root", become: "none" };

function state(over: Partial<HostStepOutputs> = {}): HostStepOutputs {
  return {
    connection: { ...CLOSED, password: "old" },
    spec: encodeSpec(SPEC),
    script: "echo '{}'",
    env: { FILE_PATH: "/etc/x" },
    result: { exists: true, sha256: "abc" },
    drifted: false,
    ...over,
  };
}

describe("HostStep spec line", () => {
  it("round-trips, on one line", () => {
    const line = encodeSpec(SPEC);
    assert.doesNotMatch(line, /\n/);
    assert.deepEqual(decodeSpec(line), SPEC);
    const bare = { ...SPEC, removeEnv: {}, driftKeys: [], readable: false, removable: false };
    assert.deepEqual(decodeSpec(encodeSpec(bare)), bare);
  });
});

describe("HostStep provider: transport changes", () => {
  const diff = hostStepProvider.diff!.bind(hostStepProvider);
  const update = hostStepProvider.update!.bind(hostStepProvider);

  it("a new key or a new timeout is a change, not a replacement", async () => {
    const olds = state();
    const key = await diff("id", olds, { ...olds, connection: { ...CLOSED, password: "new" } });
    assert.equal(key.changes, true);
    assert.deepEqual(key.replaces, []);
    const timeout = encodeSpec({ ...SPEC, timeoutSeconds: 600 });
    assert.equal((await diff("id", olds, { ...olds, spec: timeout })).changes, true);
    assert.equal((await diff("id", olds, { ...olds })).changes, false);
  });

  it("another host or port replaces the step", async () => {
    const olds = state();
    const moved = await diff("id", olds, { ...olds, connection: { ...CLOSED, port: 2 } });
    assert.deepEqual(moved.replaces, ["connection"]);
  });

  it("a label or timeout change is stored without running anything", async () => {
    const olds = state();
    const spec = encodeSpec({ ...SPEC, step: "renamed", timeoutSeconds: 5 });
    const { outs } = await update("id", olds, { ...olds, spec });
    assert.equal(outs.spec, spec);
    assert.deepEqual(outs.result, olds.result);
  });

  it("a new connection is proven with one login before it is stored", async () => {
    const olds = state();
    const news = { ...olds, connection: { ...CLOSED, password: "new" } };
    // The closed port makes the proof fail: the update must not store an unproven connection.
    await assert.rejects(update("id", olds, news), /cannot connect/);
  });

  it("a change of the script or its inputs runs the step", async () => {
    const olds = state();
    await assert.rejects(
      update("id", olds, { ...olds, env: { FILE_PATH: "/etc/y" } }),
      /cannot connect/,
    );
    const script = encodeSpec({ ...SPEC, script: "ffffffffffffffff" });
    await assert.rejects(update("id", olds, { ...olds, spec: script }), /cannot connect/);
  });
});

describe("HostStep script in the state", () => {
  it("is stored compressed and read back as it was; a script stored as text is read as it is", () => {
    const body = `#!/bin/bash\n${"nsc_log() { printf '%s\\n' \"$*\" >&2; }\n".repeat(200)}echo '{}'\n`;
    const packed = packScript(body);
    assert.match(packed, /^gzip-base64:[A-Za-z0-9+/=]+$/);
    assert.ok(packed.length < body.length / 4, `${packed.length} of ${body.length}`);
    assert.equal(scriptBody(packed), body);
    assert.equal(scriptBody("echo '{}'"), "echo '{}'");
  });

  it("a package host script is stored by name; the provider reads it from the package", () => {
    for (const [body, ref] of [
      [hostScript("file"), "package file"],
      [hostScript("file", "linux"), "package file:linux"],
      [hostScript("nixos-apply", "nixos"), "package nixos-apply:nixos"],
    ] as const) {
      const packed = packScript(body, true);
      assert.equal(packed, ref);
      assert.equal(scriptBody(packed), body);
    }
    assert.throws(() => scriptBody("package ../../etc/passwd"), /not a packaged host script/);
  });

  it("another script after lib.sh is stored without it, which the provider puts back", () => {
    const body = `${hostScript("file")}\necho extra`;
    const packed = packScript(body, true);
    assert.match(packed, /^gzip-base64\+lib [0-9a-f]{16}:/);
    assert.ok(packed.length < packScript(body).length / 2, `${packed.length} characters`);
    assert.equal(scriptBody(packed), body);
    // A script that does not begin with lib.sh is stored whole.
    assert.match(packScript("echo '{}'", true), /^gzip-base64:/);
    // A state written with another lib.sh runs the installed one.
    const other = packed.replace(
      /^gzip-base64\+lib [0-9a-f]{16}:/,
      "gzip-base64+lib 0123456789abcdef:",
    );
    assert.equal(scriptBody(other), body);
  });
});

describe("HostStep: a file of the package in a step's inputs", () => {
  const diff = hostStepProvider.diff!.bind(hostStepProvider);
  const update = hostStepProvider.update!.bind(hostStepProvider);
  const fetcher = remoteScriptText("nix-ssh-cache-fetch.pl");

  it("is stored by name and digest; the provider reads it from the package", () => {
    const ref = packagedFileRef(fetcher)!;
    assert.match(ref, /^package-file nix-ssh-cache-fetch\.pl [0-9a-f]{16}$/);
    assert.equal(packagedFileText(ref, true), fetcher);
    assert.equal(packagedFileRef(`${fetcher}\n`), undefined, "another text is stored as it is");
    assert.equal(
      packagedFileRef(remoteScriptText("file")),
      undefined,
      "host scripts are not files",
    );
    assert.equal(
      packagedFileText("extra-substituters = ssh://x", true),
      "extra-substituters = ssh://x",
    );
    assert.throws(
      () => packagedFileText("package-file ../../etc/passwd 0", true),
      /not a packaged file/,
    );
  });

  it("another version of the file is a change; an apply of it is refused", async () => {
    const ref = packagedFileRef(fetcher)!;
    const other = ref.replace(/[0-9a-f]{16}$/, "0123456789abcdef");
    assert.equal(packagedFileText(other, false), other, "kept for a read or a remove");
    assert.throws(
      () => packagedFileText(other, true),
      /installed package has nix-ssh-cache-fetch\.pl/,
    );
    const olds = state({ env: { FILE_PATH: "/usr/local/sbin/x", FILE_CONTENT: other } });
    const news = { ...olds, env: { FILE_PATH: "/usr/local/sbin/x", FILE_CONTENT: ref } };
    assert.equal((await diff("id", olds, news)).changes, true);
    await assert.rejects(update("id", news, olds), /installed package has/);
  });

  it("a state that holds the text itself (earlier versions) is no change", async () => {
    const olds = state({ env: { FILE_PATH: "/usr/local/sbin/x", FILE_CONTENT: fetcher } });
    const news = { ...olds, env: { ...olds.env, FILE_CONTENT: packagedFileRef(fetcher)! } };
    assert.equal((await diff("id", olds, news)).changes, false);
  });
});
