/**
 * Staging down (issue 23, item 2): what production's files say so that an unreachable staging
 * costs seconds and ends in a build: ssh's `ConnectTimeout` for staging and Nix's `fallback`,
 * on plain Linux (ssh_config drop-in, included nix.conf) and NixOS (module).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderNixConf } from "../../components/render/nixConf";
import { renderProductionModule } from "../../components/render/nixosModules";
import { renderSshClientConfig } from "../../components/render/sshClient";
import { evalNixosConfiguration, hasCommand, HOST_KEY, withTempDir } from "./fixtures";

const CACHE_KEY = "stage.test:T0xDDpZbMep2GjjzGDpRk32FkZx/+LZ4eKqPyGI2il8=";
const sshArgs = { hostName: "stage.test", knownHostsFile: "/etc/nix-ssh-cache/known_hosts" };
const moduleArgs = {
  substituterUrl: "ssh://nix-ssh@stage.test",
  trustedPublicKeys: [CACHE_KEY],
  stagingHostName: "stage.test",
  stagingHostKey: HOST_KEY,
};

describe("ssh ConnectTimeout for staging", () => {
  it("is rendered in staging's Host block only when given", () => {
    const text = renderSshClientConfig({ ...sshArgs, connectTimeout: 10 });
    assert.match(
      text,
      /^Host stage\.test\n(?: {2}.*\n)* {2}ConnectTimeout 10\n(?: {2}.*\n)*Host \*\n$/m,
    );
    assert.doesNotMatch(renderSshClientConfig(sshArgs), /ConnectTimeout/);
  });

  it("refuses a value that is not whole seconds from 1 to 3600, naming the option", () => {
    for (const bad of [0, -1, 1.5, 3601, Number.NaN]) {
      assert.throws(
        () => renderSshClientConfig({ ...sshArgs, connectTimeout: bad }),
        /ConnectTimeout \(connectTimeout\) must be whole seconds from 1 to 3600/,
      );
      assert.throws(() => renderProductionModule({ ...moduleArgs, connectTimeout: bad }));
    }
  });

  it(
    "is what ssh applies to staging (ssh -G), and to no other host",
    { skip: hasCommand("ssh") ? false : "no ssh client" },
    () => {
      withTempDir((dir) => {
        const file = join(dir, "ssh_config");
        writeFileSync(file, renderSshClientConfig({ ...sshArgs, connectTimeout: 7 }));
        const sshG = (host: string) =>
          execFileSync("ssh", ["-G", "-F", file, host], { encoding: "utf8" });
        assert.match(sshG("nix-ssh@stage.test"), /^connecttimeout 7$/m);
        assert.doesNotMatch(sshG("other.test"), /^connecttimeout 7$/m);
      });
    },
  );
});

describe("Nix fallback on production", () => {
  it("nix.conf: `fallback = true|false` when given, nothing otherwise", () => {
    const args = { substituters: ["ssh://nix-ssh@stage.test"], trustedPublicKeys: [CACHE_KEY] };
    assert.match(renderNixConf({ ...args, fallback: true }), /^fallback = true$/m);
    assert.match(renderNixConf({ ...args, fallback: false }), /^fallback = false$/m);
    assert.doesNotMatch(renderNixConf(args), /fallback/);
  });

  it(
    "NixOS module: nix.settings.fallback and the ConnectTimeout block, as NixOS renders them",
    {
      skip: hasCommand("nix-instantiate") ? false : "no nix-instantiate",
    },
    () => {
      withTempDir((dir) => {
        const module = renderProductionModule({
          ...moduleArgs,
          fallback: true,
          connectTimeout: 10,
        });
        writeFileSync(join(dir, "nix-ssh-cache.nix"), module);
        const configuration = join(dir, "configuration.nix");
        writeFileSync(configuration, "{ ... }: { imports = [ ./nix-ssh-cache.nix ]; }\n");
        const evaluated = evalNixosConfiguration(configuration);
        assert.match(evaluated.files["/etc/nix/nix.conf"], /^fallback = true$/m);
        const sshConfig = evaluated.files["/etc/ssh/ssh_config"];
        // In the block that pins staging strictly, before the `Host *` reset.
        assert.match(
          sshConfig,
          /Host stage\.test\n {2}ConnectTimeout 10\n {2}UserKnownHostsFile \/etc\/ssh\/ssh_known_hosts\n {2}StrictHostKeyChecking yes\n {2}BatchMode yes\nHost \*\n/,
        );
        if (hasCommand("ssh")) {
          const file = join(dir, "ssh_config");
          writeFileSync(file, sshConfig);
          const out = execFileSync("ssh", ["-G", "-F", file, "stage.test"], { encoding: "utf8" });
          assert.match(out, /^connecttimeout 10$/m);
        }
        assert.doesNotMatch(renderProductionModule(moduleArgs), /fallback|ConnectTimeout/);
      });
    },
  );
});
