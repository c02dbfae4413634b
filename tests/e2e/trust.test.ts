/**
 * Production's trust anchors come only from verified connections (issue 21, finding 3).
 *
 * The operator reaches staging at an address where a man in the middle sits: a TCP forwarder
 * (node `net`) that hands the connection to ANOTHER test host's sshd (`evil`), so whoever
 * connects meets evil's host key, evil's files and evil's signing key. Then:
 * - without `hostKey` and without a known_hosts entry, `up` fails before any step runs (the
 *   forwarder sees no connection), naming `staging.connection.hostKey` and `ssh-keyscan`;
 * - with the operator's known_hosts (a hashed entry for that address with staging's real key,
 *   in the HOME of the pulumi process) the man in the middle is refused, both fingerprints named;
 * - with the forwarder handing on to the real staging, known_hosts verifies it and `up` works;
 * - a signing key replaced by hand on staging fails `pulumi refresh` naming both keys, and
 *   production keeps trusting the old one.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { createHash, createHmac, randomBytes } from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { buildOnStaging, substitute } from "./helpers";
import { pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "nix-ssh-cache";
const first = Number(process.env.NSC_HOSTS_FIRST_ADDRESS || 2);
const KEY_DIR = "/etc/shipnix/binary";

/** `SHA256:…` of a key line, as `ssh-keygen -l` prints it. */
function sha256(key: string): string {
  const blob = Buffer.from(key.split(/\s+/)[1], "base64");
  return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

/** A TCP forwarder on `address:22` to one host's sshd at a time (`target`); counts connections. */
interface Forwarder {
  target: TestHost;
  connections: number;
  close(): Promise<void>;
}

async function forwarder(address: string, target: TestHost): Promise<Forwarder> {
  const sockets = new Set<net.Socket>();
  const f: Forwarder = {
    target,
    connections: 0,
    close: () =>
      new Promise<void>((done) => {
        for (const s of sockets) s.destroy();
        server.close(() => done());
      }),
  };
  const server = net.createServer((client) => {
    f.connections++;
    const upstream = net.connect({ host: f.target.address, port: 22 });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((listening, failed) => {
    server.once("error", failed);
    server.listen(22, address, () => listening());
  });
  return f;
}

/** The first line of `output` that holds `text` (for the test log). */
function messageLine(output: string, text: string): string {
  return (output.split("\n").find((l) => l.includes(text)) ?? "").trim();
}

/** A hashed known_hosts line for `name` (port 22), as `ssh-keygen -H` writes it. */
function hashedKnownHost(name: string, key: string): string {
  const salt = randomBytes(20);
  const mac = createHmac("sha1", salt).update(name).digest("base64");
  return `|1|${salt.toString("base64")}|${mac} ${key}`;
}

describe("trust anchors only over verified connections (a man in the middle)", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod: TestHost;
  let evil: TestHost;
  let mitm: Forwarder;
  let home: string;
  const mitmAddress = `127.0.0.${first + 25}`;

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }, { name: "evil" }]);
    [stage, prod, evil] = ["stage", "prod1", "evil"].map((n) => hosts.byName(n));
    mitm = await forwarder(mitmAddress, evil);
    home = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-operator-home-"));
    fs.mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
    stack = new PulumiStack(repoRoot, "trust");
    stack.env.HOME = home;
    await stack.init();
    await stack.setConfigObjects(
      {
        // The operator reaches staging at the forwarder's address; production at its name.
        staging: { host: mitmAddress, cacheHost: stage.fqdn },
        production: [{ host: prod.address, hostKey: prod.hostKey, name: "prod1" }],
      },
      PROJECT,
    );
    await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  });

  after(async () => {
    await stack?.dispose();
    await mitm?.close();
    await hosts?.teardown();
    if (home) fs.rmSync(home, { recursive: true, force: true });
  });

  it("no hostKey, no known_hosts entry: up fails before any step runs, with the ssh-keyscan hint", async (t) => {
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    assert.match(up.output, /staging\.connection\.hostKey \(host "127\.0\.0\.\d+"\)/);
    assert.ok(up.output.includes(`ssh-keyscan -p 22 -t ed25519 ${mitmAddress}`), up.output);
    assert.ok(up.output.includes(`${home}/.ssh/known_hosts`), up.output);
    t.diagnostic(messageLine(up.output, "staging.connection.hostKey"));
    assert.equal(mitm.connections, 0, "the operator connected to an unverified host");
    const state = await stack.exportState();
    assert.doesNotMatch(state, /HostStep/, "a step ran although the input was refused");
  });

  it("known_hosts names staging's real key: the man in the middle is refused, both fingerprints named", async (t) => {
    const knownHosts = path.join(home, ".ssh", "known_hosts");
    fs.writeFileSync(knownHosts, `${hashedKnownHost(mitmAddress, stage.hostKey)}\n`);
    const up = await stack.up();
    assert.notEqual(up.code, 0, up.output);
    t.diagnostic(messageLine(up.output, "does not match"));
    assert.ok(mitm.connections > 0, "the forwarder was not reached");
    assert.ok(
      up.output.includes(
        `does not match the key pinned from ${knownHosts}:1: expected ${sha256(stage.hostKey)} (ED25519), got ${sha256(evil.hostKey)} (ED25519)`,
      ),
      up.output,
    );
    // Nothing of the cache was made on the impostor, nor taken from it.
    const impostor = await evil.exec(`ls ${KEY_DIR} /etc/ssh/sshd_config.d 2>&1 || true`);
    assert.doesNotMatch(impostor.stdout, /cache-priv-key|nix-ssh-cache/);
    assert.doesNotMatch(
      await stack.exportState(true),
      new RegExp(evil.hostKey.split(" ")[1].replace(/[+/]/g, "\\$&")),
    );
  });

  it("the real staging behind the same address is verified by known_hosts, and up works", async () => {
    mitm.target = stage;
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const out = await stack.outputs();
    assert.equal(out.stagingHostKey, stage.hostKey);
    const sigs = await substitute(prod, await buildOnStaging(stage, "trust"));
    assert.ok(
      sigs.some((s) => s.startsWith("stage.test:")),
      `not signed by staging: ${sigs}`,
    );
    // The key verified is pinned in the state, with where it came from.
    const state = await stack.exportState(true);
    // (inside the connection, a secret: JSON in a string, its quotes escaped)
    const pinned = /hostKeySource\\*":\\*"([^"\\]+)/.exec(state);
    assert.equal(
      pinned?.[1],
      path.join(home, ".ssh", "known_hosts"),
      "no hostKeySource in the state",
    );
  });

  it("a signing key replaced by hand on staging fails refresh, naming both; production keeps the old one", async (t) => {
    const before = String((await stack.outputs()).cachePublicKey);
    const trusted = (await prod.exec("cat /etc/nix/nix-ssh-cache.conf")).stdout;
    assert.ok(trusted.includes(before), trusted);
    const saved = await stage.exec(
      `cat ${KEY_DIR}/cache-priv-key.pem; echo; cat ${KEY_DIR}/cache-pub-key.pem`,
    );
    await stage.exec(
      `cd ${KEY_DIR} && nix-store --generate-binary-cache-key stage.test cache-priv-key.pem.x cache-pub-key.pem.x && mv -f cache-priv-key.pem.x cache-priv-key.pem && mv -f cache-pub-key.pem.x cache-pub-key.pem`,
    );
    const planted = (await stage.exec(`cat ${KEY_DIR}/cache-pub-key.pem`)).stdout.trim();
    assert.notEqual(planted, before);
    for (const args of [
      ["refresh", "--yes", "--skip-preview"],
      ["up", "--yes", "--skip-preview", "--refresh"],
    ]) {
      const r = await stack.run(args);
      assert.notEqual(r.code, 0, `${args.join(" ")} accepted a replaced signing key:\n${r.output}`);
      assert.ok(r.output.includes(`was ${before}, now ${planted}`), r.output);
      assert.match(r.output, /trust anchor publicKey changed on the host/);
      t.diagnostic(messageLine(r.output, "trust anchor"));
    }
    assert.equal(String((await stack.outputs()).cachePublicKey), before);
    assert.equal((await prod.exec("cat /etc/nix/nix-ssh-cache.conf")).stdout, trusted);
    // Restored, the refresh passes again.
    const [priv, pub] = saved.stdout.split("\n");
    await stage.exec(
      `printf '%s' '${priv}' > ${KEY_DIR}/cache-priv-key.pem; printf '%s' '${pub}' > ${KEY_DIR}/cache-pub-key.pem`,
    );
    const again = await stack.run(["refresh", "--yes", "--skip-preview"]);
    assert.equal(again.code, 0, again.output);
  });

  it("staging's host key file replaced by hand (sshd unchanged) fails refresh naming both fingerprints", async (t) => {
    const pub = "/etc/ssh/ssh_host_ed25519_key.pub";
    const saved = (await stage.exec(`cat ${pub}`)).stdout;
    const other = evil.hostKey;
    await stage.exec(`printf '%s root@elsewhere\\n' '${other}' > ${pub}`);
    try {
      const r = await stack.run(["refresh", "--yes", "--skip-preview"]);
      assert.notEqual(r.code, 0, `refresh accepted a replaced host key:\n${r.output}`);
      assert.ok(r.output.includes(`was ${sha256(stage.hostKey)} (ED25519)`), r.output);
      assert.ok(r.output.includes(`now ${sha256(other)} (ED25519)`), r.output);
      t.diagnostic(messageLine(r.output, "trust anchor"));
      assert.equal((await stack.outputs()).stagingHostKey, stage.hostKey);
      const pinned = (await prod.exec("cat /etc/ssh/nix-ssh-cache/known_hosts")).stdout;
      assert.ok(pinned.includes(stage.hostKey.split(" ")[1]), pinned);
    } finally {
      await stage.exec(`cat > ${pub}`, { input: saved });
    }
    const again = await stack.run(["refresh", "--yes", "--skip-preview"]);
    assert.equal(again.code, 0, again.output);
  });
});
