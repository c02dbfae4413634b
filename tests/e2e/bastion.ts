/**
 * A bastion in front of a test host, as on a real network: the target's login user is refused
 * on its public address (where production reaches its `nix-ssh` user) and accepted only on a
 * private address whose name only the bastion resolves; the bastion logs each forwarded channel.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { TestHost } from "../hosts/harness";

/** Where the target is reachable for its login user: a name only the bastion resolves. */
export interface Hidden {
  /** The name the operator gives as `host` (resolved by the bastion). */
  privateName: string;
  /** The address behind it (in the caller's test-address range). */
  privateAddress: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Reloads sshd and waits until it accepts on `address`. */
async function reloadSshd(host: TestHost, address: string): Promise<void> {
  await host.exec('/usr/sbin/sshd -t && kill -HUP "$(cat /run/sshd.pid)"');
  for (let i = 0; i < 200; i++) {
    await sleep(50);
    const up = await new Promise<boolean>((resolve) => {
      const sock = net.connect({ host: address, port: 22 });
      const done = (ok: boolean) => {
        sock.destroy();
        resolve(ok);
      };
      sock.once("connect", () => done(true));
      sock.once("error", () => done(false));
    });
    if (up) return;
  }
  throw new Error(`${host.name}: sshd does not accept on ${address}:22 after a reload`);
}

/**
 * Puts `target` behind `bastion`: its login user only on `privateAddress` (named
 * `<target>.internal`, in the bastion's /etc/hosts only); the bastion logs at DEBUG1, which
 * shows every `direct-tcpip` channel with its target.
 */
export async function hideBehindBastion(
  target: TestHost,
  bastion: TestHost,
  privateAddress: string,
): Promise<Hidden> {
  const privateName = `${target.name}.internal`;
  await target.exec(
    [
      `printf 'ListenAddress ${privateAddress}:22\\n' >/etc/ssh/sshd_config.d/05-private.conf`,
      `printf 'Match LocalAddress ${target.address}\\n  DenyUsers ${target.user}\\nMatch all\\n' >/etc/ssh/sshd_config.d/99-public.conf`,
    ].join(" && "),
  );
  await reloadSshd(target, privateAddress);
  await bastion.exec(
    `printf 'LogLevel DEBUG1\\n' >/etc/ssh/sshd_config.d/00-bastion.conf && echo '${privateAddress} ${privateName}' >>/etc/hosts`,
  );
  await reloadSshd(bastion, bastion.address);
  return { privateName, privateAddress };
}

/** The `direct-tcpip` channels the bastion opened to `name:22` so far (from its sshd log). */
export function forwardsTo(bastion: TestHost, name: string): number {
  const log = fs.readFileSync(path.join(bastion.stateDir, "var-log", "sshd.log"), "utf8");
  const line = new RegExp(
    `server_request_direct_tcpip: .*target ${name.replace(/\./g, "\\.")} port 22`,
    "g",
  );
  return [...log.matchAll(line)].length;
}

/** The text of a host's sshd log. */
export function sshdLog(host: TestHost): string {
  return fs.readFileSync(path.join(host.stateDir, "var-log", "sshd.log"), "utf8");
}

/** An encrypted copy of the runner's key (same key pair, so every test host accepts it). */
export function encryptedRunnerKey(host: TestHost, passphrase: string, dir: string): string {
  const file = path.join(dir, "runner_encrypted");
  fs.copyFileSync(host.privateKeyPath, file);
  fs.chmodSync(file, 0o600);
  const r = spawnSync("ssh-keygen", ["-q", "-p", "-P", "", "-N", passphrase, "-f", file], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`ssh-keygen -p failed: ${r.stderr}`);
  const text = fs.readFileSync(file, "utf8");
  fs.rmSync(file);
  return text;
}
