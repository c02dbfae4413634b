/**
 * Test hosts: real "servers" on one machine, for end-to-end tests.
 *
 * Each host is `unshare --pid --fork --kill-child --mount --propagation private --mount-proc --uts`
 * running `host-init.sh` as PID 1 of its namespace. The init bind-mounts the host's own
 * `/etc` (a `cp -a` copy of the machine's), `/nix` (empty), `/root`, `/var/lib`, `/var/log`,
 * `/run`, `/tmp`, `/home`, starts `sshd` on `<address>:22` and (optionally) `nix-daemon`, then
 * stays as the namespace's child reaper.
 *
 * Inside a host (no systemd), by default: sshd writes `/run/sshd.pid`, logs to `/var/log/sshd.log`;
 * nix-daemon is started detached with `/run/nix-daemon.pid`, logs to `/var/log/nix-daemon.log`.
 * {@link HostSpec.flavours} change that as real servers differ (no pid files, Nix only in a
 * profile, a symlinked nix.conf, ...). The helpers (`stopSshd`, `startNixDaemon`, ...) find the
 * services by what they listen on (`tests/hosts/host-services.sh`), so they work for every flavour.
 *
 * With a `systemd-*` flavour, systemd is the host's PID 1 instead (host-init.sh execs it after the
 * same preparation, as systemd-nspawn starts a container): the namespace also gets its own IPC and
 * cgroup namespace, rooted at a cgroup the harness creates for the host (under the machine's cgroup2
 * hierarchy), a private /dev, read-only /sys, /proc/sys and machine root; services are the
 * flavour's units. Such a host stops by SIGKILL of its PID 1, which ends its whole PID namespace;
 * then its cgroups are removed.
 *
 * Callers MUST tear down: `after(() => hosts.teardown())` or try/finally. A process 'exit'
 * handler SIGKILLs the inits and removes the state dir as a safety net only.
 *
 * Needs root and the Debian packages: openssh-server, openssh-client, nix-bin, sudo,
 * util-linux (unshare, nsenter), procps (ps), passwd (useradd).
 */
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";

export interface HostSpec {
  /** Short name, e.g. "stage" -> FQDN "stage.test". */
  name: string;
  /** Run nix-daemon in the host. Default true. */
  nixDaemon?: boolean;
  /** Login user of the runner. Default "root"; another name (e.g. "ship") is created with password-less sudo. */
  loginUser?: "root" | string;
  /** Root has its own `~/.ssh/id_ed25519` pair. Default true; false => root has no SSH key at all. */
  rootKey?: boolean;
  /** Login shell of the login user (root too): sh (dash), bash, zsh or fish. Default "bash". */
  loginShell?: "sh" | "bash" | "zsh" | "fish";
  /**
   * sudo policy of a non-root login user, always password-less: "nopasswd" (Debian's defaults),
   * "requiretty" (`Defaults requiretty`: sudo refuses without a terminal), "use_pty"
   * (`Defaults use_pty`). Default "nopasswd".
   */
  sudoPolicy?: "nopasswd" | "requiretty" | "use_pty";
  /**
   * sudo's `secure_path` (`Defaults secure_path="..."`), e.g. one without Nix's directory.
   * Default: Debian's (which holds /usr/bin, where nix-bin puts Nix).
   */
  securePath?: string;
  /**
   * Host flavours: how this host differs from today's defaults, as real servers do. Each name is
   * a file `tests/hosts/flavours/<name>.sh`, sourced by host-init.sh inside the host after users
   * and Nix dirs are set up and before services start (env `NSC_FLAVOURS`, space separated).
   * Default none (today's host); e.g. `["nixos"]`. See {@link FLAVOURS}.
   */
  flavours?: string[];
}

/**
 * The flavours in `tests/hosts/flavours/`:
 * - `today`: the defaults (pid files in /run).
 * - `no-pidfiles`: nix-daemon started by hand without a pid file; sshd with `PidFile none`.
 * - `sshd-custom-pidfile`: sshd with `PidFile /var/run/sshd-custom.pid`.
 * - `nix-in-profile`: Nix only in /nix/var/nix/profiles/default/bin (PATH set in /etc/profile.d
 *   only; /usr/bin has no Nix inside the host).
 * - `signing-key-conflict`: nix.conf already has a `secret-key-files` line naming another key.
 * - `own-substituters`: nix.conf has its own `substituters` (a file:// cache) and trusted key.
 * - `nixconf-symlink-ro`: /etc/nix/nix.conf is a symlink to a file on a read-only mount.
 * - `root-ssh-config-override`: root's ~/.ssh/config has `Host *` / `StrictHostKeyChecking no`.
 * - `nixos`: /etc/NIXOS, a user's configuration.nix and a `nixos-rebuild` stand-in that evaluates
 *   it (flavours/nixos-eval.nix) and applies the result as NixOS would.
 * - `second-sshd`: a second sshd beside the one on port 22 (an SFTP-only instance with its own
 *   `-f` config, port 2222 and PidFile), in the same /proc.
 * - `systemd-debian`: systemd as PID 1; Debian's ssh.service and nix-daemon.socket + .service.
 * - `systemd-ubuntu`: systemd as PID 1; socket-activated ssh.socket (ssh.service started by the
 *   first connection, as on Ubuntu 22.10+); nix-daemon.socket + .service.
 * - `systemd-nixos`: systemd as PID 1; NixOS-style sshd.service (`sshd -D -f`, no ExecReload) and
 *   socket-activated nix-daemon.socket.
 */
export const FLAVOURS = [
  "today",
  "no-pidfiles",
  "sshd-custom-pidfile",
  "nix-in-profile",
  "signing-key-conflict",
  "own-substituters",
  "nixconf-symlink-ro",
  "root-ssh-config-override",
  "nixos",
  "second-sshd",
  "systemd-debian",
  "systemd-ubuntu",
  "systemd-nixos",
] as const;

/** Flavours whose host runs systemd as PID 1 (host-init.sh execs it). */
const SYSTEMD_FLAVOURS: ReadonlySet<string> = new Set([
  "systemd-debian",
  "systemd-ubuntu",
  "systemd-nixos",
]);

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Text written to the script's stdin. Default: none. */
  input?: string;
  /** Throw when the exit code is not 0. Default true. */
  check?: boolean;
}

export interface TestHost {
  name: string;
  fqdn: string;
  /** 127.0.0.2, 127.0.0.3, ... */
  address: string;
  port: number;
  /** Login user for the runner. */
  user: string;
  /** OpenSSH private key text the runner uses (same for all hosts). */
  privateKey: string;
  /** Path of that private key file (mode 0600), handy for `ssh -i`. */
  privateKeyPath: string;
  /** The host's ed25519 SSH host public key: "ssh-ed25519 AAAA..." (no comment). */
  hostKey: string;
  /** Outer PID of the host's namespace init (PID 1 inside). */
  initPid: number;
  /** The host's PID 1: "script" (host-init.sh) or "systemd" (a systemd-* flavour). */
  init: "script" | "systemd";
  /** This host's state dir (outer path): etc/, nix/, root/, var-log/, init.log, ... */
  stateDir: string;
  /** Runs `bash -c script` as root inside the host (nsenter), no SSH. */
  exec(script: string, opts?: ExecOptions): Promise<ExecResult>;
  stopSshd(): Promise<void>;
  startSshd(): Promise<void>;
  stopNixDaemon(): Promise<void>;
  startNixDaemon(): Promise<void>;
}

export interface TestHosts {
  hosts: TestHost[];
  byName(name: string): TestHost;
  stateDir: string;
  /** Kills exactly the inits started (SIGTERM, then SIGKILL), waits for them, removes the state dir. */
  teardown(): Promise<void>;
}

/** Generous: under load (many hosts starting at once on a busy machine) `cp -a /etc` alone took 13 s. */
const READY_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 2_000;
const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** PATH of `exec` inside a host: an administrator's login PATH (Nix's profile first). */
const HOST_EXEC_PATH = `/nix/var/nix/profiles/default/bin:${HOST_PATH}`;

/** undefined when the e2e tests can run here; otherwise why not. */
export function e2eSkipReason(): string | undefined {
  const uid = process.getuid ? process.getuid() : -1;
  if (process.platform !== "linux") return `needs Linux (platform ${process.platform})`;
  if (uid !== 0) return `needs root (uid ${uid})`;
  const tools: [string, string][] = [
    ["nix-daemon", "nix-bin"],
    ["nix-store", "nix-bin"],
    ["sshd", "openssh-server"],
    ["ssh", "openssh-client"],
    ["ssh-keygen", "openssh-client"],
    ["sudo", "sudo"],
    ["unshare", "util-linux"],
    ["nsenter", "util-linux"],
    ["useradd", "passwd"],
  ];
  for (const [tool, pkg] of tools) {
    if (!onPath(tool)) return `${pkg} not installed (${tool} not found)`;
  }
  if (!fs.existsSync("/usr/sbin/sshd")) return "openssh-server not installed (/usr/sbin/sshd)";
  return undefined;
}

function onPath(tool: string): boolean {
  return HOST_PATH.split(":").some((dir) => {
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The directory of host-init.sh, host-services.sh and flavours/ (absolute). */
function hostDir(): string {
  return path.dirname(initScriptPath());
}

function initScriptPath(): string {
  const candidates = [
    path.join(__dirname, "host-init.sh"), // ts-node / source tree
    path.resolve(__dirname, "../../../tests/hosts/host-init.sh"), // build/tests/hosts -> tests/hosts
  ];
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Error(`host-init.sh not found; looked in: ${candidates.join(", ")}`);
  return found;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function tcpAccepts(address: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: address, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

/** Registry of inits this process started, for the 'exit' safety net. */
const liveRuns = new Set<{ pids: number[]; stateDir: string; cgroups: string[] }>();
let exitHandlerInstalled = false;
function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on("exit", () => {
    for (const run of liveRuns) {
      for (const pid of run.pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          /* already gone */
        }
      }
      try {
        fs.rmSync(run.stateDir, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
      for (const cg of run.cgroups) removeCgroupTree(cg);
    }
  });
}

/**
 * The machine's cgroup2 hierarchy: where it is mounted and this process's cgroup in it
 * (`/sys/fs/cgroup/unified` + `/` on a hybrid machine, `/sys/fs/cgroup` + `/user.slice/...` on a
 * unified one). A systemd host's cgroup is created below this process's own.
 */
function cgroup2Base(): string {
  const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n");
  const line = mounts.find((l) => / - cgroup2 /.test(l));
  if (!line)
    throw new Error(
      "systemd test hosts need a cgroup2 hierarchy (none mounted: /proc/self/mountinfo)",
    );
  const mountPoint = line.split(" ")[4];
  const own = fs
    .readFileSync("/proc/self/cgroup", "utf8")
    .split("\n")
    .find((l) => l.startsWith("0::"));
  return path.join(mountPoint, own ? own.slice(3) : "/");
}

/** Removes a cgroup and its descendants (deepest first); they must hold no process any more. */
function removeCgroupTree(dir: string): boolean {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return true; // already gone
  }
  let ok = true;
  for (const e of entries) if (e.isDirectory()) ok = removeCgroupTree(path.join(dir, e.name)) && ok;
  try {
    fs.rmdirSync(dir);
  } catch {
    ok = false;
  }
  return ok;
}

interface Started {
  spec: Required<HostSpec>;
  init: "script" | "systemd";
  /** systemd hosts: the cgroup (outer path) that is the root of the host's cgroup namespace. */
  cgroup?: string;
  address: string;
  dir: string;
  unsharePid: number;
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  initPid: number;
}

/**
 * Starts one host per spec, in parallel, on 127.0.0.<firstAddress + i>; resolves when every
 * sshd accepts TCP connections and every enabled nix-daemon's socket exists.
 * `firstAddress` default: env NSC_HOSTS_FIRST_ADDRESS, else 2 (so hosts are 127.0.0.2, .3, ...).
 * Throws (after cleaning up) naming the host and showing the tail of its init log.
 */
export async function startHosts(
  specs: HostSpec[],
  opts: { firstAddress?: number } = {},
): Promise<TestHosts> {
  const skip = e2eSkipReason();
  if (skip) throw new Error(`cannot start test hosts: ${skip}`);
  const first = opts.firstAddress ?? Number(process.env.NSC_HOSTS_FIRST_ADDRESS || 2);
  if (!Number.isInteger(first) || first < 2 || first + specs.length - 1 > 254) {
    throw new Error(
      `firstAddress ${first} with ${specs.length} hosts leaves 127.0.0.2-127.0.0.254`,
    );
  }
  const names = new Set<string>();
  const full: Required<HostSpec>[] = specs.map((s) => {
    if (!/^[a-z][a-z0-9-]*$/.test(s.name))
      throw new Error(`host name "${s.name}": use [a-z][a-z0-9-]*`);
    if (names.has(s.name)) throw new Error(`host name "${s.name}" given twice`);
    names.add(s.name);
    const loginUser = s.loginUser ?? "root";
    if (!/^[a-z_][a-z0-9_-]*$/.test(loginUser))
      throw new Error(`host ${s.name}: bad loginUser "${loginUser}"`);
    if (s.securePath !== undefined && !/^[A-Za-z0-9_/.:-]+$/.test(s.securePath))
      throw new Error(`host ${s.name}: bad securePath "${s.securePath}"`);
    const flavours = s.flavours ?? [];
    for (const f of flavours) {
      if (!/^[a-z0-9-]+$/.test(f) || !fs.existsSync(path.join(hostDir(), "flavours", `${f}.sh`)))
        throw new Error(
          `host ${s.name}: unknown flavour "${f}" (have: ${fs
            .readdirSync(path.join(hostDir(), "flavours"))
            .map((n) => n.replace(/\.sh$/, ""))
            .join(", ")})`,
        );
    }
    return {
      name: s.name,
      nixDaemon: s.nixDaemon ?? true,
      loginUser,
      rootKey: s.rootKey ?? true,
      loginShell: s.loginShell ?? "bash",
      sudoPolicy: s.sudoPolicy ?? "nopasswd",
      securePath: s.securePath ?? "",
      flavours,
    };
  });
  const addresses = full.map((_, i) => `127.0.0.${first + i}`);
  for (const [i, a] of addresses.entries()) {
    if (await tcpAccepts(a, 22)) {
      throw new Error(
        `host ${full[i].name}: ${a}:22 already accepts connections (a leftover test host?); stop it first`,
      );
    }
  }

  installExitHandler();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "nsc-hosts-"));
  const run = { pids: [] as number[], stateDir, cgroups: [] as string[] };
  liveRuns.add(run);
  const started: Started[] = [];

  const teardown = async (): Promise<void> => {
    const pids = started.map((s) => s.initPid).filter((p) => p > 0);
    const unsharePids = started.map((s) => s.unsharePid).filter((p) => p > 0);
    // host-init.sh stops its services on TERM; systemd would re-execute itself on TERM, so a
    // systemd host's PID 1 gets SIGKILL at once, which ends its whole PID namespace
    for (const s of started) {
      if (s.initPid > 0) signal(s.initPid, s.init === "systemd" ? "SIGKILL" : "SIGTERM");
    }
    const deadline = Date.now() + STOP_GRACE_MS;
    while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
    for (const pid of [...pids, ...unsharePids]) if (isAlive(pid)) signal(pid, "SIGKILL");
    const hard = Date.now() + 10_000;
    while ([...pids, ...unsharePids].some(isAlive) && Date.now() < hard) await sleep(50);
    const left = [...pids, ...unsharePids].filter(isAlive);
    // a systemd host's cgroups empty once its namespace is gone (the kernel frees them a moment later)
    const cgroups = started.flatMap((s) => (s.cgroup ? [s.cgroup] : []));
    const cgDeadline = Date.now() + 10_000;
    let cgLeft = cgroups.filter((cg) => !removeCgroupTree(cg));
    while (cgLeft.length && Date.now() < cgDeadline) {
      await sleep(50);
      cgLeft = cgLeft.filter((cg) => !removeCgroupTree(cg));
    }
    liveRuns.delete(run);
    fs.rmSync(stateDir, { recursive: true, force: true });
    if (left.length)
      throw new Error(`test hosts teardown: PIDs still alive after SIGKILL: ${left.join(", ")}`);
    if (cgLeft.length)
      throw new Error(`test hosts teardown: cgroups not removable: ${cgLeft.join(", ")}`);
  };

  try {
    // Runner key pair (one for all hosts).
    const keyPath = path.join(stateDir, "runner_ed25519");
    mustRun("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "nsc-test-runner",
      "-f",
      keyPath,
    ]);
    const privateKey = fs.readFileSync(keyPath, "utf8");
    const hostsFile = path.join(stateDir, "hosts");
    fs.writeFileSync(
      hostsFile,
      ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        .concat(full.map((s, i) => `${addresses[i]} ${s.name}.test ${s.name}`))
        .join("\n") + "\n",
    );

    const script = initScriptPath();
    for (const [i, spec] of full.entries()) {
      const dir = path.join(stateDir, spec.name);
      fs.mkdirSync(dir);
      const logFd = fs.openSync(path.join(dir, "init.log"), "a");
      const init = spec.flavours.some((f) => SYSTEMD_FLAVOURS.has(f)) ? "systemd" : "script";
      const unshare = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--propagation",
        "private",
        "--mount-proc",
        "--uts",
      ];
      let cgroup: string | undefined;
      let argv = [...unshare, "bash", script];
      if (init === "systemd") {
        // its own cgroup, entered before `unshare --cgroup` makes it the namespace's root
        cgroup = path.join(
          cgroup2Base(),
          `nsc-host-${process.pid}-${path.basename(stateDir)}-${spec.name}`,
        );
        fs.mkdirSync(cgroup);
        run.cgroups.push(cgroup);
        argv = [
          "bash",
          "-c",
          'echo $$ >"$1/cgroup.procs" && shift && exec "$@"',
          "nsc-enter-cgroup",
          cgroup,
          ...unshare,
          "--ipc",
          "--cgroup",
          "bash",
          script,
        ];
      }
      const child = spawn(argv[0], argv.slice(1), {
        stdio: ["ignore", logFd, logFd],
        cwd: "/",
        env: {
          PATH: HOST_PATH,
          LANG: "C.UTF-8",
          NSC_STATE: dir,
          NSC_NAME: spec.name,
          NSC_FQDN: `${spec.name}.test`,
          NSC_ADDRESS: addresses[i],
          NSC_LOGIN_USER: spec.loginUser,
          NSC_ROOT_KEY: spec.rootKey ? "1" : "0",
          NSC_NIX_DAEMON: spec.nixDaemon ? "1" : "0",
          NSC_LOGIN_SHELL: spec.loginShell,
          NSC_SUDO_POLICY: spec.sudoPolicy,
          NSC_SECURE_PATH: spec.securePath,
          NSC_RUNNER_PUB: `${keyPath}.pub`,
          NSC_HOSTS_FILE: hostsFile,
          NSC_HOST_DIR: hostDir(),
          NSC_FLAVOURS: spec.flavours.join(" "),
        },
      });
      fs.closeSync(logFd);
      const s: Started = {
        spec,
        init,
        cgroup,
        address: addresses[i],
        dir,
        unsharePid: child.pid ?? -1,
        exited: undefined,
        initPid: -1,
      };
      child.on("exit", (code, sig) => (s.exited = { code, signal: sig }));
      child.on("error", () => {
        s.exited = { code: -1, signal: null };
      });
      started.push(s);
      if (s.unsharePid > 0) run.pids.push(s.unsharePid);
    }

    const hosts = await Promise.all(
      started.map((s) => waitReady(s, privateKey, keyPath, run.pids)),
    );
    return {
      hosts,
      stateDir,
      byName(name: string): TestHost {
        const h = hosts.find((x) => x.name === name);
        if (!h)
          throw new Error(
            `no test host named "${name}" (have: ${hosts.map((x) => x.name).join(", ")})`,
          );
        return h;
      },
      teardown,
    };
  } catch (err) {
    await teardown().catch(() => undefined);
    throw err;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

function mustRun(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr || r.error}`);
}

async function waitReady(
  s: Started,
  privateKey: string,
  keyPath: string,
  runPids: number[],
): Promise<TestHost> {
  const name = s.spec.name;
  const initLog = path.join(s.dir, "init.log");
  const fail = (why: string) =>
    new Error(
      `test host ${name} (${s.address}): ${why}\n--- tail of ${initLog} ---\n${tail(initLog)}`,
    );
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const checkAlive = () => {
    if (s.exited)
      throw fail(`init exited (code ${s.exited.code}, signal ${s.exited.signal}) before ready`);
    if (Date.now() > deadline) throw fail(`not ready within ${READY_TIMEOUT_MS} ms`);
  };

  // The namespace's PID 1 = the child of unshare.
  while (s.initPid < 0) {
    checkAlive();
    try {
      const kids = fs
        .readFileSync(`/proc/${s.unsharePid}/task/${s.unsharePid}/children`, "utf8")
        .trim();
      if (kids) s.initPid = Number(kids.split(/\s+/)[0]);
    } catch {
      /* not there yet */
    }
    if (s.initPid < 0) await sleep(20);
  }
  runPids.push(s.initPid);

  const socket = path.join(s.dir, "nix/var/nix/daemon-socket/socket");
  for (;;) {
    checkAlive();
    const sshdUp = await tcpAccepts(s.address, 22);
    const nixUp = !s.spec.nixDaemon || fs.existsSync(socket);
    if (sshdUp && nixUp) break;
    await sleep(50);
  }
  const pub = fs.readFileSync(path.join(s.dir, "etc/ssh/ssh_host_ed25519_key.pub"), "utf8");
  const hostKey = pub.trim().split(/\s+/).slice(0, 2).join(" ");
  const host = makeHost(s, privateKey, keyPath, hostKey);
  // systemd: ready once it has started every unit; a failed unit fails the host's start
  while (s.init === "systemd") {
    checkAlive();
    const state = (await host.exec("systemctl is-system-running", { check: false })).stdout.trim();
    if (state === "running") break;
    if (state === "degraded") {
      const failed = await host.exec("systemctl --failed --no-legend --plain", { check: false });
      throw fail(`systemd started with failed units:\n${failed.stdout}`);
    }
    await sleep(100);
  }
  return host;
}

function makeHost(s: Started, privateKey: string, keyPath: string, hostKey: string): TestHost {
  const name = s.spec.name;
  const socket = path.join(s.dir, "nix/var/nix/daemon-socket/socket");

  const exec = (script: string, opts: ExecOptions = {}): Promise<ExecResult> =>
    new Promise((resolve, reject) => {
      const child = spawn(
        "nsenter",
        ["--target", String(s.initPid), "--mount", "--pid", "--uts", "--", "bash", "-c", script],
        { cwd: "/", env: { PATH: HOST_EXEC_PATH, HOME: "/root", USER: "root", LANG: "C.UTF-8" } },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      child.on("error", reject);
      child.on("close", (code, sig) => {
        const res = {
          code: code ?? 128 + (sig ? (os.constants.signals[sig] ?? 0) : 0),
          stdout,
          stderr,
        };
        if ((opts.check ?? true) && res.code !== 0) {
          reject(
            new Error(
              `test host ${name}: script failed (exit ${res.code})\n--- script ---\n${script}\n--- stderr ---\n${stderr}`,
            ),
          );
        } else resolve(res);
      });
      child.stdin.on("error", () => undefined);
      child.stdin.end(opts.input ?? "");
    });

  const waitTcp = async (up: boolean, what: string) => {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while ((await tcpAccepts(s.address, 22)) !== up) {
      if (Date.now() > deadline)
        throw new Error(`test host ${name}: sshd ${what} within ${READY_TIMEOUT_MS} ms`);
      await sleep(50);
    }
  };

  // Services are found by what they listen on (host-services.sh), whatever the flavour.
  const services = (action: string) => exec(`bash /run/nsc/host-services.sh ${action}`);

  return {
    name,
    fqdn: `${name}.test`,
    address: s.address,
    port: 22,
    user: s.spec.loginUser,
    privateKey,
    privateKeyPath: keyPath,
    hostKey,
    initPid: s.initPid,
    init: s.init,
    stateDir: s.dir,
    exec,
    async stopSshd() {
      await services("stop-sshd");
      await waitTcp(false, "did not stop listening");
    },
    async startSshd() {
      await services("start-sshd");
      await waitTcp(true, "did not accept connections");
    },
    async stopNixDaemon() {
      await services("stop-nix-daemon");
      fs.rmSync(socket, { force: true });
    },
    async startNixDaemon() {
      await services("start-nix-daemon");
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (!fs.existsSync(socket)) {
        if (Date.now() > deadline)
          throw new Error(`test host ${name}: nix-daemon socket did not appear`);
        await sleep(50);
      }
    },
  };
}

/** Counts of accepted SSH logins in a host's sshd log, by login user. */
export type LoginCounts = Record<string, number>;

/** Accepted public-key logins so far in `host`'s `/var/log/sshd.log`, by user. */
export function acceptedLogins(host: TestHost): LoginCounts {
  const file = path.join(host.stateDir, "var-log", "sshd.log");
  const counts: LoginCounts = {};
  let text = "";
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return counts;
  }
  for (const m of text.matchAll(/Accepted publickey for (\S+) from/g)) {
    counts[m[1]] = (counts[m[1]] ?? 0) + 1;
  }
  return counts;
}

/** New logins of `user` between two snapshots. */
export function loginsSince(before: LoginCounts, after: LoginCounts, user: string): number {
  return (after[user] ?? 0) - (before[user] ?? 0);
}
