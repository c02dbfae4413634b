/**
 * Part 3, prototype: what connection reuse and fewer steps would save in the dynamic provider.
 * Runs the host scripts a `pulumi preview --refresh` runs on one production host (probe, root key,
 * the three managed files, the NixOS module which is skipped on Linux) three ways:
 *
 * - `today`: one SSH connection per step (what `components/ssh.ts` `runScript` does);
 * - `pooled`: one connection per host, one channel per step (a pool in the provider process);
 * - `batched`: one connection and one channel per host running all steps (one combined step).
 *
 * Uses the component's own `runScript`/`assembleScript`/`hostScript`, unchanged.
 */
import { Client, ConnectConfig } from "ssh2";
import { hostScript } from "../components/host";
import { assembleScript, Connection, runScript } from "../components/ssh";
import { CLIENT_FILES } from "../components/cacheClient";
import { DEFAULT_FRAGMENT_PATH } from "../components/cacheServer";
import { TestHost } from "../tests/hosts/harness";
import { acceptedLogins, log, loginsSince, median } from "./lib";

/** One host script with its inputs. */
interface Step {
  body: string;
  env: Record<string, string>;
}

/** The reads of one production host during `preview --refresh`. */
function refreshSteps(): Step[] {
  const read = (body: string, env: Record<string, string> = {}): Step => ({
    body,
    env: { ...env, ACTION: "read" },
  });
  return [
    read(hostScript("probe")),
    read(hostScript("client-key")),
    read(hostScript("file", "linux"), { FILE_PATH: CLIENT_FILES.knownHosts }),
    read(hostScript("file", "linux"), { FILE_PATH: CLIENT_FILES.sshConfigDropIn }),
    read(hostScript("file", "linux"), { FILE_PATH: CLIENT_FILES.nixConf }),
    read(hostScript("file", "nixos"), { FILE_PATH: DEFAULT_FRAGMENT_PATH }),
  ];
}

function connectionOf(h: TestHost): Connection {
  return {
    host: h.address,
    port: h.port,
    user: h.user,
    privateKey: h.privateKey,
    hostKey: h.hostKey,
    become: "none",
  };
}

function connect(c: Connection): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const expected = c.hostKey?.split(/\s+/)[1];
    const config: ConnectConfig = {
      host: c.host,
      port: c.port,
      username: c.user,
      privateKey: c.privateKey,
      readyTimeout: 30_000,
      hostVerifier: (key: Buffer) => key.toString("base64") === expected,
    };
    client.once("ready", () => resolve(client));
    client.once("error", reject);
    client.connect(config);
  });
}

function execOn(client: Client, script: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    client.exec("bash -s", (err, stream) => {
      if (err) return reject(err);
      let stdout = "";
      stream.on("data", (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on("data", () => undefined);
      stream.on("close", (code: number | null) => resolve({ code: code ?? 255, stdout }));
      stream.end(script);
    });
  });
}

function lastJson(stdout: string): unknown {
  return JSON.parse(stdout.trim().split("\n").pop() ?? "");
}

/** A refresh of one host's steps, one way; returns the parsed results. */
const strategies: Record<string, (c: Connection, steps: Step[]) => Promise<unknown[]>> = {
  async today(c, steps) {
    return Promise.all(
      steps.map(async (s) => {
        const r = await runScript(c, s.body, { env: s.env });
        if (r.code !== 0) throw new Error(`step failed: ${r.stdout}`);
        return lastJson(r.stdout);
      }),
    );
  },
  async pooled(c, steps) {
    const client = await connect(c);
    try {
      return await Promise.all(
        steps.map(async (s) => {
          const r = await execOn(client, assembleScript(s.body, s.env));
          if (r.code !== 0) throw new Error(`step failed: ${r.stdout}`);
          return lastJson(r.stdout);
        }),
      );
    } finally {
      client.end();
    }
  },
  async batched(c, steps) {
    const client = await connect(c);
    try {
      const parts = steps.map((s) => {
        const b64 = Buffer.from(assembleScript(s.body, s.env)).toString("base64");
        return `printf '%s' '${b64}' | base64 -d | bash | tail -n 1`;
      });
      const r = await execOn(client, parts.join("\n") + "\n");
      const lines = r.stdout.trim().split("\n");
      if (r.code !== 0 || lines.length !== steps.length)
        throw new Error(`batch failed: ${r.stdout}`);
      return lines.map((l) => JSON.parse(l) as unknown);
    } finally {
      client.end();
    }
  },
};

/** One measurement: a strategy on some hosts at once. */
export interface ReuseRun {
  strategy: string;
  hosts: number;
  seconds: number;
  loginsPerHost: number;
}

/** Everything the prototype measured. */
export interface ReuseResults {
  runs: ReuseRun[];
  steps: number;
  rounds: number;
}

/**
 * Runs the three strategies, interleaved, `rounds` times on 1 host and on all `hosts` at once.
 * The hosts need the component's files in place (run it with a configured stack) or not: the
 * reads work either way, and report what they find.
 */
export async function connectionReuseBench(
  hosts: TestHost[],
  rounds: number,
): Promise<ReuseResults> {
  const steps = refreshSteps();
  const runs: ReuseRun[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const group of [hosts.slice(0, 1), hosts]) {
      for (const [name, run] of Object.entries(strategies)) {
        const before = group.map(acceptedLogins);
        const start = process.hrtime.bigint();
        const results = await Promise.all(group.map((h) => run(connectionOf(h), steps)));
        const seconds = Number(process.hrtime.bigint() - start) / 1e9;
        const after = group.map(acceptedLogins);
        if (results.some((r) => r.length !== steps.length))
          throw new Error(`${name}: missing results`);
        const logins = group.map((_, i) => loginsSince(before[i], after[i], "root"));
        runs.push({
          strategy: name,
          hosts: group.length,
          seconds,
          loginsPerHost: Math.max(...logins),
        });
      }
    }
  }
  for (const hostsCount of [1, hosts.length]) {
    const line = Object.keys(strategies)
      .map((s) => {
        const m = median(
          runs.filter((r) => r.strategy === s && r.hosts === hostsCount).map((r) => r.seconds),
        );
        return `${s} ${(m ?? 0).toFixed(3)} s`;
      })
      .join(", ");
    log(`connection reuse, ${hostsCount} host(s), ${steps.length} reads each: ${line}`);
  }
  return { runs, steps: steps.length, rounds };
}
