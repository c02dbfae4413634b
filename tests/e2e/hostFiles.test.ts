/**
 * What root writes on a host, against a local user of that host (issue 21, findings 6 and 9, and
 * `file.sh read`): the step lock lives in a root-only directory, so a user can neither hold it
 * nor plant a symlink root opens; the signing key's directory must be one only root can change,
 * is never re-moded or re-owned when it existed, and a private key nix-ssh-cache did not generate
 * is reported, not adopted; a refresh of a managed file (a dedicated client's private key) reads
 * its digest, never its content. Step scripts run as the component runs them (lib.sh + step, as
 * root); the last case runs the real engine.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { execFileSync } from "child_process";
import { e2eSkipReason, ExecResult, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";
import { hostOutput as out, lastJson, runHostStep as step, runWithLib as lib } from "./helpers";

const skip = e2eSkipReason();

/** Runs `cmd` as user nobody inside the host. */
function asNobody(h: TestHost, cmd: string): Promise<ExecResult> {
  return h.exec(`su nobody -s /bin/sh -c ${shellQuote(cmd)}`);
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** signing-key.sh apply in `dir`. */
function signingKey(h: TestHost, dir: string, extra: Record<string, string> = {}) {
  return step(h, "signing-key", {
    ACTION: "apply",
    KEY_DIR: dir,
    KEY_NAME: "stage.test",
    ...extra,
  });
}

/** A file step that takes the `file` lock. */
function writeFile(h: TestHost, file: string, content: string): Promise<ExecResult> {
  return step(h, "file", { ACTION: "apply", FILE_PATH: file, FILE_CONTENT: content });
}

describe("root's files on a host with local users", { skip }, () => {
  let hosts: TestHosts;
  let h: TestHost;

  before(async () => {
    hosts = await startHosts([{ name: "stage" }]);
    h = hosts.byName("stage");
    // As on Debian and most distributions: /run/lock is world-writable and sticky.
    await h.exec("install -d -m 1777 /run/lock");
  });

  after(async () => {
    await hosts?.teardown();
  });

  it("a lock held by another user in /run/lock does not block a step (finding 6)", async () => {
    const holder = await h.exec(
      `setsid su nobody -s /bin/sh -c 'exec flock /run/lock/nix-ssh-cache-file.lock sleep 300' </dev/null >/dev/null 2>&1 & echo $!`,
    );
    const pgid = holder.stdout.trim();
    assert.match(pgid, /^\d+$/);
    try {
      // the user really holds it (checked as that user: root may not open its file there)
      let held = false;
      for (let i = 0; i < 100 && !held; i++) {
        const probe = await h.exec(
          `su nobody -s /bin/sh -c 'flock -n /run/lock/nix-ssh-cache-file.lock true'`,
          { check: false },
        );
        held = probe.code !== 0;
        if (!held) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(held, "nobody holds /run/lock/nix-ssh-cache-file.lock");
      const t0 = Date.now();
      const r = await writeFile(h, "/etc/nsc-lock-test.conf", "a\n");
      const ms = Date.now() - t0;
      assert.equal(r.code, 0, r.stderr);
      assert.ok(ms < 60_000, `the step waited ${ms} ms`);
      assert.equal(
        await out(h, "stat -c '%a %U:%G %F' /run/nix-ssh-cache"),
        "700 root:root directory",
      );
    } finally {
      await h.exec(`kill -- -${pgid} 2>/dev/null || true`);
    }
  });

  it("a symlink planted at the old lock path is never followed (finding 6)", async () => {
    await h.exec("rm -f /run/lock/nix-ssh-cache-file.lock; printf 'precious\\n' > /etc/nsc-victim");
    await asNobody(h, "ln -s /etc/nsc-victim /run/lock/nix-ssh-cache-file.lock");
    const r = await writeFile(h, "/etc/nsc-lock-test.conf", "b\n");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await out(h, "cat /etc/nsc-victim"), "precious");
    assert.equal(await out(h, "cat /etc/nsc-lock-test.conf"), "b");
  });

  it("a lock directory another user could change is refused, naming it", async () => {
    await h.exec("chmod 0777 /run/nix-ssh-cache");
    const open = await writeFile(h, "/etc/nsc-lock-test.conf", "c\n");
    assert.notEqual(open.code, 0);
    assert.match(
      open.stderr,
      /nix-ssh-cache: the lock directory \/run\/nix-ssh-cache is not root-only: \/run\/nix-ssh-cache is writable by its group or by others \(mode 777\); remove \/run\/nix-ssh-cache/,
    );
    await h.exec(
      "rm -rf /run/nix-ssh-cache && install -d -m 0700 /var/lib/nsc-elsewhere && ln -s /var/lib/nsc-elsewhere /run/nix-ssh-cache",
    );
    const link = await lib(h, "nsc_lock x; echo locked");
    assert.notEqual(link.code, 0);
    assert.match(link.stderr, /\/run\/nix-ssh-cache is a symlink \(to \/var\/lib\/nsc-elsewhere\)/);
    await h.exec("rm -f /run/nix-ssh-cache");
    const again = await writeFile(h, "/etc/nsc-lock-test.conf", "c\n");
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await out(h, "cat /etc/nsc-lock-test.conf"), "c");
  });

  it("a nix-daemon restart rewrites its own pid file, never one a user planted in /run/lock", async () => {
    const pid = await out(h, "bash /run/nsc/host-services.sh nix-daemon-pid");
    assert.match(pid, /^\d+$/);
    await asNobody(h, `echo ${pid} > /run/lock/nix-daemon.pid`);
    const r = await lib(h, 'nsc_restart_nix_daemon\necho "{}"');
    assert.equal(r.code, 0, r.stderr);
    const pid2 = await out(h, "bash /run/nsc/host-services.sh nix-daemon-pid");
    assert.notEqual(pid2, pid);
    assert.equal(
      await out(h, "cat /run/nix-daemon.pid"),
      pid2,
      "the daemon's own pid file is updated",
    );
    assert.equal(
      await out(h, "stat -c '%U' /run/lock/nix-daemon.pid; cat /run/lock/nix-daemon.pid"),
      `nobody\n${pid}`,
    );
    assert.equal(
      await out(h, "ls -A /run/lock | grep -c nsc || true"),
      "0",
      "no temp file left there",
    );
  });

  it("keyDirectory: a directory a non-root user could change is refused, and nothing is changed (finding 9)", async () => {
    await h.exec(`set -e
      install -d -m 0777 /etc/nsc-ww
      install -d -m 0775 /etc/nsc-gw
      install -d -m 0755 -o nobody /etc/nsc-nobody
      install -d -m 0755 -o nobody /etc/nsc-userparent
      install -d -m 0755 /etc/nsc-real
      ln -s /etc/nsc-real /etc/nsc-link`);
    const cases: [string, RegExp][] = [
      ["/etc/nsc-ww", /\/etc\/nsc-ww is writable by its group or by others \(mode 777\)/],
      ["/etc/nsc-gw", /\/etc\/nsc-gw is writable by its group or by others \(mode 775\)/],
      ["/etc/nsc-nobody", /\/etc\/nsc-nobody is owned by nobody, not root/],
      ["/etc/nsc-userparent/keys", /\/etc\/nsc-userparent is owned by nobody, not root/],
      ["/etc/nsc-link", /\/etc\/nsc-link is a symlink \(to \/etc\/nsc-real\)/],
    ];
    for (const [dir, why] of cases) {
      const r = await signingKey(h, dir);
      assert.notEqual(r.code, 0, `${dir} accepted: ${r.stdout}`);
      assert.match(r.stderr, /nix-ssh-cache: keyDirectory \S+ cannot hold the cache signing key: /);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /never changes a directory it did not create/);
    }
    assert.equal(
      await out(
        h,
        "stat -c '%n %a %U' /etc/nsc-ww /etc/nsc-gw /etc/nsc-nobody /etc/nsc-userparent /etc/nsc-real",
      ),
      "/etc/nsc-ww 777 root\n/etc/nsc-gw 775 root\n/etc/nsc-nobody 755 nobody\n/etc/nsc-userparent 755 nobody\n/etc/nsc-real 755 root",
    );
    assert.equal(
      await out(
        h,
        "ls -A /etc/nsc-ww /etc/nsc-gw /etc/nsc-nobody /etc/nsc-userparent /etc/nsc-real",
      ),
      "/etc/nsc-gw:\n\n/etc/nsc-nobody:\n\n/etc/nsc-real:\n\n/etc/nsc-userparent:\n\n/etc/nsc-ww:",
    );
    const bad = await signingKey(h, "/etc/nsc#keys");
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /keyDirectory '\/etc\/nsc#keys' must be an absolute path of letters/);
  });

  it("keyDirectory: an existing root-only directory is used as it is, never re-moded or re-owned (finding 9)", async () => {
    await h.exec("install -d -m 0700 /etc/nsc-k700 && install -d -m 0750 -g nogroup /etc/nsc-k750");
    for (const [dir, attrs] of [
      ["/etc/nsc-k700", "700 root:root"],
      ["/etc/nsc-k750", "750 root:nogroup"],
    ]) {
      const r = await signingKey(h, dir);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(lastJson(r).created, true);
      assert.equal(await out(h, `stat -c '%a %U:%G' ${dir}`), attrs);
      assert.equal(
        await out(h, `stat -c '%n %a %U:%G' ${dir}/cache-priv-key.pem ${dir}/cache-pub-key.pem`),
        `${dir}/cache-priv-key.pem 600 root:root\n${dir}/cache-pub-key.pem 644 root:root`,
      );
    }
    // remove deletes the key, never the directory it did not create
    const rm = await step(h, "signing-key", {
      ACTION: "remove",
      KEY_DIR: "/etc/nsc-k700",
      REMOVE_KEY: "1",
    });
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(
      await out(h, "stat -c '%a %U:%G' /etc/nsc-k700; ls -A /etc/nsc-k700"),
      "700 root:root",
    );
  });

  it("keyDirectory: a private key nix-ssh-cache did not generate is reported, adopted only on request (finding 9)", async () => {
    const dir = "/etc/nsc-admin";
    await h.exec(
      `install -d -m 0755 ${dir} && nix-store --generate-binary-cache-key admin.test-1 ${dir}/cache-priv-key.pem ${dir}/cache-pub-key.pem`,
    );
    const adminPub = await out(h, `cat ${dir}/cache-pub-key.pem`);
    const before = await out(h, `sha256sum ${dir}/* | sort`);
    const refused = await signingKey(h, dir);
    assert.notEqual(refused.code, 0, refused.stdout);
    assert.match(
      refused.stderr,
      /nix-ssh-cache: \/etc\/nsc-admin\/cache-priv-key\.pem holds a signing key that nix-ssh-cache did not generate \(key 'admin\.test-1'.*set signingKey\.adoptExisting: true; else move it away \(e\.g\. mv \/etc\/nsc-admin\/cache-priv-key\.pem/,
    );
    assert.equal(await out(h, `sha256sum ${dir}/* | sort`), before, "nothing changed");
    assert.equal(await out(h, `ls -A ${dir}`), "cache-priv-key.pem\ncache-pub-key.pem");

    const adopted = await signingKey(h, dir, { ADOPT_KEY: "1" });
    assert.equal(adopted.code, 0, adopted.stderr);
    assert.equal(lastJson(adopted).publicKey, adminPub);
    assert.equal(lastJson(adopted).created, false);
    assert.equal(await out(h, `stat -c '%a %U:%G' ${dir}/.nix-ssh-cache`), "600 root:root");
    // recorded: later runs need no opt-in
    const again = await signingKey(h, dir);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(lastJson(again).publicKey, adminPub);

    // a key replaced out of band is not the one recorded
    await h.exec(
      `nix-store --generate-binary-cache-key other.test-1 /root/other-priv /root/other-pub && mv -f /root/other-priv ${dir}/cache-priv-key.pem`,
    );
    const replaced = await signingKey(h, dir);
    assert.notEqual(replaced.code, 0, replaced.stdout);
    assert.match(
      replaced.stderr,
      /holds a signing key that nix-ssh-cache did not generate \(key 'other\.test-1'/,
    );
  });

  it("keyDirectory: a key an earlier version generated (no record) is recorded when the stack's state already trusts it, refused otherwise", async () => {
    const dir = "/etc/nsc-upgrade";
    await h.exec(
      `install -d -m 0755 ${dir} && nix-store --generate-binary-cache-key stage.test ${dir}/cache-priv-key.pem ${dir}/cache-pub-key.pem`,
    );
    const pub = await out(h, `cat ${dir}/cache-pub-key.pem`);
    // another public key in the state (e.g. the key was replaced since): still refused
    const other = await signingKey(h, dir, {
      NSC_PRIOR_PUBLICKEY: "stage.test:Xe2Ke6bMnDk2JGnJW/Ef21Se2gBnPubbL7cuqSs7jyQ=",
    });
    assert.notEqual(other.code, 0, other.stdout);
    assert.match(other.stderr, /did not generate \(key 'stage\.test'/);
    assert.equal(await out(h, `ls -A ${dir}`), "cache-priv-key.pem\ncache-pub-key.pem");
    // the state's own public key: recorded, used, and later runs need nothing
    const upgraded = await signingKey(h, dir, { NSC_PRIOR_PUBLICKEY: pub });
    assert.equal(upgraded.code, 0, upgraded.stderr);
    assert.equal(lastJson(upgraded).publicKey, pub);
    assert.match(upgraded.stderr, /the stack's state already trusts its public key/);
    assert.match(
      await out(h, `cat ${dir}/.nix-ssh-cache`),
      /^key cache-priv-key\.pem [0-9a-f]{64}$/m,
    );
    const again = await signingKey(h, dir);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(lastJson(again).publicKey, pub);
  });

  it("keyDirectory: keys generated here are recognised on every later run, rotation included; remove deletes only what it created", async () => {
    const dir = "/etc/nsc-gen/keys";
    const first = await signingKey(h, dir);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(lastJson(first).created, true);
    const key0 = lastJson(first).publicKey;
    assert.equal(
      await out(h, "stat -c '%n %a %U:%G' /etc/nsc-gen /etc/nsc-gen/keys"),
      "/etc/nsc-gen 755 root:root\n/etc/nsc-gen/keys 755 root:root",
    );
    assert.equal(
      await out(h, `cat ${dir}/.nix-ssh-cache`),
      `dir /etc/nsc-gen\ndir /etc/nsc-gen/keys\nkey cache-priv-key.pem ${await out(h, `sha256sum < ${dir}/cache-priv-key.pem | cut -d' ' -f1`)}`,
    );
    const second = await signingKey(h, dir);
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual([lastJson(second).created, lastJson(second).publicKey], [false, key0]);
    const gen1 = await signingKey(h, dir, { KEY_GENERATION: "1", KEY_NAME: "stage.test-1" });
    assert.equal(gen1.code, 0, gen1.stderr);
    assert.equal(lastJson(gen1).created, true);
    for (const g of ["0", "1"]) {
      const r = await signingKey(h, dir, {
        KEY_GENERATION: g,
        KEY_NAME: g === "0" ? "stage.test" : "stage.test-1",
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(lastJson(r).created, false);
    }
    // the private key never reaches stdout
    const secret = (await out(h, `cat ${dir}/cache-priv-key.pem`)).split(":")[1];
    assert.ok(!first.stdout.includes(secret) && !first.stderr.includes(secret));

    const rm1 = await step(h, "signing-key", {
      ACTION: "remove",
      KEY_DIR: dir,
      KEY_GENERATION: "1",
      REMOVE_KEY: "1",
    });
    assert.equal(rm1.code, 0, rm1.stderr);
    assert.equal(
      await out(h, `ls -A ${dir}`),
      ".nix-ssh-cache\ncache-priv-key.pem\ncache-pub-key.pem",
    );
    const rm0 = await step(h, "signing-key", { ACTION: "remove", KEY_DIR: dir, REMOVE_KEY: "1" });
    assert.equal(rm0.code, 0, rm0.stderr);
    assert.equal(await out(h, "ls -d /etc/nsc-gen 2>/dev/null || echo gone"), "gone");
  });

  it("file.sh never writes where another user could replace the file (world-writable or user-owned directory)", async () => {
    await h.exec("install -d -m 1777 /var/tmp/nsc-shared && install -d -o nobody /etc/nsc-userdir");
    for (const [file, why] of [
      [
        "/var/tmp/nsc-shared/fragment.nix",
        /\/var\/tmp\/nsc-shared is writable by its group or by others \(mode 1777\)/,
      ],
      [
        "/var/tmp/nsc-new/fragment.nix",
        /\/var\/tmp is writable by its group or by others \(mode 1777\)/,
      ],
      ["/etc/nsc-userdir/sub/x.conf", /\/etc\/nsc-userdir is owned by nobody, not root/],
    ] as const) {
      const r = await writeFile(h, file, "{ }\n");
      assert.notEqual(r.code, 0, `${file} written`);
      assert.match(r.stderr, /nix-ssh-cache: cannot write \S+ safely: /);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /Nothing was changed/);
    }
    assert.equal(
      await out(
        h,
        "ls -A /var/tmp/nsc-shared /etc/nsc-userdir; ls -d /var/tmp/nsc-new 2>/dev/null || true",
      ),
      "/etc/nsc-userdir:\n\n/var/tmp/nsc-shared:",
    );
    // a symlinked directory is followed: fine when both ends are root's
    await h.exec("install -d -m 0755 /etc/nsc-realdir && ln -s /etc/nsc-realdir /etc/nsc-linkdir");
    const linked = await writeFile(h, "/etc/nsc-linkdir/x.conf", "ok\n");
    assert.equal(linked.code, 0, linked.stderr);
    assert.equal(await out(h, "cat /etc/nsc-realdir/x.conf"), "ok");
  });

  it("file.sh read reports a digest, never the content (a private key stays on the host)", async () => {
    const file = "/etc/nsc-secret/id_ed25519";
    const body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
    const content = `-----BEGIN OPENSSH PRIVATE KEY-----\n${body}\n-----END OPENSSH PRIVATE KEY-----\n`;
    const applied = await step(h, "file", {
      ACTION: "apply",
      FILE_PATH: file,
      FILE_CONTENT: content,
      FILE_MODE: "0600",
    });
    assert.equal(applied.code, 0, applied.stderr);
    const read = await step(h, "file", { ACTION: "read", FILE_PATH: file });
    assert.equal(read.code, 0, read.stderr);
    for (const text of [read.stdout, read.stderr]) {
      assert.doesNotMatch(text, /PRIVATE KEY/);
      assert.ok(!text.includes(body), "the key's body was sent");
      assert.ok(
        !text.includes(Buffer.from(content).toString("base64").slice(0, 40)),
        "the key was sent in base64",
      );
    }
    const r = lastJson(read);
    assert.deepEqual(
      { exists: r.exists, sha256: r.sha256, mode: r.mode, owner: r.owner, size: r.size },
      {
        exists: true,
        sha256: lastJson(applied).sha256,
        mode: "600",
        owner: "root:root",
        size: content.length,
      },
    );
    assert.equal("contentB64" in r, false);
    // drift is still seen
    await h.exec(`echo edited >> ${file}`);
    assert.notEqual(
      lastJson(await step(h, "file", { ACTION: "read", FILE_PATH: file })).sha256,
      r.sha256,
    );
  });
});

const pulumiSkip = skip ?? pulumiSkipReason();
const COMPONENTS = JSON.stringify(path.join(repoRoot, "build", "components"));

/** A dedicated client identity on one host: its private key is a managed file there. */
const IDENTITY_PROGRAM = `const pulumi = require("@pulumi/pulumi");
const { ClientIdentity } = require(${COMPONENTS});
const cfg = new pulumi.Config();
const identity = new ClientIdentity("web", {
  host: { connection: { ...cfg.requireObject("host"), privateKey: cfg.requireSecret("sshKey") } },
  mode: "dedicated",
  clientKey: { privateKeyOpenssh: cfg.requireSecret("clientKey"), publicKeyOpenssh: cfg.require("clientPub") },
});
module.exports = { publicKey: identity.publicKey };
`;

describe("a refresh of a dedicated client key (real engine)", { skip: pulumiSkip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let web: TestHost;
  let keyDir: string;
  let clientKey: string;

  before(async () => {
    hosts = await startHosts([{ name: "web" }]);
    web = hosts.byName("web");
    keyDir = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-clientkey-"));
    execFileSync("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "web",
      "-f",
      path.join(keyDir, "k"),
    ]);
    clientKey = fs.readFileSync(path.join(keyDir, "k"), "utf8");
    stack = new PulumiStack(makeProgram("client-key", IDENTITY_PROGRAM));
    await stack.init();
    await stack.setConfigObjects(
      { host: { host: web.address, hostKey: web.hostKey } },
      "client-key",
    );
    await stack.setConfig("sshKey", web.privateKey, { secret: true });
    await stack.setConfig("clientKey", clientKey, { secret: true });
    await stack.setConfig("clientPub", fs.readFileSync(path.join(keyDir, "k.pub"), "utf8").trim());
  });

  after(async () => {
    const dir = stack?.projectDir;
    await stack?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    if (keyDir) fs.rmSync(keyDir, { recursive: true, force: true });
    await hosts?.teardown();
  });

  it("up installs the key; refresh (also after drift) leaves no private key line in any step's result", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal(
      await out(web, "stat -c '%a %U:%G' /etc/nix/nix-ssh-cache/id_ed25519"),
      "600 root:root",
    );
    await web.exec("echo '# edited' >> /etc/nix/nix-ssh-cache/id_ed25519");
    const refresh = await stack.run(["refresh", "--yes", "--skip-preview"]);
    assert.equal(refresh.code, 0, refresh.output);
    const state = JSON.parse(await stack.exportState(true)) as {
      deployment: { resources: { urn: string; outputs?: { result?: unknown } }[] };
    };
    const keyLine = clientKey.split("\n")[1];
    const results = state.deployment.resources.map((r) =>
      JSON.stringify(r.outputs?.result ?? null),
    );
    const file = state.deployment.resources.find((r) => r.urn.endsWith("web-key-file"));
    assert.ok(file, "the key file step is in the state");
    assert.notEqual(JSON.stringify(file.outputs?.result), "null");
    for (const result of results) {
      assert.doesNotMatch(result, /PRIVATE KEY|contentB64/);
      assert.ok(!result.includes(keyLine));
    }
    // the drift was seen: the next up restores the key
    const again = await stack.up();
    assert.equal(again.code, 0, again.output);
    assert.equal(await out(web, "cat /etc/nix/nix-ssh-cache/id_ed25519"), clientKey.trim());
  });
});
