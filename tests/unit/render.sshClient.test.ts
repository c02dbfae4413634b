import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  knownHostsName,
  renderKnownHosts,
  renderSshClientConfig,
} from "../../components/render/sshClient";
import { HOST_KEY, hasCommand, withTempDir } from "./fixtures";

const HOST_KEY_NO_COMMENT = HOST_KEY.split(" ").slice(0, 2).join(" ");

describe("renderKnownHosts", () => {
  it("pins the key for the names, comment dropped", () => {
    assert.equal(renderKnownHosts(["stage.test"], HOST_KEY), `stage.test ${HOST_KEY_NO_COMMENT}\n`);
    assert.equal(
      renderKnownHosts(["stage.test", "127.0.0.2", "stage.test"], HOST_KEY),
      `127.0.0.2,stage.test ${HOST_KEY_NO_COMMENT}\n`,
    );
  });

  it("uses [name]:port for other ports", () => {
    assert.equal(knownHostsName("stage.test"), "stage.test");
    assert.equal(knownHostsName("stage.test", 2222), "[stage.test]:2222");
    assert.equal(knownHostsName("[::1]", 2222), "[::1]:2222");
  });

  it("rejects bad names and keys", () => {
    assert.throws(() => renderKnownHosts([], HOST_KEY));
    assert.throws(() => renderKnownHosts(["a,b"], HOST_KEY));
    assert.throws(() => renderKnownHosts(["a b"], HOST_KEY));
    assert.throws(() => renderKnownHosts(["a"], "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB"));
  });

  it(
    "is found by ssh-keygen -F",
    { skip: hasCommand("ssh-keygen") ? false : "no ssh-keygen" },
    () => {
      withTempDir((dir) => {
        const file = join(dir, "known_hosts");
        writeFileSync(file, renderKnownHosts([knownHostsName("stage.test", 2222)], HOST_KEY));
        const out = execFileSync("ssh-keygen", ["-F", "[stage.test]:2222", "-f", file], {
          encoding: "utf8",
        });
        assert.ok(out.includes(HOST_KEY_NO_COMMENT));
      });
    },
  );
});

describe("renderSshClientConfig", () => {
  it("renders a strict, non-interactive Host block", () => {
    const text = renderSshClientConfig({
      hostName: "stage.test",
      knownHostsFile: "/etc/nix-ssh-cache/known_hosts",
    });
    assert.equal(
      text.split("\n").slice(1).join("\n"),
      "Host stage.test\n" +
        "  UserKnownHostsFile /etc/nix-ssh-cache/known_hosts\n" +
        "  StrictHostKeyChecking yes\n" +
        "  BatchMode yes\n" +
        "Host *\n",
    );
  });

  it("refuses injection", () => {
    assert.throws(() => renderSshClientConfig({ hostName: "a\nHost *", knownHostsFile: "/k" }));
    assert.throws(() =>
      renderSshClientConfig({ hostName: "a", knownHostsFile: "/k", ciphers: ["x y"] }),
    );
    assert.throws(() => renderSshClientConfig({ hostName: "a", knownHostsFile: "/k", port: 0 }));
  });

  it(
    "is applied by ssh (ssh -G) with port, ciphers and identity",
    { skip: hasCommand("ssh") ? false : "no ssh client" },
    () => {
      withTempDir((dir) => {
        const file = join(dir, "ssh_config");
        writeFileSync(
          file,
          renderSshClientConfig({
            hostName: "stage.test",
            knownHostsFile: "/etc/nix-ssh-cache/known_hosts",
            port: 2222,
            ciphers: ["aes128-gcm@openssh.com"],
            identityFile: "/root/.ssh/id_ed25519",
          }),
        );
        const out = execFileSync("ssh", ["-G", "-F", file, "nix-ssh@stage.test"], {
          encoding: "utf8",
        });
        assert.match(out, /^port 2222$/m);
        assert.match(out, /^userknownhostsfile \/etc\/nix-ssh-cache\/known_hosts$/m);
        assert.match(out, /^stricthostkeychecking true$/m);
        assert.match(out, /^batchmode yes$/m);
        assert.match(out, /^ciphers aes128-gcm@openssh.com$/m);
        assert.match(out, /^identityfile \/root\/.ssh\/id_ed25519$/m);
        const other = execFileSync("ssh", ["-G", "-F", file, "other.test"], { encoding: "utf8" });
        assert.match(other, /^port 22$/m, "other hosts are unaffected");
      });
    },
  );

  it(
    "as an ssh_config.d drop-in, does not capture the global lines after the Include",
    { skip: hasCommand("ssh") ? false : "no ssh client" },
    () => {
      withTempDir((dir) => {
        const dropIn = join(dir, "nix-ssh-cache.conf");
        const text = renderSshClientConfig({
          hostName: "stage.test",
          knownHostsFile: "/etc/nix-ssh-cache/known_hosts",
          port: 2222,
        });
        writeFileSync(dropIn, text);
        // Debian's ssh_config: the drop-ins are included first, the user's lines follow.
        const main = join(dir, "ssh_config");
        writeFileSync(main, `Include ${dropIn}\nServerAliveInterval 30\n`);
        const sshG = (host: string) =>
          execFileSync("ssh", ["-G", "-F", main, host], { encoding: "utf8" });
        assert.match(sshG("other.test"), /^serveraliveinterval 30$/m);
        assert.match(sshG("stage.test"), /^serveraliveinterval 30$/m);
        assert.match(sshG("stage.test"), /^port 2222$/m);
        // The same holds when the user's line is the body of the drop-in itself (a file that
        // concatenates drop-ins, or an OpenSSH that keeps an included Host block open; 9.2
        // closes it at the end of the included file).
        writeFileSync(main, `${text}ServerAliveInterval 30\n`);
        assert.match(sshG("other.test"), /^serveraliveinterval 30$/m);
      });
    },
  );
});

describe("the ssh client renderers with crafted coordinates", () => {
  const base = { hostName: "stage.test", knownHostsFile: "/etc/nix-ssh-cache/known_hosts" };
  it("refuse a port that is not an integer 1..65535 (a string could carry lines)", () => {
    for (const port of [
      "22\n  ProxyCommand touch /tmp/pwned\n  StrictHostKeyChecking no",
      "2222",
      0,
      65536,
      22.5,
      NaN,
    ]) {
      assert.throws(
        () => renderSshClientConfig({ ...base, port: port as number }),
        /ssh Port/,
        String(port),
      );
      assert.throws(() => knownHostsName("stage.test", port as number), /port/, String(port));
    }
  });

  it("refuse a host name that is a pattern or carries a line", () => {
    for (const hostName of [
      "stage.test\n  StrictHostKeyChecking no",
      "*",
      "!x",
      "a,b",
      "a b",
      "?",
    ]) {
      assert.throws(() => renderSshClientConfig({ ...base, hostName }), /ssh Host/, hostName);
      assert.throws(() => renderKnownHosts([hostName], HOST_KEY), /host name/, hostName);
    }
    assert.throws(() => renderKnownHosts(["[stage.test]:22\nx"], HOST_KEY), /host name/);
    assert.throws(() => renderKnownHosts(["[stage.test]:0"], HOST_KEY), /port/);
  });

  it("refuse a host key with a second line", () => {
    assert.throws(() => renderKnownHosts(["stage.test"], `${HOST_KEY}\n* ${HOST_KEY}`));
  });

  it("refuse file names and ciphers that would break the line", () => {
    assert.throws(() => renderSshClientConfig({ ...base, knownHostsFile: "/a b" }));
    assert.throws(() => renderSshClientConfig({ ...base, knownHostsFile: "/a#b" }));
    assert.throws(() => renderSshClientConfig({ ...base, identityFile: "/a\nProxyCommand x" }));
    assert.throws(() =>
      renderSshClientConfig({ ...base, ciphers: ["aes128-ctr\nProxyCommand x"] }),
    );
    assert.throws(() => renderSshClientConfig({ ...base, ciphers: ["a,b"] }));
  });

  it("accept IPv4, IPv6 and bracketed IPv6 hosts", () => {
    assert.match(renderSshClientConfig({ ...base, hostName: "127.0.0.1" }), /^Host 127\.0\.0\.1$/m);
    assert.match(renderSshClientConfig({ ...base, hostName: "::1" }), /^Host ::1$/m);
    assert.equal(
      renderKnownHosts([knownHostsName("[::1]", 2222)], HOST_KEY).split(" ")[0],
      "[::1]:2222",
    );
  });
});
