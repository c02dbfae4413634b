import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toConnection } from "../../components/host";
import {
  LATER,
  NixSshCacheInputError,
  type PlainConnection,
  type PlainHost,
  type PlainNixSshCacheArgs,
  isValidHost,
  validateArgs,
  validateFetchArgs,
} from "../../components/validate";
import { ED25519_KEY, FAKE_PRIVATE_KEY, HOST_KEY, RSA_PEM_PRIVATE_KEY } from "./fixtures";

/** A host as the cases write it: the connection's fields flat (see {@link toModel}). */
interface FlatHost {
  host: string;
  port?: number;
  user?: string;
  privateKey?: string;
  password?: string;
  hostKey?: string;
  become?: string;
  cacheHost?: string;
  name?: string;
}

/** The arguments as the cases write them. */
type FlatArgs = Omit<PlainNixSshCacheArgs, "staging" | "production"> & {
  staging: FlatHost;
  production: FlatHost[];
};

/** The host model: `{ connection: { host, port, … }, become, cacheHost, name }`. */
function hostModel(h: FlatHost): PlainHost {
  if (h === null || typeof h !== "object") return h;
  const { become, cacheHost, name, ...connection } = h;
  const out: PlainHost = { connection };
  if (become !== undefined) out.become = become;
  if (cacheHost !== undefined) out.cacheHost = cacheHost;
  if (name !== undefined) out.name = name;
  return out;
}

function toModel(a: FlatArgs): PlainNixSshCacheArgs {
  return {
    ...a,
    staging: a.staging && hostModel(a.staging),
    production: Array.isArray(a.production) ? a.production.map(hostModel) : a.production,
  };
}

/** The field path in the host model of a path the cases write flat. */
function modelPath(path: string): string {
  return path
    .replace(
      /^(staging|production\[\d+\])\.(host|port|user|privateKey|password|hostKey)\b/,
      "$1.connection.$2",
    )
    .replace(/^(staging|production\[\d+\])$/, "$1.connection");
}

// Credentials from an ssh-agent in the environment would satisfy "no credentials".
delete process.env.SSH_AUTH_SOCK;
// Keys in the operator's own known_hosts would verify hosts that these cases do not pin.
process.env.HOME = mkdtempSync(join(tmpdir(), "nsc-validate-home-"));

/** A complete, valid set of arguments; each case breaks one thing. */
function good(): FlatArgs {
  return {
    staging: { host: "stage.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
    production: [
      { host: "prod1.test", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY, name: "web1" },
      {
        host: "prod2.test",
        password: "hunter2",
        user: "deploy",
        become: "sudo",
        port: 2222,
        hostKey: HOST_KEY,
      },
    ],
    keyName: "stage.test-1",
    keyDirectory: "/etc/nix-ssh-cache",
    fragments: "remote",
    fragmentPath: "/etc/nixos/nix-ssh-cache",
    localFragmentsDir: "nixos/generated",
    rebuild: "switch",
    protocol: "ssh",
    write: false,
    signingKey: { generation: 2, previousGenerations: [1] },
    compress: false,
    maxConnections: 1,
    priority: 30,
    authorizedKeys: [ED25519_KEY],
    clientIdentity: "root",
  };
}

/** Returns the problems validateArgs reports (fails when it does not throw the typed error). */
function problemsOf(args: FlatArgs): readonly string[] {
  try {
    validateArgs(toModel(args));
  } catch (e) {
    assert.ok(e instanceof NixSshCacheInputError, `unexpected error type: ${e}`);
    assert.equal(e.name, "NixSshCacheInputError");
    return e.problems;
  }
  assert.fail("validateArgs accepted invalid input");
}

type Case = [title: string, mutate: (a: FlatArgs) => void, path: string, host: string];

const ED25519_BLOB = ED25519_KEY.split(" ")[1];

const BAD: Case[] = [
  [
    "host with space and !",
    (a) => (a.production[1].host = "bad host!"),
    "production[1].host",
    '"bad host!"',
  ],
  ["empty staging host", (a) => (a.staging.host = ""), "staging.host", '""'],
  [
    "out-of-range IPv4",
    (a) => (a.production[0].host = "256.1.1.1"),
    "production[0].host",
    '"256.1.1.1"',
  ],
  ["truncated IPv4", (a) => (a.production[0].host = "10.0.0"), "production[0].host", '"10.0.0"'],
  [
    "label starting with -",
    (a) => (a.production[0].host = "-x.test"),
    "production[0].host",
    '"-x.test"',
  ],
  ["empty label", (a) => (a.production[0].host = "a..test"), "production[0].host", '"a..test"'],
  [
    "label over 63 chars",
    (a) => (a.production[0].host = `${"a".repeat(64)}.test`),
    "production[0].host",
    "aaaa",
  ],
  ["bad bracketed IPv6", (a) => (a.production[0].host = "[::g]"), "production[0].host", '"[::g]"'],
  [
    "URL instead of host",
    (a) => (a.staging.host = "ssh://stage.test"),
    "staging.host",
    '"ssh://stage.test"',
  ],
  ["port 0", (a) => (a.staging.port = 0), "staging.port", '"stage.test"'],
  ["port 70000", (a) => (a.production[1].port = 70000), "production[1].port", '"prod2.test"'],
  ["fractional port", (a) => (a.production[0].port = 22.5), "production[0].port", '"prod1.test"'],
  [
    "port as string",
    (a) => (a.production[0].port = "22" as unknown as number),
    "production[0].port",
    '"prod1.test"',
  ],
  ["upper-case user", (a) => (a.staging.user = "Root"), "staging.user", '"stage.test"'],
  [
    "user starting with digit",
    (a) => (a.production[0].user = "1abc"),
    "production[0].user",
    '"prod1.test"',
  ],
  [
    "signingKey.adoptExisting not a boolean",
    (a) => (a.signingKey = { adoptExisting: "yes" as unknown as boolean }),
    "signingKey.adoptExisting",
    '"stage.test"',
  ],
  ["keyName with colon", (a) => (a.keyName = "stage:1"), "keyName", '"stage.test"'],
  ["keyName with space", (a) => (a.keyName = "stage 1"), "keyName", '"stage.test"'],
  ["empty keyName", (a) => (a.keyName = ""), "keyName", '"stage.test"'],
  [
    "keyName with # (a nix.conf comment: production would trust a cut key)",
    (a) => (a.keyName = "stage#1"),
    "keyName",
    '"stage.test"',
  ],
  ["keyName with $", (a) => (a.keyName = "stage$1"), "keyName", '"stage.test"'],
  ["relative keyDirectory", (a) => (a.keyDirectory = "etc/keys"), "keyDirectory", '"stage.test"'],
  ["keyDirectory with ..", (a) => (a.keyDirectory = "/etc/../tmp"), "keyDirectory", '"stage.test"'],
  [
    "keyDirectory /tmp (world-writable)",
    (a) => (a.keyDirectory = "/tmp"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory under /tmp",
    (a) => (a.keyDirectory = "/tmp/nix-keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory under /var/tmp",
    (a) => (a.keyDirectory = "/var/tmp/keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory under /dev/shm",
    (a) => (a.keyDirectory = "/dev/shm/keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory under /run/user",
    (a) => (a.keyDirectory = "/run/user/1000/keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  ["keyDirectory /run/lock", (a) => (a.keyDirectory = "/run/lock"), "keyDirectory", '"stage.test"'],
  [
    "keyDirectory in a user's home",
    (a) => (a.keyDirectory = "/home/alice/keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory in the Nix store",
    (a) => (a.keyDirectory = "/nix/store/keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  ["keyDirectory /", (a) => (a.keyDirectory = "/"), "keyDirectory", '"stage.test"'],
  ["keyDirectory /etc", (a) => (a.keyDirectory = "/etc"), "keyDirectory", '"stage.test"'],
  [
    "keyDirectory /etc/ (trailing slash)",
    (a) => (a.keyDirectory = "/etc/"),
    "keyDirectory",
    '"stage.test"',
  ],
  ["keyDirectory /var/lib", (a) => (a.keyDirectory = "/var/lib"), "keyDirectory", '"stage.test"'],
  ["keyDirectory with #", (a) => (a.keyDirectory = "/etc/keys#1"), "keyDirectory", '"stage.test"'],
  [
    "keyDirectory with a space",
    (a) => (a.keyDirectory = "/etc/my keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory with a tab",
    (a) => (a.keyDirectory = "/etc/keys\tx"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory with a control character",
    (a) => (a.keyDirectory = "/etc/keys\u0007"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory with a non-ASCII letter",
    (a) => (a.keyDirectory = "/etc/k\u00e9ys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory with a . segment",
    (a) => (a.keyDirectory = "/etc/./keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory with an empty segment",
    (a) => (a.keyDirectory = "/etc//keys"),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "keyDirectory ending in ..",
    (a) => (a.keyDirectory = "/etc/keys/.."),
    "keyDirectory",
    '"stage.test"',
  ],
  [
    "fragmentPath with space",
    (a) => (a.fragmentPath = "/etc/nixos/my file"),
    "fragmentPath",
    '"stage.test"',
  ],
  ["fragmentPath with quote", (a) => (a.fragmentPath = '/etc/"x'), "fragmentPath", '"stage.test"'],
  [
    "fragmentPath with newline",
    (a) => (a.fragmentPath = "/etc/x\n/y"),
    "fragmentPath",
    '"stage.test"',
  ],
  [
    "localFragmentsDir with ..",
    (a) => (a.localFragmentsDir = "nixos/../../x"),
    "localFragmentsDir",
    '"stage.test"',
  ],
  ["empty production list", (a) => (a.production = []), "production", '"stage.test"'],
  [
    "duplicate production host (case-insensitive, default port)",
    (a) => (a.production[1] = { host: "PROD1.test", port: 22, password: "x", hostKey: HOST_KEY }),
    "production[1].host",
    '"PROD1.test"',
  ],
  [
    "staging also listed as production",
    (a) => a.production.push({ host: "stage.test", password: "x", hostKey: HOST_KEY }),
    "production[2].host",
    '"stage.test"',
  ],
  [
    "malformed staging hostKey",
    (a) => (a.staging.hostKey = "ssh-ed25519 AAAA"),
    "staging.hostKey",
    '"stage.test"',
  ],
  [
    "hostKey whose blob holds another type",
    (a) => (a.production[0].hostKey = `ssh-rsa ${ED25519_BLOB}`),
    "production[0].hostKey",
    '"prod1.test"',
  ],
  [
    "hostKey of unsupported type",
    (a) => (a.production[0].hostKey = "ssh-dss AAAA"),
    "production[0].hostKey",
    '"prod1.test"',
  ],
  ["protocol not in enum", (a) => (a.protocol = "https"), "protocol", '"stage.test"'],
  ["rebuild not in enum", (a) => (a.rebuild = "test"), "rebuild", '"stage.test"'],
  ["fragments not in enum", (a) => (a.fragments = "both"), "fragments", '"stage.test"'],
  ["become not in enum", (a) => (a.staging.become = "doas"), "staging.become", '"stage.test"'],
  [
    "privateKey is a path, not a key",
    (a) => (a.production[0].privateKey = "/root/.ssh/id_ed25519"),
    "production[0].privateKey",
    '"prod1.test"',
  ],
  [
    "privateKey is a public key",
    (a) => (a.staging.privateKey = ED25519_KEY),
    "staging.privateKey",
    '"stage.test"',
  ],
  [
    "hostKey truncated (base64 that is not a key)",
    (a) => (a.staging.hostKey = HOST_KEY.slice(0, 40)),
    "staging.hostKey",
    '"stage.test"',
  ],
  [
    "privateKey block with unreadable contents",
    (a) =>
      (a.production[0].privateKey =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAfakefakefake\n-----END OPENSSH PRIVATE KEY-----\n"),
    "production[0].privateKey",
    '"prod1.test"',
  ],
  ["no credentials", (a) => delete a.production[0].privateKey, "production[0]", '"prod1.test"'],
  [
    "empty password",
    (a) => (a.production[1].password = ""),
    "production[1].password",
    '"prod2.test"',
  ],
  [
    "bad cacheHost",
    (a) => (a.staging.cacheHost = "stage_test!"),
    "staging.cacheHost",
    '"stage.test"',
  ],
  [
    "name with space",
    (a) => (a.production[0].name = "web 1"),
    "production[0].name",
    '"prod1.test"',
  ],
  ["duplicate names", (a) => (a.production[1].name = "web1"), "production[1].name", '"prod2.test"'],
  ["write not boolean", (a) => (a.write = "yes" as unknown as boolean), "write", '"stage.test"'],
  [
    "negative signingKey.generation",
    (a) => (a.signingKey = { generation: -1 }),
    "signingKey.generation",
    '"stage.test"',
  ],
  [
    "fractional signingKey.generation",
    (a) => (a.signingKey = { generation: 1.5 }),
    "signingKey.generation",
    '"stage.test"',
  ],
  [
    "previous generation equal to the current one",
    (a) => (a.signingKey = { generation: 2, previousGenerations: [1, 2] }),
    "signingKey.previousGenerations[1]",
    '"stage.test"',
  ],
  [
    "previous generation listed twice",
    (a) => (a.signingKey = { generation: 2, previousGenerations: [1, 1] }),
    "signingKey.previousGenerations[1]",
    '"stage.test"',
  ],
  [
    "previousGenerations not a list",
    (a) => (a.signingKey = { generation: 1, previousGenerations: 0 as unknown as number[] }),
    "signingKey.previousGenerations",
    '"stage.test"',
  ],
  [
    "maxConnections above 1 on ssh://",
    (a) => (a.maxConnections = 8),
    "maxConnections",
    '"stage.test"',
  ],
  [
    "maxConnections above 1 on ssh-ng:// (hung on Nix 2.8 too)",
    (a) => ((a.protocol = "ssh-ng"), (a.write = undefined), (a.maxConnections = 8)),
    "maxConnections",
    '"stage.test"',
  ],
  [
    "maxConnections 0",
    (a) => ((a.protocol = "ssh-ng"), (a.write = undefined), (a.maxConnections = 0)),
    "maxConnections",
    '"stage.test"',
  ],
  [
    "ssh-ng with write: false (every authorised key could build and have it signed)",
    (a) => ((a.protocol = "ssh-ng"), (a.write = false)),
    "write",
    '"stage.test"',
  ],
  ["negative priority", (a) => (a.priority = -1), "priority", '"stage.test"'],
  ["fractional priority", (a) => (a.priority = 2.5), "priority", '"stage.test"'],
  [
    "compress not boolean",
    (a) => (a.compress = "yes" as unknown as boolean),
    "compress",
    '"stage.test"',
  ],
  [
    "keepReleases without pins (it would keep nothing)",
    (a) => (a.keepReleases = 5),
    "keepReleases",
    '"stage.test"',
  ],
  [
    "clientIdentity not in enum",
    (a) => (a.clientIdentity = "user"),
    "clientIdentity",
    '"stage.test"',
  ],
  [
    "authorizedKeys entry not a key",
    (a) => (a.authorizedKeys = [ED25519_KEY, "ssh-ed25519 nope"]),
    "authorizedKeys[1]",
    '"stage.test"',
  ],
];

describe("validateArgs: bad inputs", () => {
  // A host without key or password is fine when an ssh-agent is there (as in @pulumi/command).
  const agent = process.env.SSH_AUTH_SOCK;
  before(() => delete process.env.SSH_AUTH_SOCK);
  after(() => {
    if (agent !== undefined) process.env.SSH_AUTH_SOCK = agent;
  });
  for (const [title, mutate, flatPath, host] of BAD) {
    const path = modelPath(flatPath);
    it(`${title}: names ${path} and the host`, () => {
      const args = good();
      mutate(args);
      const problems = problemsOf(args);
      assert.equal(
        problems.length,
        1,
        `exactly one problem expected, got:\n${problems.join("\n")}`,
      );
      const [problem] = problems;
      assert.ok(
        problem.startsWith(`${path} (`),
        `expected the field path ${path} first: ${problem}`,
      );
      assert.ok(problem.includes(host), `expected the host ${host} in: ${problem}`);
      assert.match(problem, /\): \S/, "a description follows the location");
    });
  }

  it("gives the documented message for a bad production host", () => {
    const args = good();
    args.production[1].host = "bad host!";
    assert.match(
      problemsOf(args)[0],
      /^production\[1\]\.connection\.host \("bad host!"\): not a valid host name or IP address; use a DNS name like "prod1\.example\.com"/,
    );
  });

  it("collects every problem into one error, one line each", () => {
    const args = good();
    args.production[1].host = "bad host!";
    args.staging.port = 0;
    args.protocol = "http";
    args.keyName = "a:b";
    let error: unknown;
    try {
      validateArgs(toModel(args));
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof NixSshCacheInputError);
    assert.equal(error.problems.length, 4);
    const lines = error.message.split("\n");
    assert.equal(lines[0], "nix-ssh-cache: 4 invalid inputs:");
    assert.deepEqual(
      lines.slice(1),
      error.problems.map((p) => `  - ${p}`),
    );
  });

  it("says why a shared keyDirectory is refused and what to use instead", () => {
    const args = good();
    args.keyDirectory = "/tmp";
    assert.equal(
      problemsOf(args)[0],
      'keyDirectory ("/tmp", staging host "stage.test"): is /tmp, a directory other users (or the system) share; the signing key needs a directory only root can change, e.g. "/etc/nix-ssh-cache" (the default is "/etc/shipnix/binary")',
    );
    args.keyDirectory = "/etc/keys#1";
    assert.match(problemsOf(args)[0], /may only contain letters, digits.*no whitespace, "#"/);
  });

  it("never echoes secrets", () => {
    const args = good();
    args.production[0].privateKey = "-----BEGIN NOT A KEY sup3rs3cret";
    args.production[1].password = "";
    const message = problemsOf(args).join("\n");
    assert.doesNotMatch(message, /sup3rs3cret/);
    assert.match(message, /<secret>/);
  });

  it("reports a missing staging object and a missing production list", () => {
    const problems = problemsOf({} as FlatArgs);
    assert.ok(problems.some((p) => p.startsWith("staging:")));
    assert.ok(problems.some((p) => p.startsWith("production (")));
  });
});

describe("validateArgs: good inputs", () => {
  const GOOD: [string, (a: FlatArgs) => void][] = [
    ["the full example", () => {}],
    [
      "minimal args",
      (a) => {
        for (const k of [
          "keyName",
          "keyDirectory",
          "fragments",
          "fragmentPath",
          "localFragmentsDir",
          "rebuild",
          "protocol",
          "write",
          "signingKey",
          "compress",
          "maxConnections",
          "priority",
          "authorizedKeys",
          "clientIdentity",
        ] as const) {
          delete a[k];
        }
        a.staging = { host: "stage.test", password: "x", hostKey: HOST_KEY };
        a.production = [{ host: "prod1.test", password: "x", hostKey: HOST_KEY }];
      },
    ],
    ["IPv4 hosts", (a) => ((a.staging.host = "127.0.0.2"), (a.production[0].host = "127.0.0.3"))],
    ["IPv6 hosts", (a) => ((a.staging.host = "::1"), (a.production[0].host = "[fd00::3]"))],
    [
      "a trailing-dot FQDN and a single label",
      (a) => ((a.staging.host = "stage.test."), (a.production[0].host = "localhost")),
    ],
    [
      "the staging host on another port as production",
      (a) =>
        (a.production[0] = { host: "stage.test", port: 2222, password: "x", hostKey: HOST_KEY }),
    ],
    [
      "ssh-ng, boot, local fragments, write",
      (a) =>
        Object.assign(a, { protocol: "ssh-ng", rebuild: "boot", fragments: "local", write: true }),
    ],
    ["an RSA PEM private key", (a) => (a.staging.privateKey = RSA_PEM_PRIVATE_KEY)],
    ["user with _ and -", (a) => (a.production[0].user = "_nix-deploy")],
    [
      "one connection on ssh-ng",
      (a) => Object.assign(a, { protocol: "ssh-ng", write: undefined, maxConnections: 1 }),
    ],
    ["generation 0 with no previous generations", (a) => (a.signingKey = { generation: 0 })],
    [
      "rolling back to an older generation",
      (a) => (a.signingKey = { generation: 1, previousGenerations: [2, 0] }),
    ],
    ["a dedicated client identity", (a) => (a.clientIdentity = "dedicated")],
    ["signingKey.adoptExisting", (a) => (a.signingKey = { generation: 1, adoptExisting: true })],
    [
      "keyDirectory /etc/shipnix/binary (the default)",
      (a) => (a.keyDirectory = "/etc/shipnix/binary"),
    ],
    ["keyDirectory with a trailing slash", (a) => (a.keyDirectory = "/etc/nix-ssh-cache/")],
    ["keyDirectory /etc/nix", (a) => (a.keyDirectory = "/etc/nix")],
    ["keyDirectory under /var/lib", (a) => (a.keyDirectory = "/var/lib/nix-ssh-cache/keys")],
    ["keyDirectory with +, @, _ and -", (a) => (a.keyDirectory = "/srv/cache_keys/k+1@stage-a")],
    ["keyDirectory /tmpfiles (not /tmp)", (a) => (a.keyDirectory = "/tmpfiles/keys")],
    ["priority 0", (a) => (a.priority = 0)],
  ];
  for (const [title, mutate] of GOOD) {
    it(`accepts ${title}`, () => {
      const args = good();
      mutate(args);
      assert.doesNotThrow(() => validateArgs(toModel(args)));
    });
  }
});

describe("isValidHost", () => {
  it("classifies names and addresses", () => {
    for (const h of [
      "stage.test",
      "a-b.c",
      "10.0.0.1",
      "::1",
      "[::1]",
      "fd00::2",
      "xn--bcher-kva.example",
    ]) {
      assert.equal(isValidHost(h), true, h);
    }
    for (const h of ["", "a b", "a_b.test", "1.2.3.4.5", "[stage.test]", "a.-b", "host:22", "."]) {
      assert.equal(isValidHost(h), false, h);
    }
  });
});

describe("validateFetchArgs (ClosureFetch)", () => {
  const host = {
    connection: { host: "web.example.com", privateKey: FAKE_PRIVATE_KEY, hostKey: HOST_KEY },
  };
  const PATH = "/nix/store/0c9ww7s3yrqgi2pd9rwqj0k0lg26x1n1-nixos-system-web";

  it("accepts store paths and derivations", () => {
    validateFetchArgs({ host, paths: [PATH, `${PATH}.drv`], fallback: false });
  });

  it("names the host and field of every bad path", () => {
    assert.throws(
      () =>
        validateFetchArgs({
          host,
          paths: [PATH, "/tmp/x", "nixos-system"],
          fallback: "yes" as never,
        }),
      (e: Error) => {
        assert.match(
          e.message,
          /paths\[1\] \("\/tmp\/x", production host "web\.example\.com"\): must be a \/nix\/store path/,
        );
        assert.match(e.message, /paths\[2\] \("nixos-system"/);
        assert.match(e.message, /fallback \("yes"/);
        assert.doesNotMatch(e.message, /paths\[0\]/);
        return true;
      },
    );
  });

  it("needs at least one path", () => {
    assert.throws(
      () => validateFetchArgs({ host, paths: [] }),
      /paths \(\[\], production host "web\.example\.com"\): needs at least one store path/,
    );
  });
});

describe("host keys: hostKey, else the operator's known_hosts (nothing unverified is reached)", () => {
  const home = process.env.HOME as string;
  const knownHosts = join(home, ".ssh", "known_hosts");
  const bare = (host: string, port?: number) => ({ host, port, privateKey: FAKE_PRIVATE_KEY });
  const args = (staging: PlainConnection, production: PlainConnection[]): PlainNixSshCacheArgs => ({
    staging: { connection: staging },
    production: production.map((connection) => ({ connection })),
  });
  before(() => mkdirSync(join(home, ".ssh"), { recursive: true }));
  after(() => rmSync(knownHosts, { force: true }));

  it("a host with neither is refused, naming the field, the host and ssh-keyscan", () => {
    rmSync(knownHosts, { force: true });
    const problems = problemsOfModel(
      args({ ...bare("stage.test"), hostKey: HOST_KEY, proxy: bare("jump.test", 2200) }, [
        bare("prod1.test", 2222),
      ]),
    );
    assert.equal(problems.length, 2, problems.join("\n"));
    assert.match(
      problems[0],
      /^staging\.connection\.proxy\.hostKey \(host "jump\.test", port 2200\): no hostKey given and no key for \[jump\.test\]:2200 in /,
    );
    assert.ok(problems[0].includes("`ssh-keyscan -p 2200 -t ed25519 jump.test`"), problems[0]);
    assert.match(
      problems[1],
      /^production\[0\]\.connection\.hostKey \(host "prod1\.test", port 2222\)/,
    );
    assert.ok(
      problems[1].includes("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"),
      problems[1],
    );
  });

  it("a key in known_hosts (plain, hashed, [host]:port) verifies a host and is pinned at resolution", () => {
    writeFileSync(
      knownHosts,
      [`[jump.test]:2200 ${ED25519_KEY}`, `prod1.test,prod2.test ${HOST_KEY}`, ""].join("\n"),
    );
    validateArgs(
      args({ ...bare("stage.test"), hostKey: HOST_KEY, proxy: bare("jump.test", 2200) }, [
        bare("prod1.test"),
      ]),
    );
    const c = toConnection({
      ...bare("stage.test"),
      hostKey: HOST_KEY,
      proxy: bare("jump.test", 2200),
    });
    assert.equal(c.hostKey, HOST_KEY);
    assert.equal(c.hostKeySource, undefined, "a given hostKey needs no source");
    assert.equal(c.proxy?.hostKey, ED25519_KEY.split(" ").slice(0, 2).join(" "));
    assert.equal(c.proxy?.hostKeySource, knownHosts);
    assert.equal(
      toConnection(bare("prod2.test")).hostKey,
      HOST_KEY.split(" ").slice(0, 2).join(" "),
    );
  });

  it("a hostKey marked @revoked in known_hosts is refused", () => {
    writeFileSync(knownHosts, `@revoked * ${HOST_KEY}\n`);
    const problems = problemsOfModel(
      args({ ...bare("stage.test"), hostKey: HOST_KEY }, [
        { ...bare("prod1.test"), hostKey: ED25519_KEY },
      ]),
    );
    assert.equal(problems.length, 1, problems.join("\n"));
    assert.match(
      problems[0],
      /^staging\.connection\.hostKey \(host "stage\.test"\): its hostKey SHA256:\S+ \(ED25519\) is marked @revoked at .*known_hosts:1/,
    );
  });

  it("a host or key not known yet (an Output in a preview) is checked once known", () => {
    rmSync(knownHosts, { force: true });
    validateArgs(args({ ...bare("stage.test"), hostKey: LATER }, [{ ...bare("x"), host: LATER }]));
  });
});

/** The problems validateArgs reports for arguments in the host model. */
function problemsOfModel(a: PlainNixSshCacheArgs): readonly string[] {
  try {
    validateArgs(a);
  } catch (e) {
    assert.ok(e instanceof NixSshCacheInputError, `unexpected error type: ${e}`);
    return e.problems;
  }
  assert.fail("validateArgs accepted it");
}
