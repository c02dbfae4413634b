/**
 * Part 1b (issue 15): substitution over emulated networks. Production reaches staging's sshd
 * through a Toxiproxy proxy (bench/toxiproxy.ts) with the latency and bandwidth of each profile;
 * the three closure shapes move through every mode:
 *
 *   - raw SSH stream (`tar` of the closure over one connection): the limit
 *   - `ssh://` (the component's substituter) and `ssh-ng://`
 *   - `http` through SSH: an HTTP binary cache on staging (Debian's nginx over a `file://` binary
 *     cache that `nix copy --to file://` fills), reached by production through one SSH local
 *     forward restricted to that port (`permitopen`), so Nix's HTTP substituter queries and
 *     downloads in parallel (`http-connections`, default 25)
 *   - `fetch`: the component's `nix-ssh-cache-fetch` (the file `up` installs; the bench runs a
 *     copy of its own): one SSH session to the same serve user (`nix-store --serve`: the
 *     closure, then the missing paths' infos and NARs pipelined), then Nix adds them from a
 *     temporary `file://` cache, checking staging's signatures as for any substituter
 *   - `max-connections=8` on `ssh://`: only on Nix versions where it works (>= 2.32)
 *   - compression (issue 23): `ssh://?compress=true` and `nix-ssh-cache-fetch --compress` (both
 *     ssh's zlib; staging's serve user is forced to `nix-store --serve`, so nothing else, e.g.
 *     zstd, can run there without changing it), on the compressible `text` shape and the
 *     incompressible ones
 *
 * Building locally is independent of the network: its figures come from the loopback section.
 * Everything set up here is removed again, also on failure.
 */
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../tests/e2e/pulumi";
import { TestHost } from "../tests/hosts/harness";
import { log } from "./lib";
import { Closure, deleteOnProduction, Run, runVariant, sh, Variant } from "./substitution";
import { EXTRA_PROFILES, NetworkProfile, PROFILES, Toxiproxy } from "./toxiproxy";

/** Where the bench's HTTP binary cache lives on staging (host-own /var/lib). */
const CACHE_DIR = "/var/lib/nsc-bench/binary-cache";
const STATE_DIR = "/var/lib/nsc-bench";
const HTTP_PORT = 5080;
const HTTP_USER = "nix-http";
const HTTP_DROP_IN = "/etc/ssh/sshd_config.d/nix-ssh-cache-bench-http.conf";
const HTTP_KEYS = "/etc/ssh/nix-ssh-cache-bench-http.keys";
const TOXIPROXY_API_PORT = 8474;
/**
 * The component's closure fetcher on production: the file `up` installs in /usr/local/sbin
 * (`CacheClient`'s `fetcher`), from this checkout, in the bench's own directory, so the bench
 * measures exactly the checkout's file.
 */
const FETCHER = `${STATE_DIR}/nix-ssh-cache-fetch`;

/** Everything the network section measured. */
export interface NetworkResults {
  profiles: NetworkProfile[];
  modes: Variant[];
  /** runs[profileId][shapeAttr][modeId] */
  runs: Record<string, Record<string, Record<string, Run>>>;
  /** Seconds to open the SSH tunnel (one login) per profile. */
  tunnelSeconds: Record<string, number>;
  /** Seconds `nix copy --to file://` took on staging to fill the HTTP cache, all shapes. */
  cacheFillSeconds?: number;
  /** Bytes of the file:// cache. */
  cacheBytes?: number;
  /** `nix-store --version` on production. */
  nixVersion: string;
  /** Closure NAR bytes / gzip -6 bytes of (up to) its first 32 MiB, per shape: compressibility. */
  gzipRatio: Record<string, number>;
  /** Whether max-connections > 1 was measured (Nix >= 2.32), and why not. */
  maxConnections: { run: boolean; reason: string };
  errors: string[];
}

/** An empty result. */
export function emptyNetwork(): NetworkResults {
  return {
    profiles: [],
    modes: [],
    runs: {},
    tunnelSeconds: {},
    gzipRatio: {},
    nixVersion: "",
    maxConnections: { run: false, reason: "" },
    errors: [],
  };
}

/** `[major, minor]` of `nix-store (Nix) 2.8.0`, or undefined. */
export function nixVersionOf(text: string): [number, number] | undefined {
  const m = /\b(\d+)\.(\d+)(?:\.\d+)?/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/**
 * Whether `max-connections` > 1 works on `ssh://` / `ssh-ng://` substituters of this Nix: it hangs
 * up to 2.31 (NixOS/nix issue 14615, fixed in 2.32; measured here on 2.8: > 10 min).
 */
export function maxConnectionsWorks(version: [number, number] | undefined): boolean {
  if (!version) return false;
  const [major, minor] = version;
  return major > 2 || (major === 2 && minor >= 32);
}

/**
 * The shapes the compression modes run on: one large incompressible path and the compressible
 * one. Along the chain the round trips decide, not the bytes (and `ssh://` alone takes 90 s
 * cross-region there); the mixed closure is incompressible like `large`.
 */
export const COMPRESSION_SHAPES = ["large", "text"];

/** The modes of the network section. */
export function networkModes(
  stagingName: string,
  timeoutSeconds: number,
  withMaxConnections: boolean,
): Variant[] {
  const t = timeoutSeconds;
  const modes: Variant[] = [
    { id: "raw", label: "raw SSH stream (the limit)", kind: "raw", aes: false, timeoutSeconds: t },
    {
      id: "ssh",
      label: "ssh:// (component default)",
      kind: "cache",
      aes: false,
      timeoutSeconds: t,
    },
    {
      id: "ng",
      label: "ssh-ng://",
      kind: "cache",
      substituter: `ssh-ng://nix-ssh-ng@${stagingName}`,
      aes: false,
      timeoutSeconds: t,
    },
    {
      id: "http",
      label: "HTTP cache through an SSH forward",
      kind: "cache",
      aes: false,
      timeoutSeconds: t,
      command: (c) => `bash ${STATE_DIR}/fetch-http.sh ${c.out}`,
    },
    {
      id: "fetch",
      label: "nix-ssh-cache-fetch (one SSH session)",
      kind: "cache",
      aes: false,
      timeoutSeconds: t,
      command: (c) => `${FETCHER} --quiet --no-fallback ${c.out}`,
    },
    {
      id: "ssh-compress",
      label: "ssh://?compress=true (ssh zlib)",
      kind: "cache",
      substituter: `ssh://nix-ssh@${stagingName}?compress=true`,
      onlyShapes: COMPRESSION_SHAPES,
      aes: false,
      timeoutSeconds: t,
    },
    {
      id: "fetch-compress",
      label: "nix-ssh-cache-fetch --compress (ssh zlib)",
      kind: "cache",
      aes: false,
      timeoutSeconds: t,
      command: (c) => `${FETCHER} --quiet --no-fallback --compress ${c.out}`,
      onlyShapes: COMPRESSION_SHAPES,
    },
  ];
  if (withMaxConnections) {
    modes.push({
      id: "ssh-mc8",
      label: "ssh://?max-connections=8",
      kind: "cache",
      substituter: `ssh://nix-ssh@${stagingName}?max-connections=8`,
      aes: false,
      timeoutSeconds: t,
    });
  }
  return modes;
}

/** nginx serving the file:// cache on staging's address (Debian's nginx-light). */
function nginxConfig(stage: TestHost): string {
  return `worker_processes 1;
pid ${STATE_DIR}/nginx.pid;
error_log ${STATE_DIR}/nginx-error.log warn;
user nobody nogroup;
events { worker_connections 512; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path ${STATE_DIR}/nginx-tmp/body;
  proxy_temp_path ${STATE_DIR}/nginx-tmp/proxy;
  fastcgi_temp_path ${STATE_DIR}/nginx-tmp/fastcgi;
  uwsgi_temp_path ${STATE_DIR}/nginx-tmp/uwsgi;
  scgi_temp_path ${STATE_DIR}/nginx-tmp/scgi;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
  default_type application/octet-stream;
  server {
    listen ${stage.address}:${HTTP_PORT};
    root ${CACHE_DIR};
  }
}
`;
}

/**
 * Staging side: fills the file:// cache, starts nginx, creates the tunnel-only user (its key may
 * only forward to nginx's port). Production side: the HTTP fetch script.
 */
async function prepare(
  stage: TestHost,
  prod: TestHost,
  closures: Closure[],
  results: NetworkResults,
): Promise<void> {
  const outs = closures.map((c) => c.out).join(" ");
  const s = Date.now();
  await sh(
    stage,
    `install -d -m 755 ${STATE_DIR} ${CACHE_DIR} ${STATE_DIR}/nginx-tmp
     nix --extra-experimental-features nix-command copy --to 'file://${CACHE_DIR}?compression=none' ${outs}
     chmod -R a+rX ${CACHE_DIR}`,
  );
  results.cacheFillSeconds = (Date.now() - s) / 1000;
  results.cacheBytes = Number((await sh(stage, `du -sb ${CACHE_DIR} | cut -f1`)).trim());
  await sh(stage, `cat > ${STATE_DIR}/nginx.conf`, nginxConfig(stage));
  await sh(stage, `nginx -e ${STATE_DIR}/nginx-error.log -c ${STATE_DIR}/nginx.conf`);
  const prodRootKey = (await sh(prod, "cat /root/.ssh/id_ed25519.pub")).trim();
  const permit = `${stage.address}:${HTTP_PORT}`;
  await sh(
    stage,
    `getent passwd ${HTTP_USER} >/dev/null || useradd --system --home-dir /var/empty --no-create-home --shell /bin/sh ${HTTP_USER}
     usermod -p '*' ${HTTP_USER}
     printf '%s\\n' 'restrict,port-forwarding,permitopen="${permit}",command="/bin/false" ${prodRootKey}' > ${HTTP_KEYS}
     cat > ${HTTP_DROP_IN}
     /usr/sbin/sshd -t
     kill -HUP "$(cat /run/sshd.pid)"`,
    `Match User ${HTTP_USER}
  AuthorizedKeysFile ${HTTP_KEYS}
  AllowTcpForwarding local
  PermitOpen ${permit}
  ForceCommand /bin/false
  PermitTTY no
  X11Forwarding no
  AllowAgentForwarding no
  AllowStreamLocalForwarding no
  PermitTunnel no
  GatewayPorts no
`,
  );
  // Nix's narinfo disk cache would remember the previous run's lookups: start without it.
  // (Setting narinfo-cache-positive-ttl to 0 instead also expires the in-memory path-info cache,
  // so every path's narinfo would be fetched again: measured, 2.5x slower on the chain.)
  await sh(
    prod,
    `install -d -m 700 ${STATE_DIR}; cat > ${STATE_DIR}/fetch-http.sh`,
    `set -euo pipefail
rm -f /root/.cache/nix/binary-cache-v6.sqlite /root/.cache/nix/binary-cache-v6.sqlite-*
nix-store --realise "$1" --option substituters http://${prod.address}:${HTTP_PORT}
`,
  );
  await new Promise((r) => setTimeout(r, 300)); // sshd re-execs on HUP
}

/** The SSH local forward on production: prodAddress:5080 -> staging's nginx, one login. */
async function startTunnel(stage: TestHost, prod: TestHost): Promise<number> {
  const s = Date.now();
  await sh(
    prod,
    `ssh -f -N -o BatchMode=yes -o ExitOnForwardFailure=yes -o ServerAliveInterval=5 \\
       -L ${prod.address}:${HTTP_PORT}:${stage.address}:${HTTP_PORT} ${HTTP_USER}@${stage.fqdn}`,
  );
  return (Date.now() - s) / 1000;
}

async function stopTunnel(stage: TestHost, prod: TestHost): Promise<void> {
  // Exactly the ssh process with this forward (production's address is the bench's own).
  await sh(
    prod,
    `for pid in $(pgrep -f -- '^ssh -f -N .* -L ${prod.address}:${HTTP_PORT}:${stage.address}:${HTTP_PORT} '); do kill "$pid" || true; done`,
  );
}

async function cleanup(stage: TestHost, prod: TestHost, hostsLine: string): Promise<void> {
  const steps: [string, () => Promise<unknown>][] = [
    ["tunnel", () => stopTunnel(stage, prod)],
    ["production /etc/hosts", () => routeStaging(prod, stage, hostsLine, stage.address)],
    [
      "nginx",
      () =>
        sh(
          stage,
          `[ -s ${STATE_DIR}/nginx.pid ] && kill "$(cat ${STATE_DIR}/nginx.pid)" || true; sleep 0.2`,
        ),
    ],
    [
      "tunnel user",
      () =>
        sh(
          stage,
          `rm -f ${HTTP_DROP_IN} ${HTTP_KEYS}; kill -HUP "$(cat /run/sshd.pid)"; userdel ${HTTP_USER} || true`,
        ),
    ],
    ["staging files", () => sh(stage, `rm -rf ${STATE_DIR}`)],
    ["production files", () => sh(prod, `rm -rf ${STATE_DIR}`)],
  ];
  for (const [what, f] of steps) {
    await f().catch((e: Error) => log(`network cleanup (${what}) failed: ${e.message}`));
  }
}

/** Points production's name for staging at `address` (the proxy or staging itself). */
async function routeStaging(
  prod: TestHost,
  stage: TestHost,
  original: string,
  address: string,
): Promise<void> {
  const line = original.replace(/^\S+/, address);
  await sh(
    prod,
    `grep -v '[[:space:]]${stage.fqdn.replace(/\./g, "\\.")}\\b' /etc/hosts > /etc/hosts.nsc-bench || true
     printf '%s\\n' '${line}' >> /etc/hosts.nsc-bench
     cat /etc/hosts.nsc-bench > /etc/hosts; rm -f /etc/hosts.nsc-bench`,
  );
}

/**
 * How compressible a closure is for ssh's zlib (level 6, like `gzip -6`): its NARs' bytes over
 * the gzip -6 bytes, on the first 32 MiB of the NAR stream (enough to judge, cheap on 2 cores).
 */
async function gzipRatio(stage: TestHost, c: Closure): Promise<number> {
  const [raw, gz] = (
    await sh(
      stage,
      `{ for p in ${c.paths.join(" ")}; do nix-store --dump "$p"; done || true; } | head -c 33554432 > /tmp/nsc-bench-sample
       wc -c < /tmp/nsc-bench-sample; gzip -6 -c /tmp/nsc-bench-sample | wc -c; rm -f /tmp/nsc-bench-sample`,
    )
  )
    .trim()
    .split("\n")
    .map(Number);
  return raw / gz;
}

/** Options of {@link networkBench}. */
export interface NetworkOptions {
  /** 127.0.0.N for the proxy: an address of the bench's own range no host uses. */
  proxyAddress: string;
  /** Time bound of one run, seconds. */
  runTimeout: number;
  /** Profiles to run (ids), default all. */
  profiles?: string[];
  /** Modes to run (ids; the raw stream always runs), default all. */
  modes?: string[];
  /** Shapes to run (attrs), default all. */
  shapes?: string[];
  /** Seconds left in the whole bench's budget. */
  secondsLeft: () => number;
}

/** Runs the network section on a configured stack's staging and one production host. */
export async function networkBench(
  stage: TestHost,
  prod: TestHost,
  allClosures: Closure[],
  o: NetworkOptions,
  results: NetworkResults,
): Promise<void> {
  results.nixVersion = (await sh(prod, "nix-store --version")).trim();
  const works = maxConnectionsWorks(nixVersionOf(results.nixVersion));
  results.maxConnections = {
    run: works,
    reason: works
      ? "Nix >= 2.32: measured"
      : `not run: ${results.nixVersion} is older than 2.32, where max-connections > 1 on ssh:// and ssh-ng:// hangs (NixOS/nix#14615; section 1 shows the hang)`,
  };
  results.modes = networkModes(stage.fqdn, o.runTimeout, works).filter(
    (v) => v.id === "raw" || !o.modes || o.modes.includes(v.id),
  );
  const unknown = [...(o.modes ?? [])].filter((m) => !results.modes.some((v) => v.id === m));
  if (unknown.length) throw new Error(`NSC_BENCH_MODES: unknown mode(s) ${unknown.join(", ")}`);
  const closures = allClosures.filter((c) => !o.shapes || o.shapes.includes(c.shape.attr));
  if (!closures.length) throw new Error(`NSC_BENCH_SHAPES: no shape among ${o.shapes?.join(",")}`);
  for (const c of closures) results.gzipRatio[c.shape.attr] = await gzipRatio(stage, c);
  results.profiles = o.profiles
    ? [...PROFILES, ...EXTRA_PROFILES].filter((p) => o.profiles?.includes(p.id))
    : PROFILES;
  const hostsLine = (
    await sh(
      prod,
      `grep '[[:space:]]${stage.fqdn.replace(/\./g, "\\.")}\\b' /etc/hosts | head -n 1`,
    )
  ).trim();
  if (!hostsLine) throw new Error(`production has no /etc/hosts line for ${stage.fqdn}`);
  const binary = process.env.NSC_TOXIPROXY ?? path.join(repoRoot, ".tools", "toxiproxy-server");
  let proxy: Toxiproxy | undefined;
  try {
    await sh(
      prod,
      `install -d -m 700 ${STATE_DIR}; cat > ${FETCHER}.tmp; chmod 755 ${FETCHER}.tmp; mv ${FETCHER}.tmp ${FETCHER}`,
      fs.readFileSync(
        path.join(repoRoot, "components", "remote", "nix-ssh-cache-fetch.pl"),
        "utf8",
      ),
    );
    // The HTTP cache (a copy of the closures, nginx, a tunnel) only when its mode runs.
    const http = results.modes.some((v) => v.id === "http");
    if (http) {
      await prepare(stage, prod, closures, results);
      log(
        `network: file:// cache filled in ${results.cacheFillSeconds?.toFixed(1)} s (${((results.cacheBytes ?? 0) / 1e6).toFixed(0)} MB); nginx on ${stage.address}:${HTTP_PORT}`,
      );
    }
    proxy = await Toxiproxy.start(
      binary,
      o.proxyAddress,
      TOXIPROXY_API_PORT,
      `${stage.address}:22`,
    );
    for (const p of results.profiles) {
      if (o.secondsLeft() < 60) {
        results.errors.push(`no time left for profile ${p.id}`);
        break;
      }
      await proxy.setProfile(p);
      await routeStaging(prod, stage, hostsLine, p.proxied ? o.proxyAddress : stage.address);
      if (http) results.tunnelSeconds[p.id] = await startTunnel(stage, prod);
      const byShape: Record<string, Record<string, Run>> = {};
      results.runs[p.id] = byShape;
      try {
        for (const c of closures) {
          byShape[c.shape.attr] = {};
          for (const v of results.modes) {
            if (v.onlyShapes && !v.onlyShapes.includes(c.shape.attr)) continue;
            await deleteOnProduction(prod, c);
            const run = await runVariant(prod, stage, c, v, 1);
            byShape[c.shape.attr][v.id] = run;
            log(
              `network ${p.id} ${c.shape.attr} ${v.id}: ${run.ok ? `${run.seconds.toFixed(2)} s` : `FAILED (${run.error})`}, ${run.connections} logins`,
            );
          }
          await deleteOnProduction(prod, c);
        }
      } finally {
        await stopTunnel(stage, prod);
      }
    }
  } finally {
    await proxy?.stop().catch((e: Error) => log(`toxiproxy stop failed: ${e.message}`));
    await cleanup(stage, prod, hostsLine);
  }
}
