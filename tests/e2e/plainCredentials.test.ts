/**
 * Credentials given as plain strings (not `pulumi.secret`) are still secret in the state: a
 * `NixSshCache` whose staging connection has a private key read from a file with
 * `fs.readFileSync` and whose production connection has a password from a file. After `up`,
 * neither the key (its body, any of its lines) nor the password is in `pulumi stack export`
 * (without `--show-secrets`) or in any file of the backend (checkpoint, history, backups); the
 * next preview is clean. A password change is a connection-only change: `up` proves the new
 * password with one login and runs no step again.
 *
 * (Keys given as Pulumi secrets: tests/e2e/reliability/security.test.ts, smoke.test.ts.)
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "child_process";
import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const PROJECT = "plain-credentials";
const COMPONENTS = JSON.stringify(path.join(repoRoot, "build", "components"));

/** The program: credentials read from files, as plain strings. */
const PROGRAM = `const fs = require("fs");
const pulumi = require("@pulumi/pulumi");
const { NixSshCache } = require(${COMPONENTS});
const cfg = new pulumi.Config();
const staging = cfg.requireObject("staging");
const production = cfg.requireObject("production");
// Plain strings, not pulumi.secret: what a program gets from fs.readFileSync.
const privateKey = fs.readFileSync(cfg.require("keyFile"), "utf8");
const password = fs.readFileSync(cfg.require("passwordFile"), "utf8").trim();
const cache = new NixSshCache("cache", {
  staging: {
    connection: { host: staging.host, hostKey: staging.hostKey, privateKey },
    cacheHost: staging.cacheHost,
  },
  production: [
    {
      connection: { host: production.host, hostKey: production.hostKey, user: "ship", password },
      name: production.name,
    },
  ],
});
module.exports = { verified: cache.verified };
`;

/** Files under `dir` containing `needle`. */
function filesContaining(dir: string, needle: string): string[] {
  const r = spawnSync("grep", ["-rlF", "--", needle, dir], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean);
}

/** Lets `user` log in with `password` (sshd reads the drop-in first: the first value wins). */
async function allowPassword(h: TestHost, user: string, password: string): Promise<void> {
  await h.exec(
    `chpasswd && printf 'PasswordAuthentication yes\\n' >/etc/ssh/sshd_config.d/0-password.conf && kill -HUP "$(cat /run/sshd.pid)"`,
    {
      input: `${user}:${password}\n`,
    },
  );
  const t = await h.exec(
    `sshd -T -C user=${user},host=x,addr=127.0.0.1 | grep -i '^passwordauthentication'`,
  );
  assert.equal(t.stdout.trim(), "passwordauthentication yes");
}

describe("plain-string credentials are secret in the state", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod: TestHost;
  let tmp: string;
  let password: string;
  /** Every password the stack was given. */
  const passwords: string[] = [];

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1", loginUser: "ship" }]);
    stage = hosts.byName("stage");
    prod = hosts.byName("prod1");
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-plain-cred-"));
    password = `pw-${randomBytes(12).toString("hex")}`;
    passwords.push(password);
    fs.writeFileSync(path.join(tmp, "password"), `${password}\n`, { mode: 0o600 });
    await allowPassword(prod, "ship", password);
    // The runner's key stays authorised for ship too (the harness's own checks use it); the
    // stack gives only the password for production.
    stack = new PulumiStack(makeProgram(PROJECT, PROGRAM), "e2e");
    await stack.init();
    await stack.setConfigObjects(
      {
        staging: { host: stage.address, cacheHost: stage.fqdn, hostKey: stage.hostKey },
        production: { host: prod.address, hostKey: prod.hostKey, name: "prod1" },
        keyFile: stage.privateKeyPath,
        passwordFile: path.join(tmp, "password"),
      },
      PROJECT,
    );
  });

  after(async () => {
    const dir = stack?.projectDir;
    await stack?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    await hosts?.teardown();
  });

  /** What must not be readable, by label: the key's body and each of its lines, every password. */
  function needles(): [string, string][] {
    const lines = stage.privateKey.split("\n").filter((l) => l.trim() !== "");
    const body = lines.filter((l) => !l.startsWith("-----")).join("");
    return [
      ["the key's body", body],
      ...lines.map((l, i): [string, string] => [`line ${i + 1} of the key`, l]),
      ...passwords.map((p, i): [string, string] => [`password ${i + 1}`, p]),
    ];
  }

  /** Every needle absent from the export and the backend's files. */
  async function assertNotInState(label: string): Promise<void> {
    const state = await stack.exportState(false);
    assert.match(state, /"ciphertext"/, "the export has secrets");
    const inExport = needles().filter(([, n]) => state.includes(n));
    assert.deepEqual(
      inExport.map(([what]) => what),
      [],
      `${label}: in \`pulumi stack export\``,
    );
    const inFiles = needles().flatMap(([what, n]) =>
      filesContaining(stack.backendDir, n).map(
        (f) => `${what}: ${path.relative(stack.backendDir, f)}`,
      ),
    );
    assert.deepEqual(inFiles, [], `${label}: in the backend's files`);
    // The check is real: the secrets are in the state, encrypted.
    const shown = await stack.exportState(true);
    assert.ok(shown.includes(password), "--show-secrets shows the password");
    assert.ok(shown.includes(stage.privateKey.split("\n")[1]), "and the key");
  }

  it("up with a plain key and a plain password stores neither in the clear", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    assert.equal((await stack.outputs()).verified, true);
    assert.ok(
      fs.readdirSync(stack.backendDir, { recursive: true }).some((f) => /\.json$/.test(String(f))),
      "the backend has a checkpoint",
    );
    await assertNotInState("after up");
    const preview = await stack.preview(["--expect-no-changes"]);
    assert.equal(preview.code, 0, preview.output);
  });

  it("a new plain password: one login proves it, no step runs again, still not in the clear", async () => {
    const log = () => fs.readFileSync(path.join(prod.stateDir, "var-log", "sshd.log"), "utf8");
    const files = "/etc/nix/nix-ssh-cache.conf /etc/ssh/ssh_config.d/nix-ssh-cache.conf";
    const stamps = async () => (await prod.exec(`stat -c '%n %Y.%y %s' ${files}`)).stdout;
    const before = { log: log().length, files: await stamps() };
    password = `pw-${randomBytes(12).toString("hex")}`;
    passwords.push(password);
    await prod.exec("chpasswd", { input: `ship:${password}\n` });
    fs.writeFileSync(path.join(tmp, "password"), `${password}\n`);
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const since = log().slice(before.log);
    const logins = since.match(/Accepted password for ship/g) ?? [];
    assert.equal(logins.length, 1, `one login with the new password:\n${since}`);
    const sessions = since.match(/Starting session: command/g) ?? [];
    // The proof (`printf '{}'`), after the sudo probe of the new connection.
    assert.ok(sessions.length <= 2, `${sessions.length} commands ran:\n${since}`);
    assert.equal(await stamps(), before.files, "a managed file changed");
    assert.doesNotMatch(up.output, /wrote \/|restarted nix-daemon/);
    await assertNotInState("after the password change");
    const preview = await stack.preview(["--expect-no-changes"]);
    assert.equal(preview.code, 0, preview.output);
  });
});
