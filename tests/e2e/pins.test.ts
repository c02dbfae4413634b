/**
 * Release pins (issue 23, item 1): `pins` on NixSshCache keeps the last `keepReleases` releases
 * on staging as GC roots (a CachePin). A pinned release survives `nix-collect-garbage -d` on
 * staging and production still substitutes it; once `keepReleases` newer releases were pinned it
 * is unpinned and collected. A root removed by hand is noticed by `up --refresh`, which puts it
 * back; destroy removes the roots. Real Pulumi engine, sshd and Nix on test hosts.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { randomBytes } from "crypto";
import { e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { makeProgram, pulumiSkipReason, PulumiStack, repoRoot } from "./pulumi";

const skip = e2eSkipReason() ?? pulumiSkipReason();
const COMPONENTS = JSON.stringify(path.join(repoRoot, "build", "components"));
const PIN_DIR = "/nix/var/nix/gcroots/nix-ssh-cache/pins/cache";
const KEEP = 2;

/** NixSshCache with `pins` and `keepReleases` from the config; exports what staging reports. */
const PROGRAM = `const pulumi = require("@pulumi/pulumi");
const { NixSshCache } = require(${COMPONENTS});
const cfg = new pulumi.Config();
const privateKey = cfg.requireSecret("sshKey");
const s = cfg.requireObject("staging");
const cache = new NixSshCache("cache", {
  staging: { connection: { host: s.host, hostKey: s.hostKey, privateKey }, cacheHost: s.cacheHost },
  production: cfg.requireObject("production").map((p) => ({
    connection: { host: p.host, hostKey: p.hostKey, privateKey },
    name: p.name,
  })),
  pins: cfg.getObject("pins"),
  keepReleases: cfg.getNumber("keepReleases"),
});
module.exports = { verified: cache.verified, pinned: cache.pin ? cache.pin.result : null };
`;

/** A release on staging: a top path referring to a dependency (its closure: 2 paths). */
async function buildRelease(stage: TestHost, label: string): Promise<string[]> {
  const nonce = `${label}-${randomBytes(4).toString("hex")}`;
  const expr =
    `let dep = builtins.derivation { name = "dep-${nonce}"; system = builtins.currentSystem; ` +
    `builder = "/bin/sh"; args = [ "-c" "echo ${nonce} > $out" ]; }; in ` +
    `builtins.derivation { name = "release-${nonce}"; system = builtins.currentSystem; ` +
    `builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`;
  const drv = (await stage.exec(`nix-instantiate -E '${expr}'`)).stdout.trim();
  const top = (await stage.exec(`nix-store --realise ${drv}`)).stdout.trim();
  const closure = (await stage.exec(`nix-store -qR ${top}`)).stdout.trim().split("\n");
  assert.equal(closure.length, 2, "a release of 2 paths");
  return [top, ...closure.filter((p) => p !== top)];
}

/** Whether `p` is valid in a host's store. */
async function valid(host: TestHost, p: string): Promise<boolean> {
  const r = await host.exec(`nix-store --check-validity ${p}`, { check: false });
  return r.code === 0;
}

/** Staging's garbage collection, as an administrator runs it. */
async function collectGarbage(stage: TestHost): Promise<void> {
  await stage.exec("nix-collect-garbage -d >/dev/null 2>&1");
}

interface Pinned {
  set: string;
  current: string | null;
  releases: { id: string; seq: number; paths: string[] }[];
  roots: number;
  intact: boolean;
  unpinned: string[];
}

describe("release pins: staging keeps the last N releases as GC roots", { skip }, () => {
  let hosts: TestHosts;
  let stack: PulumiStack;
  let stage: TestHost;
  let prod: TestHost;
  let projectDir: string;
  const releases: string[][] = [];

  before(async () => {
    hosts = await startHosts([{ name: "stage" }, { name: "prod1" }]);
    stage = hosts.byName("stage");
    prod = hosts.byName("prod1");
    projectDir = makeProgram("cache-pins", PROGRAM);
    stack = new PulumiStack(projectDir, "e2e");
    await stack.init();
    releases.push(await buildRelease(stage, "r1"));
    await stack.setConfigObjects(
      {
        staging: { host: stage.address, hostKey: stage.hostKey, cacheHost: stage.fqdn },
        production: [{ host: prod.address, hostKey: prod.hostKey, name: "prod1" }],
        pins: [releases[0][0]],
        keepReleases: KEEP,
      },
      "cache-pins",
    );
    await stack.setConfig("sshKey", stage.privateKey, { secret: true });
  });

  after(async () => {
    await stack?.dispose();
    if (projectDir) fs.rmSync(projectDir, { recursive: true, force: true });
    await hosts?.teardown();
  });

  it("an invalid store path in pins is refused before anything runs on a host", async () => {
    const bad = `/nix/store/${"e".repeat(32)}-release`; // 'e' is not a nix-base32 digit
    await stack.setConfigObjects({ pins: [bad] }, "cache-pins");
    try {
      const up = await stack.preview();
      assert.notEqual(up.code, 0, "preview must fail");
      assert.match(up.output, /pins\[0\] .*must be a store path/);
    } finally {
      await stack.setConfigObjects({ pins: [releases[0][0]] }, "cache-pins");
    }
  });

  it("up pins the release: its closure survives nix-collect-garbage -d; an unpinned path does not", async () => {
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const out = await stack.outputs();
    assert.equal(out.verified, true);
    const pinned = out.pinned as Pinned;
    assert.equal(pinned.releases.length, 1);
    assert.deepEqual(pinned.releases[0].paths, [releases[0][0]]);
    assert.equal(pinned.current, pinned.releases[0].id);
    assert.equal(pinned.intact, true);
    const st = (await stage.exec(`stat -c '%U %a %F' ${PIN_DIR}`)).stdout.trim();
    assert.equal(st, "root 755 directory");
    assert.equal((await stage.exec(`readlink ${PIN_DIR}/1-0`)).stdout.trim(), releases[0][0]);

    // The control: a path nothing keeps is collected by the same command.
    const loose = await buildRelease(stage, "loose");
    await collectGarbage(stage);
    assert.equal(await valid(stage, loose[0]), false, "an unpinned path is collected");
    for (const p of releases[0]) assert.ok(await valid(stage, p), `${p} collected on staging`);

    // Production still gets it (the closure, signed by staging).
    const r = await prod.exec(`nix-store --realise ${releases[0][0]}`, { check: false });
    assert.equal(r.code, 0, r.stderr);
    for (const p of releases[0]) assert.ok(await valid(prod, p));
  });

  it("unchanged: the next preview has nothing to do", async () => {
    const p = await stack.preview(["--expect-no-changes"]);
    assert.equal(p.code, 0, p.output);
  });

  it("a root removed by hand: up --refresh notices it and puts it back", async () => {
    await stage.exec(`rm ${PIN_DIR}/1-0`);
    const preview = await stack.preview(["--refresh", "--expect-no-changes"]);
    assert.notEqual(preview.code, 0, "a refresh must see the missing root as a change");
    assert.match(preview.output, /releases-pin/);
    const up = await stack.up(["--refresh"]);
    assert.equal(up.code, 0, up.output);
    assert.equal((await stage.exec(`readlink ${PIN_DIR}/1-0`)).stdout.trim(), releases[0][0]);
    assert.equal(((await stack.outputs()).pinned as Pinned).intact, true);
    await collectGarbage(stage);
    assert.ok(await valid(stage, releases[0][0]), "kept again");
  });

  it(`after ${KEEP} newer releases the first is unpinned and collected; the last ${KEEP} are kept`, async () => {
    for (const label of ["r2", "r3"]) {
      const r = await buildRelease(stage, label);
      releases.push(r);
      await stack.setConfigObjects({ pins: [r[0]] }, "cache-pins");
      const up = await stack.up();
      assert.equal(up.code, 0, up.output);
    }
    const pinned = (await stack.outputs()).pinned as Pinned;
    assert.deepEqual(
      pinned.releases.map((r) => r.paths[0]),
      [releases[1][0], releases[2][0]],
      "the last 2 releases, oldest first",
    );
    assert.equal(pinned.unpinned.length, 1, "the third release unpinned the first");
    assert.equal(pinned.roots, KEEP);
    await collectGarbage(stage);
    for (const p of releases[0]) assert.equal(await valid(stage, p), false, `${p} not collected`);
    for (const r of releases.slice(1)) {
      for (const p of r) assert.ok(await valid(stage, p), `${p} collected though pinned`);
    }
  });

  it("a rollback: pinning an older kept release again makes it the newest, nothing unpinned", async () => {
    await stack.setConfigObjects({ pins: [releases[1][0]] }, "cache-pins");
    const up = await stack.up();
    assert.equal(up.code, 0, up.output);
    const pinned = (await stack.outputs()).pinned as Pinned;
    assert.deepEqual(
      pinned.releases.map((r) => r.paths[0]),
      [releases[2][0], releases[1][0]],
      "r2 is now the newest",
    );
    assert.deepEqual(pinned.unpinned, []);
    assert.equal(pinned.roots, KEEP);
    assert.equal(pinned.current, pinned.releases[1].id);
  });

  it("a symlink planted in place of the pins directory is refused, never followed", async () => {
    await stage.exec(
      `mkdir -p /tmp/elsewhere && mv ${PIN_DIR} /tmp/pins-moved && ln -s /tmp/elsewhere ${PIN_DIR}`,
    );
    try {
      const r = await buildRelease(stage, "r4");
      await stack.setConfigObjects({ pins: [r[0]] }, "cache-pins");
      const up = await stack.up();
      assert.notEqual(up.code, 0, "up must fail");
      assert.match(up.output, /pins\/cache is not a directory \(a symlink or a file is there\)/);
      assert.equal((await stage.exec("ls -A /tmp/elsewhere")).stdout.trim(), "", "nothing written");
    } finally {
      await stage.exec(`rm ${PIN_DIR} && mv /tmp/pins-moved ${PIN_DIR}`);
      await stack.setConfigObjects({ pins: [releases[1][0]] }, "cache-pins");
    }
  });

  it("destroy removes the roots and the set's directory", async () => {
    const d = await stack.run(["destroy", "--yes", "--skip-preview"]);
    assert.equal(d.code, 0, d.output);
    const left = await stage.exec(`test -e ${PIN_DIR} && echo present || echo absent`);
    assert.equal(left.stdout.trim(), "absent");
  });
});
