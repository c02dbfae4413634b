/**
 * Component wiring under `pulumi.runtime.setMocks` (no engine, no hosts, no provider plugins):
 * the dedicated client identity (`@pulumi/tls` keys), signing key generations and substituter
 * URL parameters.
 */
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import { decodeSpec } from "../../components/hostStep";
import { packagedFileText } from "../../components/remoteScripts";
import { ED25519_KEY, FAKE_PRIVATE_KEY, HOST_KEY } from "./fixtures";

import { createHash } from "node:crypto";

const bytes = (name: string) => createHash("sha256").update(name).digest();
const CACHE_KEY = (name: string) => `${name}:${bytes(name).toString("base64")}`;
const TLS_PUBLIC = (name: string) =>
  `ssh-ed25519 ${Buffer.concat([
    Buffer.from([0, 0, 0, 11]),
    Buffer.from("ssh-ed25519"),
    Buffer.from([0, 0, 0, 32]),
    bytes(name),
  ]).toString("base64")}\n`;
const TLS_PRIVATE = (name: string) =>
  `-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-of-${name}\n-----END OPENSSH PRIVATE KEY-----\n`;

/** What the mocks saw: every resource with its (plain) inputs and state. */
interface Seen {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const seen: Seen[] = [];
/** Options and props of every resource, from a transformation on the component. */
const registered: pulumi.ResourceTransformationArgs[] = [];

/** Fake results of the host scripts, by step label. */
function stepResult(inputs: Record<string, unknown>): Record<string, unknown> {
  const step = decodeSpec(String(inputs.spec)).step;
  const env = (inputs.env ?? {}) as Record<string, string>;
  if (step === "probe") return { os: "linux", hostKey: HOST_KEY, daemonRunning: true };
  if (step.startsWith("signing key")) return { publicKey: CACHE_KEY(env.KEY_NAME) };
  if (step === "root SSH key") return { publicKey: ED25519_KEY };
  if (step === "canary build")
    return { path: `/nix/store/${"a".repeat(32)}-nix-ssh-cache-canary-${env.NONCE}` };
  if (step.startsWith("verify")) return { verified: true };
  if (step.startsWith("sign ")) return { keyName: "stage.test", paths: 5, signed: 3 };
  return { exists: true, sha256: "0" };
}

before(() => {
  pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        seen.push({ type: args.type, name: args.name, inputs: args.inputs });
        if (args.type === "tls:index/privateKey:PrivateKey") {
          return {
            id: `${args.name}-id`,
            state: {
              ...args.inputs,
              publicKeyOpenssh: TLS_PUBLIC(args.name),
              privateKeyOpenssh: TLS_PRIVATE(args.name),
            },
          };
        }
        if (args.type.startsWith("pulumi-nodejs:dynamic")) {
          return {
            id: `${args.name}-id`,
            state: { ...args.inputs, result: stepResult(args.inputs), drifted: false },
          };
        }
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call: (args: pulumi.runtime.MockCallArgs) => args.inputs,
    },
    "nix-ssh-cache",
    "unit",
    false,
  );
});

/** The value of an output (rejects when it failed). */
const promiseOf = <T>(o: pulumi.Output<T>): Promise<T> =>
  (o as unknown as { promise(): Promise<T> }).promise();

/** The value of a mock input, unwrapped when it arrived as a secret. */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
function plain<T>(value: unknown): T {
  const v = value as Record<string, unknown>;
  return (v && typeof v === "object" && SECRET_SIG in v ? v.value : v) as T;
}

function envOf(name: string): Record<string, string> {
  const step = seen.find((s) => s.name === name);
  assert.ok(step, `no resource ${name}; have ${seen.map((s) => s.name).join(", ")}`);
  return plain<Record<string, string>>(step.inputs.env);
}

function fileContent(name: string): string {
  const env = envOf(name);
  return env.FILE_CONTENT;
}

const host = (h: string, name: string) => ({
  connection: { host: h, privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
  name,
});

describe('NixSshCache with clientIdentity: "dedicated" (mocks)', () => {
  let cache: import("../../components").NixSshCache;

  before(async () => {
    const { NixSshCache } = await import("../../components");
    cache = new NixSshCache(
      "cache",
      {
        staging: {
          connection: { host: "stage.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
        },
        production: [host("prod1.test", "prod1"), host("prod2.test", "prod2")],
        clientIdentity: "dedicated",
        authorizedKeys: [ED25519_KEY],
        priority: 30,
      },
      {
        transformations: [
          (a) => {
            registered.push(a);
            return undefined;
          },
        ],
      },
    );
    await promiseOf(cache.verified);
  });

  it("makes one ED25519 tls.PrivateKey per production host, and no root-key steps", () => {
    const keys = seen.filter((s) => s.type === "tls:index/privateKey:PrivateKey");
    assert.deepEqual(keys.map((k) => k.name).sort(), [
      "cache-prod1-identity-key",
      "cache-prod2-identity-key",
    ]);
    for (const k of keys) assert.equal(k.inputs.algorithm, "ED25519");
    assert.ok(!seen.some((s) => s.name.endsWith("-root-key")), "root keys must not be read");
  });

  it("staging authorises each tls public key on its own (plus authorizedKeys), before any host is reached", async () => {
    for (const n of ["prod1", "prod2"]) {
      const env = envOf(`cache-staging-authorize-${n}`);
      assert.equal(env.KEYS_FILE, "/etc/ssh/nix-ssh-cache/authorized_keys");
      assert.equal(env.KEYS_ENTRY, `client-${n}`);
      assert.equal(env.KEYS, `restrict ${TLS_PUBLIC(`cache-${n}-identity-key`).trim()}\n`);
    }
    const extra = envOf("cache-staging-authorized-keys");
    assert.equal(extra.KEYS_ENTRY, "keys");
    assert.ok(extra.KEYS.includes(ED25519_KEY.split(" ")[1]), "authorizedKeys entry missing");
    assert.equal(extra.KEYS.trim().split("\n").length, 1);
    assert.deepEqual(
      [...(await promiseOf(cache.productionRootKeys))].sort(),
      [
        TLS_PUBLIC("cache-prod1-identity-key").trim(),
        TLS_PUBLIC("cache-prod2-identity-key").trim(),
      ].sort(),
    );
  });

  it("the staging module names the keys file and waits for no production key", async () => {
    const module = await promiseOf(cache.stagingModule);
    assert.match(module, /nix\.sshServe\.keys = \[ *\];/);
    assert.match(
      module,
      /Match User nix-ssh\n\s+AuthorizedKeysFile \/etc\/ssh\/nix-ssh-cache\/authorized_keys\n/,
    );
  });

  it("installs the private key root-only at /etc/nix/nix-ssh-cache/id_ed25519", () => {
    const env = envOf("cache-prod1-identity-key-file");
    assert.equal(env.FILE_PATH, "/etc/nix/nix-ssh-cache/id_ed25519");
    assert.equal(env.FILE_MODE, "0600");
    assert.equal(env.FILE_OWNER, undefined, "root:root is file.sh's default");
    assert.equal(
      fileContent("cache-prod1-identity-key-file"),
      TLS_PRIVATE("cache-prod1-identity-key"),
    );
  });

  it("keeps the private key secret: the key file's env is a secret input and a secret output", async () => {
    const raw = seen.find((s) => s.name === "cache-prod1-identity-key-file")!.inputs.env;
    assert.ok(
      raw && typeof raw === "object" && SECRET_SIG in raw,
      "env must reach the engine as a secret",
    );
    const keyFile = registered.find((r) => r.name === "cache-prod1-identity-key-file");
    assert.ok(keyFile, "key file step not registered");
    assert.ok(
      (keyFile.opts as pulumi.CustomResourceOptions).additionalSecretOutputs?.includes("env"),
      "env must be an additional secret output",
    );
    assert.equal(await pulumi.isSecret(keyFile.props.env as pulumi.Output<unknown>), true);
  });

  it("every step's connection reaches the engine as a secret, though its key was a plain string", () => {
    const steps = seen.filter((s) => s.type === "pulumi-nodejs:dynamic/nix-ssh-cache:HostStep");
    assert.ok(steps.length > 10, `${steps.length} steps`);
    const clear = steps.filter((s) => {
      const c = s.inputs.connection;
      return !(c && typeof c === "object" && SECRET_SIG in c);
    });
    assert.deepEqual(
      clear.map((s) => s.name),
      [],
      "connection inputs not secret",
    );
    assert.equal(
      plain<{ privateKey: string }>(steps[0].inputs.connection).privateKey,
      FAKE_PRIVATE_KEY,
    );
  });

  it("the private key reaches no other resource", () => {
    const secret = "secret-of-cache-prod1-identity-key";
    const leaks = seen
      .filter(
        (s) => s.name !== "cache-prod1-identity-key-file" && s.name !== "cache-prod1-identity-key",
      )
      .filter(
        (s) =>
          JSON.stringify(s.inputs).includes(secret) ||
          JSON.stringify(s.inputs).includes(
            Buffer.from(TLS_PRIVATE("cache-prod1-identity-key")).toString("base64"),
          ),
      );
    assert.deepEqual(
      leaks.map((s) => s.name),
      [],
    );
  });

  it("each host's substituter URL names the key file (ssh-key=), after the cache's parameters", async () => {
    const url = "ssh://nix-ssh@stage.test?priority=30&ssh-key=/etc/nix/nix-ssh-cache/id_ed25519";
    assert.equal(await promiseOf(cache.clients[0].substituterUrl), url);
    assert.match(
      fileContent("cache-prod1-nix-conf"),
      new RegExp(`extra-substituters = ${url.replace(/[?.]/g, "\\$&")}`),
    );
    assert.ok((await promiseOf(cache.productionModule)).includes(`"${url}"`));
    assert.equal(envOf("cache-prod1-verify").SUBSTITUTER, url);
  });
});

describe("CacheServer signing key generations (mocks)", () => {
  let server: import("../../components").CacheServer;

  before(async () => {
    const { CacheServer } = await import("../../components");
    server = new CacheServer("gen", {
      host: { connection: { host: "stage.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY } },
      authorizedKeys: [ED25519_KEY],
      signingKey: { generation: 2, previousGenerations: [0] },
    });
    await promiseOf(server.coordinates);
  });

  it("names generation N <keyName>-N in its own files; keeps generation 0's resource name", () => {
    const current = seen.find((s) => s.name === "gen-signing-key-2")!;
    assert.deepEqual(current.inputs.env, {
      KEY_NAME: "stage.test-2",
      KEY_DIR: "/etc/shipnix/binary",
      KEY_GENERATION: "2",
    });
    const previous = seen.find((s) => s.name === "gen-signing-key")!;
    assert.deepEqual(previous.inputs.env, {
      KEY_NAME: "stage.test",
      KEY_DIR: "/etc/shipnix/binary",
    });
  });

  it("production trusts the current key first, then the previous one; staging signs with both", async () => {
    const coordinates = await promiseOf(server.coordinates);
    assert.deepEqual(coordinates.publicKeys, [CACHE_KEY("stage.test-2"), CACHE_KEY("stage.test")]);
    assert.equal(await promiseOf(server.cachePublicKey), CACHE_KEY("stage.test-2"));
    assert.match(
      fileContent("gen-nix-conf"),
      /extra-secret-key-files = \/etc\/shipnix\/binary\/cache-priv-key-2\.pem \/etc\/shipnix\/binary\/cache-priv-key\.pem/,
    );
  });

  it("re-signs the store with the current key", () => {
    const sign = seen.find((s) => s.name === "gen-sign-store-2")!;
    assert.deepEqual(sign.inputs.env, {
      KEY_FILE: "/etc/shipnix/binary/cache-priv-key-2.pem",
      PUBLIC_KEY: CACHE_KEY("stage.test-2"),
    });
  });
});

describe("CacheServer signExistingPaths (mocks)", () => {
  let server: import("../../components").CacheServer;

  before(async () => {
    const { CacheServer } = await import("../../components");
    server = new CacheServer("first", {
      host: { connection: { host: "stage.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY } },
      authorizedKeys: [ED25519_KEY],
    });
    new CacheServer("nosign", {
      host: {
        connection: { host: "stage2.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
      },
      authorizedKeys: [ED25519_KEY],
      signExistingPaths: false,
    });
    await promiseOf(server.coordinates);
  });

  it("by default signs the store once with the first key", () => {
    const sign = seen.find((s) => s.name === "first-sign-store")!;
    assert.ok(sign, "first-sign-store step");
    assert.equal(decodeSpec(String(sign.inputs.spec)).step, "sign the paths already in the store");
    assert.deepEqual(sign.inputs.env, {
      KEY_FILE: "/etc/shipnix/binary/cache-priv-key.pem",
      PUBLIC_KEY: CACHE_KEY("stage.test"),
    });
  });

  it("reports the number of paths it newly signed", async () => {
    assert.equal(await promiseOf(server.signedPaths), 3);
  });

  it("signExistingPaths: false adds no step", () => {
    assert.equal(
      seen.some((s) => s.name === "nosign-sign-store"),
      false,
    );
  });
});

describe("CacheServer signingKey.adoptExisting (mocks)", () => {
  before(async () => {
    const { CacheServer } = await import("../../components");
    const server = new CacheServer("adopt", {
      host: {
        connection: { host: "stage3.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
      },
      authorizedKeys: [ED25519_KEY],
      signingKey: { generation: 1, previousGenerations: [0], adoptExisting: true },
    });
    await promiseOf(server.coordinates);
  });

  it("lets every generation's step use a key it did not generate (ADOPT_KEY=1); by default none does", () => {
    for (const name of ["adopt-signing-key", "adopt-signing-key-1"]) {
      const step = seen.find((s) => s.name === name)!;
      assert.equal((step.inputs.env as Record<string, string>).ADOPT_KEY, "1", name);
    }
    const plain = seen.filter((s) => /^(gen|first)-signing-key/.test(s.name));
    assert.ok(plain.length >= 2);
    for (const step of plain) assert.equal("ADOPT_KEY" in (step.inputs.env as object), false);
  });
});

describe("CacheClient fetcher (mocks)", () => {
  let client: import("../../components").CacheClient;
  let ngClient: import("../../components").CacheClient;

  before(async () => {
    const { CacheClient } = await import("../../components");
    const cache = (url: string) => ({
      substituterUrl: url,
      publicKeys: [CACHE_KEY("stage.test")],
      hostName: "stage.test",
      port: 22,
      hostKey: HOST_KEY,
      canaryPath: `/nix/store/${"a".repeat(32)}-nix-ssh-cache-canary-1`,
    });
    client = new CacheClient("fetching", {
      host: host("fetch1.test", "fetch1"),
      cache: cache("ssh://nix-ssh@stage.test"),
    });
    ngClient = new CacheClient("fetching-ng", {
      host: host("fetch2.test", "fetch2"),
      cache: cache("ssh-ng://nix-ssh@stage.test"),
    });
    new CacheClient("nofetch", {
      host: host("fetch3.test", "fetch3"),
      cache: cache("ssh://nix-ssh@stage.test"),
      fetcher: false,
    });
    // every step of the three hosts registered (verify comes last)
    await Promise.all([client, ngClient].map((c) => promiseOf(c.verification)));
  });

  it("installs nix-ssh-cache-fetch executable at /usr/local/sbin, on NixOS too", () => {
    const env = envOf("fetching-fetcher");
    assert.equal(env.FILE_PATH, "/usr/local/sbin/nix-ssh-cache-fetch");
    assert.equal(env.FILE_MODE, "0755");
    // In the state by name and digest (9.8 KB less, twice, per host); the provider reads the file
    // back from the installed package before the step runs.
    assert.match(env.FILE_CONTENT, /^package-file nix-ssh-cache-fetch\.pl [0-9a-f]{16}$/);
    assert.match(packagedFileText(env.FILE_CONTENT, true), /^#!\/usr\/bin\/env perl\n/);
    const step = seen.find((s) => s.name === "fetching-fetcher")!;
    assert.equal(
      decodeSpec(String(step.inputs.spec)).step,
      "closure fetcher /usr/local/sbin/nix-ssh-cache-fetch",
    );
  });

  it("fetchCommand is its path with ssh://, empty with ssh-ng:// (no closure query there)", async () => {
    assert.equal(await promiseOf(client.fetchCommand), "/usr/local/sbin/nix-ssh-cache-fetch");
    assert.equal(await promiseOf(ngClient.fetchCommand), "");
  });

  it("fetcher: false installs nothing", () => {
    assert.equal(
      seen.some((s) => s.name === "nofetch-fetcher"),
      false,
    );
  });
});

describe("CacheClient with crafted coordinates (mocks)", () => {
  const good = () => ({
    substituterUrl: "ssh://nix-ssh@stage.test",
    publicKeys: [CACHE_KEY("stage.test")],
    hostName: "stage.test",
    port: 22,
    hostKey: HOST_KEY,
    canaryPath: `/nix/store/${"a".repeat(32)}-nix-ssh-cache-canary-1`,
  });
  const crafted: [string, Record<string, unknown>][] = [
    ["port", { port: "22\n  ProxyCommand touch /tmp/pwned\n  StrictHostKeyChecking no" }],
    ["hostName", { hostName: "stage.test\n  StrictHostKeyChecking no" }],
    ["publicKeys[0]", { publicKeys: [`${CACHE_KEY("stage.test")}\nrequire-sigs = false`] }],
    ["hostKey", { hostKey: `${HOST_KEY}\n@cert-authority * ${HOST_KEY}` }],
    ["substituterUrl", { substituterUrl: "ssh://nix-ssh@stage.test file:///tmp/evil" }],
    ["canaryPath", { canaryPath: "/nix/store/x'; touch /tmp/pwned; '" }],
  ];
  for (const [field, change] of crafted) {
    it(`refuses a crafted ${field} before any step is registered, naming the field`, async () => {
      const { CacheClient } = await import("../../components");
      const before = seen.length;
      assert.throws(
        () =>
          new CacheClient(`crafted-${field.replace(/\W/g, "")}`, {
            host: host(`crafted-${field.replace(/\W/g, "")}.test`, "crafted"),
            cache: { ...good(), ...change } as never,
          }),
        (e: Error) => e.message.includes(`cache.${field} (`),
      );
      const steps = seen.slice(before).filter((s) => s.type.startsWith("pulumi-nodejs:dynamic"));
      assert.deepEqual(
        steps.map((s) => s.name),
        [],
      );
    });
  }
});
