/**
 * Trust anchors in the HostStep provider, and host-key verification in the transport, against
 * an in-process SSH server (ssh2's `Server`, only wiring: it answers each script with the JSON a
 * test chooses): a refresh that sees another anchor fails naming both values, a new host key of
 * the connection lets an apply take a new one, the verified key must be one the host reports;
 * a host is never reached without a key to verify, from `hostKey` or the operator's known_hosts.
 */
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { createHmac, randomBytes } from "node:crypto";
import { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Server, utils as sshUtils } from "ssh2";
import { encodeSpec, HostStepOutputs, hostStepProvider, StepSpec } from "../../components/hostStep";
import { fingerprint } from "../../components/knownHosts";
import { closeSshConnections, Connection, runScript } from "../../components/ssh";
import { ED25519_KEY } from "./fixtures";

/** A fake host: an SSH server that accepts any login and answers every script with `reply`. */
interface FakeHost {
  port: number;
  /** Its host key line, `ssh-ed25519 AAAA…`. */
  hostKey: string;
  /** The JSON object the next scripts print, by `ACTION`. */
  reply: (action: string) => Record<string, unknown>;
  /** The scripts it was sent, in order. */
  scripts: string[];
  /** TCP connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

async function fakeHost(): Promise<FakeHost> {
  const keys = sshUtils.generateKeyPairSync("ed25519");
  const host: FakeHost = {
    port: 0,
    hostKey: keys.public.split(" ").slice(0, 2).join(" "),
    reply: () => ({}),
    scripts: [],
    connections: 0,
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
  const server = new Server({ hostKeys: [keys.private] }, (client) => {
    client.on("authentication", (ctx) => ctx.accept());
    client.on("error", () => undefined);
    client.on("session", (accept) => {
      accept().on("exec", (acceptExec) => {
        const stream = acceptExec();
        let script = "";
        stream.on("data", (d: Buffer) => (script += d.toString()));
        stream.on("end", () => {
          host.scripts.push(script);
          const action = /export ACTION='(\w+)'/.exec(script)?.[1] ?? "";
          stream.write(JSON.stringify(host.reply(action)) + "\n");
          stream.exit(0);
          stream.end();
        });
      });
    });
  });
  server.on("connection", () => host.connections++);
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", () => listening()));
  host.port = (server.address() as AddressInfo).port;
  return host;
}

const OTHER_HOST_KEY = ED25519_KEY.split(" ").slice(0, 2).join(" ");

const SIGNING: StepSpec = {
  name: "cache-staging-signing-key",
  step: "signing key",
  script: "0000000000000000",
  readable: true,
  removable: true,
  removeEnv: { REMOVE_KEY: "0" },
  driftKeys: ["publicKey"],
  anchorKeys: ["publicKey"],
  timeoutSeconds: 30,
};

const PROBE: StepSpec = {
  name: "cache-staging-probe",
  step: "probe",
  script: "1111111111111111",
  readable: true,
  removable: false,
  removeEnv: {},
  driftKeys: ["hostKey", "os"],
  anchorKeys: ["hostKey"],
  hostKeysKey: "hostKeys",
  timeoutSeconds: 30,
};

const CACHE_KEY = "stage.test:8J2gmn5wRQo3DDNC2bqlsUU+Klc9lSNFZ+Um7DAbrIA=";
const OTHER_CACHE_KEY = "stage.test:Xe2Ke6bMnDk2JGnJW/Ef21Se2gBnPubbL7cuqSs7jyQ=";

describe("HostStep trust anchors (a fake host over SSH)", () => {
  let fake: FakeHost;
  let connection: Connection;
  const state = (
    spec: StepSpec,
    result: Record<string, unknown>,
    over: Partial<HostStepOutputs> = {},
  ): HostStepOutputs => ({
    connection,
    spec: encodeSpec(spec),
    script: "true",
    env: { KEY_DIR: "/etc/nix-ssh-cache" },
    result,
    drifted: false,
    ...over,
  });
  const read = (s: HostStepOutputs) => hostStepProvider.read!(SIGNING.name, s);
  const update = (olds: HostStepOutputs, news: HostStepOutputs) =>
    hostStepProvider.update!(SIGNING.name, olds, news);

  before(async () => {
    fake = await fakeHost();
    connection = {
      host: "127.0.0.1",
      port: fake.port,
      user: "root",
      password: "x",
      hostKey: fake.hostKey,
      become: "none",
    };
  });
  beforeEach(() => closeSshConnections());
  after(async () => {
    closeSshConnections();
    await fake.close();
  });

  it("a refresh that sees the same cache key is no drift", async () => {
    fake.reply = () => ({ publicKey: CACHE_KEY });
    const r = await read(state(SIGNING, { publicKey: CACHE_KEY }));
    assert.equal(r.props!.drifted, false);
  });

  it("a refresh that sees another cache key fails naming both keys and the rotation", async () => {
    fake.reply = () => ({ publicKey: OTHER_CACHE_KEY });
    await assert.rejects(read(state(SIGNING, { publicKey: CACHE_KEY })), (e: Error) => {
      assert.match(e.message, /trust anchor publicKey changed on the host \(seen by refresh\)/);
      assert.ok(e.message.includes(`was ${CACHE_KEY}, now ${OTHER_CACHE_KEY}`), e.message);
      assert.match(e.message, /previousGenerations/);
      assert.match(e.message, /root@127\.0\.0\.1:\d+: signing key \(cache-staging-signing-key\)/);
      return true;
    });
  });

  it("a refresh that sees the key gone marks drift (the next apply makes one)", async () => {
    fake.reply = () => ({ publicKey: null });
    const r = await read(state(SIGNING, { publicKey: CACHE_KEY }));
    assert.equal(r.props!.drifted, true);
    assert.equal(r.props!.result.publicKey, null);
  });

  it("an apply after drift that finds another key fails; after a refresh saw it gone, it takes it", async () => {
    fake.reply = () => ({ publicKey: OTHER_CACHE_KEY });
    const drifted = state(SIGNING, { publicKey: CACHE_KEY }, { drifted: true });
    await assert.rejects(
      update(drifted, state(SIGNING, {})),
      /trust anchor publicKey changed on the host \(seen by apply\)/,
    );
    const gone = state(SIGNING, { publicKey: null }, { drifted: true });
    const r = await update(gone, state(SIGNING, {}));
    assert.equal(r.outs.result.publicKey, OTHER_CACHE_KEY);
  });

  it("an apply hands the script the anchor its state holds (NSC_PRIOR_PUBLICKEY); a refresh does not", async () => {
    fake.reply = () => ({ publicKey: CACHE_KEY });
    fake.scripts.length = 0;
    const olds = state(SIGNING, { publicKey: CACHE_KEY });
    await update(olds, state(SIGNING, {}, { env: { KEY_DIR: "/etc/other" } }));
    await read(olds);
    const applied = fake.scripts.find((s) => s.includes("export ACTION='apply'")) ?? "";
    const refreshed = fake.scripts.find((s) => s.includes("export ACTION='read'")) ?? "";
    assert.ok(applied.includes(`export NSC_PRIOR_PUBLICKEY='${CACHE_KEY}'`), applied);
    assert.ok(refreshed && !refreshed.includes("NSC_PRIOR_"), refreshed);
  });

  it("an apply after a change of the step's inputs takes another key", async () => {
    fake.reply = () => ({ publicKey: OTHER_CACHE_KEY });
    const olds = state(SIGNING, { publicKey: CACHE_KEY });
    const news = state(SIGNING, {}, { env: { KEY_DIR: "/etc/other" } });
    const r = await update(olds, news);
    assert.equal(r.outs.result.publicKey, OTHER_CACHE_KEY);
  });

  it("a refresh of the probe that sees another host key fails naming both fingerprints", async () => {
    fake.reply = () => ({ hostKey: OTHER_HOST_KEY, hostKeys: [fake.hostKey, OTHER_HOST_KEY] });
    await assert.rejects(read(state(PROBE, { hostKey: fake.hostKey, os: "linux" })), (e: Error) => {
      assert.ok(e.message.includes(`was ${fingerprint(fake.hostKey)}`), e.message);
      assert.ok(e.message.includes(`now ${fingerprint(OTHER_HOST_KEY)}`), e.message);
      assert.match(e.message, /SHA256:[A-Za-z0-9+/]{43} \(ED25519\)/);
      assert.match(e.message, /set the connection's hostKey/);
      return true;
    });
  });

  it("the probe fails when the key the connection verified is not one of the host's own", async () => {
    fake.reply = () => ({ hostKey: OTHER_HOST_KEY, hostKeys: [OTHER_HOST_KEY] });
    await assert.rejects(hostStepProvider.create!(state(PROBE, {})), (e: Error) =>
      e.message.includes(
        `the host key the connection verified, ${fingerprint(fake.hostKey)} (from hostKey), is not one of the host's own keys (${fingerprint(OTHER_HOST_KEY)}`,
      ),
    );
  });

  it("a new hostKey of the connection (a reinstalled host) lets up re-read and take the new host key", async () => {
    fake.reply = () => ({ hostKey: fake.hostKey, hostKeys: [fake.hostKey], os: "linux" });
    const olds = state(
      PROBE,
      { hostKey: OTHER_HOST_KEY, os: "linux" },
      { connection: { ...connection, hostKey: OTHER_HOST_KEY } },
    );
    const diff = await hostStepProvider.diff!(PROBE.name, olds, state(PROBE, {}));
    assert.equal(diff.changes, true);
    const r = await update(olds, state(PROBE, {}));
    assert.equal(r.outs.result.hostKey, fake.hostKey);
  });
});

describe("the transport verifies every host key (a fake host over SSH)", () => {
  let fake: FakeHost;
  let home: string;
  const savedHome = process.env.HOME;
  const base = (): Connection => ({
    host: "127.0.0.1",
    port: fake.port,
    user: "root",
    password: "x",
    become: "none",
  });

  before(async () => {
    fake = await fakeHost();
    fake.reply = () => ({ ok: true });
    home = mkdtempSync(join(tmpdir(), "nsc-home-"));
    mkdirSync(join(home, ".ssh"));
    process.env.HOME = home;
  });
  beforeEach(() => {
    closeSshConnections();
    rmSync(join(home, ".ssh", "known_hosts"), { force: true });
  });
  after(async () => {
    closeSshConnections();
    process.env.HOME = savedHome;
    rmSync(home, { recursive: true, force: true });
    await fake.close();
  });

  /** A hashed known_hosts line for the fake host, as `ssh-keygen -H` writes it. */
  function hashedLine(key: string): string {
    const salt = randomBytes(20);
    const mac = createHmac("sha1", salt).update(`[127.0.0.1]:${fake.port}`).digest("base64");
    return `|1|${salt.toString("base64")}|${mac} ${key}`;
  }

  it("without hostKey and without a known_hosts entry, the host is not even dialled", async () => {
    const before = fake.connections;
    await assert.rejects(runScript(base(), "true", { reuse: false }), (e: Error) => {
      assert.match(
        e.message,
        new RegExp(
          `no hostKey given and no key for \\[127\\.0\\.0\\.1\\]:${fake.port} in ${home}/\\.ssh/known_hosts`,
        ),
      );
      assert.ok(e.message.includes(`ssh-keyscan -p ${fake.port} -t ed25519 127.0.0.1`), e.message);
      assert.match(e.message, /ssh-keygen -lf \/etc\/ssh\/ssh_host_ed25519_key\.pub/);
      return true;
    });
    assert.equal(fake.connections, before);
  });

  it("a wrong hostKey is refused naming both fingerprints and the source", async () => {
    await assert.rejects(
      runScript({ ...base(), hostKey: OTHER_HOST_KEY }, "true", { reuse: false }),
      (e: Error) => {
        assert.ok(
          e.message.includes(
            `does not match the pinned hostKey: expected ${fingerprint(OTHER_HOST_KEY)}, got ${fingerprint(fake.hostKey)}`,
          ),
          e.message,
        );
        return true;
      },
    );
  });

  it("the host's hashed known_hosts entry verifies it; another key there is refused naming the file and line", async () => {
    const file = join(home, ".ssh", "known_hosts");
    writeFileSync(file, `# mine\n${hashedLine(fake.hostKey)}\n`);
    const ok = await runScript(base(), "true", { reuse: false });
    assert.equal(ok.code, 0);
    writeFileSync(file, `# mine\n${hashedLine(OTHER_HOST_KEY)}\n`);
    await assert.rejects(runScript(base(), "true", { reuse: false }), (e: Error) => {
      assert.ok(
        e.message.includes(
          `does not match the key pinned from ${file}:2: expected ${fingerprint(OTHER_HOST_KEY)}, got ${fingerprint(fake.hostKey)}`,
        ),
        e.message,
      );
      return true;
    });
  });

  it("a hostKey of a type the client cannot verify is refused before dialling", async () => {
    const before = fake.connections;
    await assert.rejects(
      runScript(
        {
          ...base(),
          hostKey: "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t",
        },
        "true",
        { reuse: false },
      ),
      /host key type sk-ssh-ed25519@openssh\.com \(from hostKey\) is not supported/,
    );
    assert.equal(fake.connections, before);
  });

  it("a hostKey marked @revoked in known_hosts is refused", async () => {
    writeFileSync(join(home, ".ssh", "known_hosts"), `@revoked * ${fake.hostKey}\n`);
    await assert.rejects(
      runScript({ ...base(), hostKey: fake.hostKey }, "true", { reuse: false }),
      /is marked @revoked at .*known_hosts:1/,
    );
  });
});
