/**
 * Network emulation for the benchmarks: a Toxiproxy server (built by `scripts/bench` from the Go
 * module proxy, github.com/Shopify/toxiproxy/v2) with one proxy in front of staging's sshd and
 * latency + bandwidth toxics per profile. This kernel has no `netem` qdisc, so latency is added in
 * user space. Only loopback addresses of the bench's own range are used.
 */
import { ChildProcess, spawn } from "child_process";
import * as net from "net";
import { log } from "./lib";

/** A network between production and staging. */
export interface NetworkProfile {
  id: string;
  /** Label in the report. */
  label: string;
  /** Round-trip time added, milliseconds (0: none). */
  rttMs: number;
  /** Bandwidth in each direction, Mbit/s (undefined: not limited). */
  mbit?: number;
  /** False: production reaches staging directly (no proxy in the path). */
  proxied: boolean;
}

/** The four profiles of issue 15. */
export const PROFILES: NetworkProfile[] = [
  { id: "loopback", label: "loopback", rttMs: 0, proxied: false },
  { id: "lan", label: "LAN (0.5 ms RTT, 1 Gbit/s)", rttMs: 0.5, mbit: 1000, proxied: true },
  {
    id: "region",
    label: "same region (10 ms RTT, 500 Mbit/s)",
    rttMs: 10,
    mbit: 500,
    proxied: true,
  },
  {
    id: "cross",
    label: "cross-region (80 ms RTT, 100 Mbit/s)",
    rttMs: 80,
    mbit: 100,
    proxied: true,
  },
];

/**
 * Profiles run only when named in NSC_BENCH_PROFILES: a slow WAN link (a VPN or a small office
 * line), where compression of a compressible closure is expected to pay.
 */
export const EXTRA_PROFILES: NetworkProfile[] = [
  {
    id: "slow",
    label: "slow WAN (80 ms RTT, 20 Mbit/s)",
    rttMs: 80,
    mbit: 20,
    proxied: true,
  },
];

/** A latency/bandwidth toxic as Toxiproxy's API takes it. */
export interface Toxic {
  name: string;
  type: "latency" | "bandwidth";
  stream: "upstream" | "downstream";
  attributes: Record<string, number>;
}

/**
 * The toxics of a profile: half the RTT of latency in each direction, and the bandwidth in each
 * direction. Toxiproxy's latency is whole milliseconds, and its jitter draws a whole number in
 * [-j, j) ms added to the latency (a negative total waits nothing); so half an RTT below 1 ms is
 * emulated as latency 0 with jitter j = 4 × RTT/2 + 1 (mean wait (j - 1) / 4 ms = RTT/2:
 * for LAN, j = 2, each chunk waits 0 or 1 ms, 0.25 ms on average).
 */
export function toxicsOf(p: NetworkProfile): Toxic[] {
  const toxics: Toxic[] = [];
  for (const stream of ["upstream", "downstream"] as const) {
    if (p.rttMs > 0) {
      const half = p.rttMs / 2;
      const attributes = Number.isInteger(half)
        ? { latency: half, jitter: 0 }
        : { latency: 0, jitter: Math.round(4 * half + 1) };
      toxics.push({ name: `latency-${stream}`, type: "latency", stream, attributes });
    }
    if (p.mbit) {
      // Toxiproxy's rate is KB/s with KB = 1000 bytes.
      const rate = Math.round((p.mbit * 1e6) / 8 / 1000);
      toxics.push({ name: `bandwidth-${stream}`, type: "bandwidth", stream, attributes: { rate } });
    }
  }
  return toxics;
}

/** A running Toxiproxy server with one proxy (`listen` -> `upstream`). */
export class Toxiproxy {
  private constructor(
    private readonly child: ChildProcess,
    private readonly api: string,
    readonly listen: string,
  ) {}

  /**
   * Starts `binary` on `address:apiPort` and creates the proxy `listen` (same address, port 22)
   * -> `upstream`. Stopped by {@link stop}; also killed when this process exits.
   */
  static async start(
    binary: string,
    address: string,
    apiPort: number,
    upstream: string,
  ): Promise<Toxiproxy> {
    const child = spawn(binary, ["-host", address, "-port", String(apiPort)], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    const kill = () => child.kill("SIGKILL");
    process.once("exit", kill);
    const api = `http://${address}:${apiPort}`;
    const proxy = new Toxiproxy(child, api, `${address}:22`);
    const deadline = Date.now() + 10_000;
    while (!(await tcpAccepts(address, apiPort))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        kill();
        throw new Error(`toxiproxy-server on ${address}:${apiPort} did not start: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await proxy.call("POST", "/proxies", {
      name: "staging-ssh",
      listen: proxy.listen,
      upstream,
      enabled: true,
    });
    log(`toxiproxy: ${proxy.listen} -> ${upstream} (pid ${child.pid})`);
    return proxy;
  }

  /** Replaces the proxy's toxics by the profile's. */
  async setProfile(p: NetworkProfile): Promise<void> {
    const existing = (await this.call("GET", "/proxies/staging-ssh/toxics")) as { name: string }[];
    for (const t of existing) await this.call("DELETE", `/proxies/staging-ssh/toxics/${t.name}`);
    for (const t of toxicsOf(p)) {
      await this.call("POST", "/proxies/staging-ssh/toxics", { ...t, toxicity: 1 });
    }
  }

  /** Stops the server (and with it the proxy and its connections). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    const t = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await gone;
    clearTimeout(t);
  }

  private async call(method: string, route: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${this.api}${route}`, {
      method,
      headers: body ? { "content-type": "application/json" } : undefined,
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`toxiproxy ${method} ${route}: HTTP ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  }
}

function tcpAccepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
