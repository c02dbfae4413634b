/**
 * Reliability, item 1: bad input. The example stack (repo root Pulumi.yaml + index.ts), one
 * stack re-configured per case; every case must be rejected by `pulumi preview` with a message
 * naming the field and the host, before anything runs on any host: no SSH login reaches a host
 * (sshd logs) and every host's /etc, /root and /nix/var/nix are unchanged.
 * One case (a login user without sudo) can only be detected on the host: `pulumi up` must fail
 * naming the host and "sudo", and change nothing.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import {
  acceptedLogins,
  e2eSkipReason,
  startHosts,
  TestHost,
  TestHosts,
} from "../../hosts/harness";
import { pulumiSkipReason, PulumiStack } from "../pulumi";
import {
  exampleStack,
  hostConfig,
  PROJECT,
  snapshot,
  snapshotDiff,
  TEST_TIMEOUT_MS,
  unsetConfig,
} from "./common";
import { excerpt, reliabilityCase } from "./record";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const ITEM = "bad input";

type Config = Record<string, unknown> & {
  staging: Record<string, unknown>;
  production: Record<string, unknown>[];
};

interface BadCase {
  /** What is wrong, e.g. `production[0].port = 0`. */
  name: string;
  /** Changes a copy of the valid config. */
  mutate: (c: Config, hosts: { stage: TestHost; prods: TestHost[] }) => void;
  /** Secret sshKey for this case instead of the runner's key. */
  sshKey?: string;
  /** Texts the error must contain: the field path and the host. */
  field: string;
  host: (hosts: { stage: TestHost; prods: TestHost[] }) => string;
}

const stagingHost = (h: { stage: TestHost }) => `"${h.stage.address}"`;
const prodHost = (i: number) => (h: { prods: TestHost[] }) => `"${h.prods[i].address}"`;

const GARBAGE_KEY_BODY = `-----BEGIN OPENSSH PRIVATE KEY-----\n${"A".repeat(70)}\n${"QUJD".repeat(17)}\n-----END OPENSSH PRIVATE KEY-----\n`;

const CASES: BadCase[] = [
  {
    name: 'staging.host = "bad host!"',
    mutate: (c) => (c.staging.host = "bad host!"),
    field: "staging.connection.host",
    host: () => '"bad host!"',
  },
  {
    name: 'production[0].host = "256.1.1.1"',
    mutate: (c) => (c.production[0].host = "256.1.1.1"),
    field: "production[0].connection.host",
    host: () => '"256.1.1.1"',
  },
  {
    name: 'production[1].host = "-prod.test" (label starts with -)',
    mutate: (c) => (c.production[1].host = "-prod.test"),
    field: "production[1].connection.host",
    host: () => '"-prod.test"',
  },
  {
    name: "staging.port = 0",
    mutate: (c) => (c.staging.port = 0),
    field: "staging.connection.port",
    host: stagingHost,
  },
  {
    name: "production[0].port = 70000",
    mutate: (c) => (c.production[0].port = 70000),
    field: "production[0].connection.port",
    host: prodHost(0),
  },
  {
    name: "production[1].port = 22.5",
    mutate: (c) => (c.production[1].port = 22.5),
    field: "production[1].connection.port",
    host: prodHost(1),
  },
  {
    name: 'keyName = "stage:1" (colon)',
    mutate: (c) => (c.keyName = "stage:1"),
    field: "keyName",
    host: stagingHost,
  },
  {
    name: 'keyName = "stage 1" (whitespace)',
    mutate: (c) => (c.keyName = "stage 1"),
    field: "keyName",
    host: stagingHost,
  },
  {
    name: 'keyName = " " (blank; "" means the default in the example stack)',
    mutate: (c) => (c.keyName = " "),
    field: "keyName",
    host: stagingHost,
  },
  {
    name: 'keyDirectory = "etc/shipnix/binary" (relative)',
    mutate: (c) => (c.keyDirectory = "etc/shipnix/binary"),
    field: "keyDirectory",
    host: stagingHost,
  },
  {
    name: 'keyDirectory = "/etc/../tmp/keys" (..)',
    mutate: (c) => (c.keyDirectory = "/etc/../tmp/keys"),
    field: "keyDirectory",
    host: stagingHost,
  },
  {
    name: 'fragmentPath = "nixos/nix-ssh-cache.nix" (relative)',
    mutate: (c) => (c.fragmentPath = "nixos/nix-ssh-cache.nix"),
    field: "fragmentPath",
    host: stagingHost,
  },
  {
    name: 'fragmentPath = "/etc/nixos/../../tmp/x.nix" (..)',
    mutate: (c) => (c.fragmentPath = "/etc/nixos/../../tmp/x.nix"),
    field: "fragmentPath",
    host: stagingHost,
  },
  {
    name: "production = [] (empty)",
    mutate: (c) => (c.production = []),
    field: "production",
    host: stagingHost,
  },
  {
    name: "production lists prod1 twice (other name)",
    mutate: (c) => c.production.push({ ...c.production[0], name: "again" }),
    field: "production[2].connection.host",
    host: prodHost(0),
  },
  {
    name: "staging listed as production",
    mutate: (c, h) =>
      c.production.push({ host: h.stage.address, hostKey: h.stage.hostKey, name: "stage-too" }),
    field: "production[2].connection.host",
    host: stagingHost,
  },
  {
    name: "staging.hostKey malformed (not base64)",
    mutate: (c) => (c.staging.hostKey = "ssh-ed25519 not*base64!"),
    field: "staging.connection.hostKey",
    host: stagingHost,
  },
  {
    name: "production[0].hostKey truncated",
    mutate: (c) => (c.production[0].hostKey = String(c.production[0].hostKey).slice(0, 40)),
    field: "production[0].connection.hostKey",
    host: prodHost(0),
  },
  {
    name: "production[1].hostKey unknown key type",
    mutate: (c) =>
      (c.production[1].hostKey = String(c.production[1].hostKey).replace("ssh-ed25519", "ssh-foo")),
    field: "production[1].connection.hostKey",
    host: prodHost(1),
  },
  {
    name: 'protocol = "http"',
    mutate: (c) => (c.protocol = "http"),
    field: "protocol",
    host: stagingHost,
  },
  {
    name: 'rebuild = "reboot"',
    mutate: (c) => (c.rebuild = "reboot"),
    field: "rebuild",
    host: stagingHost,
  },
  {
    name: 'fragments = "s3"',
    mutate: (c) => (c.fragments = "s3"),
    field: "fragments",
    host: stagingHost,
  },
  {
    name: 'staging.become = "su"',
    mutate: (c) => (c.staging.become = "su"),
    field: "staging.become",
    host: stagingHost,
  },
  {
    name: 'production[0].user = "Bad User"',
    mutate: (c) => (c.production[0].user = "Bad User"),
    field: "production[0].connection.user",
    host: prodHost(0),
  },
  {
    name: "sshKey = garbage text (not a key)",
    mutate: () => undefined,
    sshKey: "this is not a private key\n",
    field: "staging.connection.privateKey",
    host: stagingHost,
  },
  {
    name: "sshKey = key block with garbage inside (unreadable)",
    mutate: () => undefined,
    sshKey: GARBAGE_KEY_BODY,
    field: "production[1].connection.privateKey",
    host: prodHost(1),
  },
];

/** Extra top-level config keys a case may set (removed before the next case). */
const EXTRA_KEYS = ["keyName", "keyDirectory", "fragmentPath", "protocol", "rebuild", "fragments"];

/** Accepted public-key logins so far on `h`, all users. */
function totalLogins(h: TestHost): number {
  return Object.values(acceptedLogins(h)).reduce((a, b) => a + b, 0);
}

describe("reliability: bad input is rejected before anything runs on a host", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prods: TestHost[];
  let all: TestHost[];
  const snapshotsBefore = new Map<string, string>();

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }, { name: "prod2" }]);
    stage = hosts.byName("stage");
    prods = [hosts.byName("prod1"), hosts.byName("prod2")];
    all = [stage, ...prods];
    // A login without sudo rights, for the one case only the host can detect.
    await stage.exec(
      "useradd -m -s /bin/bash nosudo && usermod -p '*' nosudo && install -d -m 0700 -o nosudo -g nosudo /home/nosudo/.ssh && " +
        "install -m 0600 -o nosudo -g nosudo /root/.ssh/authorized_keys /home/nosudo/.ssh/authorized_keys",
    );
    stack = await exampleStack("badinput", stage.privateKey, hostConfig(stage, prods));
    for (const h of all) snapshotsBefore.set(h.name, await snapshot(h));
  });

  after(async () => {
    await stack?.dispose();
    await hosts?.teardown();
  });

  it(
    `${CASES.length} invalid configurations: pulumi preview fails naming field and host`,
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const loginsBefore = all.map(totalLogins);
      const failures: string[] = [];
      let previousExtras: string[] = [];
      for (const c of CASES) {
        const config = structuredClone(hostConfig(stage, prods)) as Config;
        c.mutate(config, { stage, prods });
        const host = c.host({ stage, prods });
        await unsetConfig(stack, previousExtras);
        previousExtras = EXTRA_KEYS.filter((k) => k in config);
        await stack.setConfigObjects(config, PROJECT);
        if (c.sshKey) await stack.setConfig("sshKey", c.sshKey, { secret: true });
        try {
          await reliabilityCase(
            ITEM,
            c.name,
            `preview fails; message names ${c.field} and ${host}`,
            async () => {
              const r = await stack.preview();
              assert.notEqual(r.code, 0, `preview accepted ${c.name}:\n${r.output.slice(-3000)}`);
              const line = r.output
                .split("\n")
                .find((l) => l.includes(`${c.field} (`) && l.includes(host));
              assert.ok(
                line,
                `no line naming ${c.field} and ${host} in:\n${r.output.slice(-3000)}`,
              );
              return excerpt(line.replace(/^\s*-\s*/, ""));
            },
          );
        } catch (e) {
          failures.push(`${c.name}: ${(e as Error).message.slice(0, 600)}`);
        } finally {
          if (c.sshKey) await stack.setConfig("sshKey", stage.privateKey, { secret: true });
        }
      }
      await unsetConfig(stack, previousExtras);
      const loginsAfter = all.map(totalLogins);
      await reliabilityCase(
        ITEM,
        "no SSH login during the preview cases",
        "no new 'Accepted publickey' in any host's sshd log",
        async () => {
          assert.deepEqual(loginsAfter, loginsBefore, "a preview logged in to a host");
          return `accepted logins per host before/after: ${loginsBefore.join(",")} / ${loginsAfter.join(",")}`;
        },
      );
      assert.deepEqual(failures, []);
    },
  );

  it(
    "a login user that cannot sudo: up fails naming the host and sudo, nothing changes",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const config = hostConfig(stage, prods) as Config;
      config.staging = { ...config.staging, user: "nosudo" };
      await stack.setConfigObjects(config, PROJECT);
      await reliabilityCase(
        ITEM,
        'staging.user = "nosudo" (no sudo rights; detected on the host by pulumi up)',
        `up fails; message names nosudo@<staging> and "sudo"`,
        async () => {
          const r = await stack.up();
          assert.notEqual(r.code, 0, r.output.slice(-3000));
          const line = r.output
            .split("\n")
            .find(
              (l) => l.includes(`nosudo@${stage.address}`) && /sudo/.test(l.split("nosudo@")[1]),
            );
          assert.ok(
            line,
            `no message naming nosudo@${stage.address} and sudo:\n${r.output.slice(-3000)}`,
          );
          return excerpt(line.trim());
        },
      );
    },
  );

  it(
    "every host's /etc, /root and /nix/var/nix are unchanged after all cases",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      for (const h of all) {
        await reliabilityCase(
          ITEM,
          `${h.fqdn} unchanged (/etc, /root, /nix/var/nix)`,
          "same paths, sizes, modes, owners and mtimes as before the first case",
          async () => {
            const now = await snapshot(h);
            const was = snapshotsBefore.get(h.name)!;
            assert.equal(now === was, true, `${h.name} changed:\n${snapshotDiff(was, now)}`);
            return `${now.split("\n").length - 1} paths, identical`;
          },
        );
      }
    },
  );
});
