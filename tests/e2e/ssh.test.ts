/**
 * `runScript` over real sshd: one pooled connection per host shared by concurrent scripts, the
 * per-script mode, a host that refuses channels (`MaxSessions`), a timed-out script, a connection
 * the host drops, a wrong host key, and the idle close.
 */
import { after, before, beforeEach, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { closeSshConnections, Connection, runScript, sshPool } from "../../components/ssh";
import { acceptedLogins, e2eSkipReason, startHosts, TestHost, TestHosts } from "../hosts/harness";
import { operatorConnection } from "./helpers";

const skip = e2eSkipReason();

/** sshd logs a login just after the client sees it: wait until the count settles. */
async function settledLogins(h: TestHost): Promise<number> {
  let last = acceptedLogins(h).root ?? 0;
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = acceptedLogins(h).root ?? 0;
    if (now === last && i >= 2) return now;
    last = now;
  }
  return last;
}

/** `n` concurrent scripts, each printing its own number; returns what they printed. */
async function concurrent(c: Connection, n: number, reuse?: boolean): Promise<string[]> {
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      runScript(c, 'sleep 0.2; echo "$N"', { env: { N: String(i) }, reuse }),
    ),
  );
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  return results.map((r) => r.stdout.trim());
}

describe("runScript connection reuse", { skip }, () => {
  let env: TestHosts;
  let host: TestHost;
  const idleMs = sshPool().idleMs;

  before(async () => {
    env = await startHosts([{ name: "ssh1" }]);
    host = env.byName("ssh1");
  });

  beforeEach(() => {
    closeSshConnections();
    sshPool().idleMs = idleMs;
  });

  after(async () => {
    closeSshConnections();
    sshPool().idleMs = idleMs;
    if (env) await env.teardown();
  });

  it("runs 12 concurrent scripts over one login, 8 channels at a time", async () => {
    const before = await settledLogins(host);
    const out = await concurrent(operatorConnection(host), 12);
    assert.deepEqual(
      out,
      Array.from({ length: 12 }, (_, i) => String(i)),
    );
    assert.equal(sshPool().entries.size, 1);
    assert.equal((await settledLogins(host)) - before, 1);
    // The next script reuses the open connection.
    assert.equal((await runScript(operatorConnection(host), "echo again")).stdout.trim(), "again");
    assert.equal((await settledLogins(host)) - before, 1);
  });

  it("opens one connection per script with reuse: false", async () => {
    const before = await settledLogins(host);
    await concurrent(operatorConnection(host), 5, false);
    assert.equal(sshPool().entries.size, 0);
    assert.equal((await settledLogins(host)) - before, 5);
  });

  it("adapts to a host that allows fewer channels (MaxSessions 2)", async () => {
    const conf = "/etc/ssh/sshd_config.d/10-max-sessions.conf";
    await host.exec(`echo 'MaxSessions 2' > ${conf} && kill -HUP "$(cat /run/sshd.pid)"`);
    try {
      await new Promise((r) => setTimeout(r, 500));
      const before = await settledLogins(host);
      const out = await concurrent(operatorConnection(host), 10);
      assert.equal(out.length, 10);
      assert.equal((await settledLogins(host)) - before, 1, "still one login");
    } finally {
      await host.exec(`rm -f ${conf} && kill -HUP "$(cat /run/sshd.pid)"`);
      await new Promise((r) => setTimeout(r, 500));
    }
  });

  it("times out one script without breaking its siblings or the connection", async () => {
    const c = operatorConnection(host);
    const before = await settledLogins(host);
    const [slow, quick] = await Promise.allSettled([
      runScript(c, "sleep 30", { timeoutMs: 1000 }),
      runScript(c, "sleep 1.5; echo ok"),
    ]);
    assert.equal(slow.status, "rejected");
    assert.match(String((slow as PromiseRejectedResult).reason), /no answer within 1 s/);
    assert.equal(quick.status, "fulfilled");
    assert.equal((await runScript(c, "echo after")).stdout.trim(), "after");
    assert.equal((await settledLogins(host)) - before, 1);
  });

  it("fails a script whose connection the host drops, and reconnects for the next one", async () => {
    const c = operatorConnection(host);
    const before = await settledLogins(host);
    const running = runScript(c, "sleep 20; echo never").then(
      () => new Error("the script finished"),
      (e: Error) => e,
    );
    await new Promise((r) => setTimeout(r, 500));
    // The per-connection sshd process of the pooled connection (not the listener).
    await host.exec("pkill -f '^sshd: root[@]' || true");
    assert.match((await running).message, /connection (lost|closed|ended).*while the script ran/);
    // The connection is gone from the pool (or about to be): the next script logs in again.
    assert.equal((await runScript(c, "echo back")).stdout.trim(), "back");
    assert.equal((await settledLogins(host)) - before, 2);
  });

  it("refuses a wrong host key for every waiting script and keeps nothing in the pool", async () => {
    const wrong =
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const results = await Promise.allSettled(
      Array.from({ length: 3 }, () => runScript(operatorConnection(host, wrong), "echo no")),
    );
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.match(
        String((r as PromiseRejectedResult).reason),
        /does not match the pinned hostKey/,
      );
    }
    assert.equal(sshPool().entries.size, 0);
  });

  it("closes a connection left idle", async () => {
    sshPool().idleMs = 200;
    await runScript(operatorConnection(host), "true");
    assert.equal(sshPool().entries.size, 1);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(sshPool().entries.size, 0);
  });
});
