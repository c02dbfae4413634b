/**
 * Part 3: connection reuse in isolation. Runs the host scripts a `pulumi preview --refresh` runs
 * on one production host (probe, root key, the three managed files, the NixOS module which is
 * skipped on Linux) with the component's own `runScript`, both ways, from this process:
 *
 * - `per-step`: one SSH connection per script (`reuse: false`, the behaviour before the pool);
 * - `reuse`: the provider's pool, one connection per host, one channel per script (the default).
 *
 * Concurrently like the engine issues them, on 1 host and on all production hosts at once; the
 * pool is emptied after each run so every run pays its own logins.
 */
import { hostScript } from "../components/host";
import { closeSshConnections, Connection, runScript } from "../components/ssh";
import { CLIENT_FILES } from "../components/cacheClient";
import { DEFAULT_FRAGMENT_PATH } from "../components/cacheServer";
import { operatorConnection } from "../tests/e2e/helpers";
import { acceptedLogins, loginsSince, TestHost } from "../tests/hosts/harness";
import { log, median } from "./lib";

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

function lastJson(stdout: string): unknown {
  return JSON.parse(stdout.trim().split("\n").pop() ?? "");
}

/** The reads of one host, one way; returns the parsed results. */
function refreshHost(c: Connection, steps: Step[], reuse: boolean): Promise<unknown[]> {
  return Promise.all(
    steps.map(async (s) => {
      const r = await runScript(c, s.body, { env: s.env, reuse });
      if (r.code !== 0) throw new Error(`step failed: ${r.stderr}`);
      return lastJson(r.stdout);
    }),
  );
}

/** The strategies measured, in order. */
export const STRATEGIES = ["per-step", "reuse"] as const;

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
 * Runs both strategies, interleaved, `rounds` times on 1 host and on all `hosts` at once.
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
      for (const name of STRATEGIES) {
        const before = group.map(acceptedLogins);
        const start = process.hrtime.bigint();
        const results = await Promise.all(
          group.map((h) => refreshHost(operatorConnection(h), steps, name === "reuse")),
        );
        const seconds = Number(process.hrtime.bigint() - start) / 1e9;
        closeSshConnections();
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
    const line = STRATEGIES.map((s) => {
      const m = median(
        runs.filter((r) => r.strategy === s && r.hosts === hostsCount).map((r) => r.seconds),
      );
      return `${s} ${(m ?? 0).toFixed(3)} s`;
    }).join(", ");
    log(`connection reuse, ${hostsCount} host(s), ${steps.length} reads each: ${line}`);
  }
  return { runs, steps: steps.length, rounds };
}
