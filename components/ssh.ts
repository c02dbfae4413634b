/**
 * Running one bash script on a host over SSH, as root (directly or through `sudo -n`).
 *
 * This module is used inside dynamic providers, so it is serialized by Pulumi's closure
 * serializer: keep it self-contained (only `ssh2`, Node built-ins and `knownHosts.ts`, no
 * module-level state; the connection pool lives on `globalThis`).
 */
import { randomBytes } from "crypto";
import { existsSync } from "fs";
import { Client, ClientChannel, ConnectConfig, OpenSSHAgent, utils as sshUtils } from "ssh2";
import {
  expectedHostKey,
  ExpectedHostKey,
  fingerprint,
  hostKeyAlgorithms,
  hostKeyHint,
  lookupKnownHosts,
} from "./knownHosts";

/**
 * A resolved SSH hop (plain values; keys and passwords are secrets upstream). Field names and
 * defaults are those of `@pulumi/command`'s `remote.ConnectionArgs` / `ProxyConnectionArgs`.
 */
export interface ProxyConnection {
  /** DNS name or IP address. Behind a proxy, it is resolved by the proxy. */
  host: string;
  /** SSH port. */
  port: number;
  /** Login user. */
  user: string;
  /** OpenSSH or PEM private key text. */
  privateKey?: string;
  /** Passphrase of an encrypted `privateKey`. */
  privateKeyPassword?: string;
  /** Password authentication. */
  password?: string;
  /**
   * ssh-agent socket whose keys are offered.
   * @defaultValue env `SSH_AUTH_SOCK`, only when neither `privateKey` nor `password` is given
   */
  agentSocketPath?: string;
  /**
   * The host public key line (`ssh-ed25519 AAAA...`) the host must present; any other key is
   * refused. Without it, the key of the host in the operator's known_hosts (as `ssh` reads
   * them); without either, the host is not reached.
   */
  hostKey?: string;
  /**
   * Where `hostKey` came from, for messages: `"hostKey"` (given) or the known_hosts file it was
   * pinned from at resolution.
   * @defaultValue `"hostKey"`
   */
  hostKeySource?: string;
  /**
   * Dial attempts before giving up while the host does not answer (refused, unreachable, no
   * handshake in time); `-1` retries without limit. Authentication and host-key failures are not
   * retried.
   * @defaultValue `10`
   */
  dialErrorLimit?: number;
  /**
   * Seconds one dial attempt (TCP connect + SSH handshake + login) may take; `0`: no limit.
   * @defaultValue `15`
   */
  perDialTimeout?: number;
}

/** A resolved connection to one host: a hop, optionally through a jump host, and how to become root. */
export interface Connection extends ProxyConnection {
  /** A jump host (bastion): the connection is forwarded through it (`direct-tcpip`). */
  proxy?: ProxyConnection;
  /** `"sudo"` runs the script through `sudo -n`; `"none"` runs it as the login user. */
  become: "sudo" | "none";
  /** Set when the component's input was invalid (already reported): nothing may run. */
  invalidInput?: string;
}

/** What a script printed and how it ended. */
export interface ScriptResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link runScript}. */
export interface RunOptions {
  /** Environment variables exported before the script runs (values are single-quoted). */
  env?: Record<string, string>;
  /** Give up after this many milliseconds (default 10 minutes). */
  timeoutMs?: number;
  /**
   * Share one connection per host between scripts (see {@link sshPool}).
   * @defaultValue `true`, unless `NIX_SSH_CACHE_CONNECTION_REUSE=0` is set
   */
  reuse?: boolean;
}

/** A label for messages: `user@host:port`, and `(via user@proxy:port)` behind a jump host. */
export function describeConnection(c: Connection | ProxyConnection): string {
  const hop = (h: ProxyConnection) => `${h.user}@${h.host}${h.port === 22 ? "" : `:${h.port}`}`;
  const proxy = (c as Connection).proxy;
  return proxy ? `${hop(c)} (via ${hop(proxy)})` : hop(c);
}

/** Quotes a value for bash with single quotes. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Builds the full script text sent on stdin: strict mode, exported env, then the body. */
export function assembleScript(body: string, env: Record<string, string> = {}): string {
  const exports = Object.keys(env)
    .sort()
    .map((name) => {
      if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) {
        throw new Error(`invalid environment variable name for a host script: ${name}`);
      }
      return `export ${name}=${shellQuote(env[name])}`;
    });
  return ["set -euo pipefail", ...exports, body, ""].join("\n");
}

/**
 * How sudo runs scripts on one connection: directly, or with a terminal from `script`; and
 * where bash is. Found once per connection by its own probe (see {@link sudoProbeCommand}).
 */
export interface SudoMode {
  how: "direct" | "script";
  bash: string;
}

/**
 * What the probe of a connection found: the sudo mode, or (when the probe failed, e.g. bash is
 * not on the login user's PATH) the probe's own result, which the script that waited for it
 * returns instead of running.
 */
export type SudoProbe = { mode: SudoMode } | { failure: ScriptResult };

/** Whether scripts on this connection go through sudo (a non-root login with `become: "sudo"`). */
export function needsSudo(connection: Pick<Connection, "user" | "become">): boolean {
  return connection.become === "sudo" && connection.user !== "root";
}

/**
 * The command the SSH channel of a script executes. sshd hands it to the login user's shell
 * (`$SHELL -c`), so it is written to mean the same in sh, bash, zsh and fish: plain words, and
 * at most one single-quoted POSIX `sh` program without `'` or `\\` (fish reads those two
 * differently).
 *
 * As root it is `bash -s` (the script arrives on stdin). Through sudo it runs the connection's
 * probed `mode` (see {@link sudoProbeCommand}), which it requires:
 * - `direct`: `sudo -n <bash> -s`;
 * - `script` (`Defaults requiretty`): util-linux `script` gives sudo a controlling terminal,
 *   while the script's stdin, stdout and stderr stay the channel's own pipes (passed as fds 3-5
 *   around the terminal): no SSH pty, so nothing is echoed or merged, and the JSON last line
 *   and the exit status arrive as without a terminal. `use_pty` needs nothing special: sudo
 *   relays the pipes itself.
 *
 * Nothing a script prints is ever read back as a mode: the mode comes only from the probe's
 * own channel, which carries no script.
 */
export function remoteCommand(
  connection: Pick<Connection, "user" | "become">,
  mode?: SudoMode,
): string {
  if (!needsSudo(connection)) return "bash -s";
  if (!mode || !/^\/[A-Za-z0-9_./+-]+$/.test(mode.bash)) {
    throw new Error(
      `user ${connection.user}: sudo needs the mode its connection's probe found (sudoProbeCommand)`,
    );
  }
  if (mode.how === "direct") return `exec sudo -n ${mode.bash} -s`;
  return `exec /bin/sh -c 'SHELL=/bin/sh exec script -qec "exec sudo -n ${mode.bash} -s <&3 >&4 2>&5" /dev/null 3<&0 4>&1 5>&2 </dev/null >/dev/null'`;
}

/**
 * The probe a sudo login's connection runs once, on an SSH channel of its own that carries no
 * script, before its first script (same quoting rules as {@link remoteCommand}). It only
 * reports, on stdout, one line `nix-ssh-cache-sudo-<nonce>: direct|script <bash>`:
 * - bash is found on the login user's PATH and later run by absolute path, so a `secure_path`
 *   without it (or without Nix: lib.sh completes PATH) does not matter;
 * - `direct` when sudo accepts `sudo -n true` without a terminal (or when util-linux `script`
 *   is missing: sudo's own refusal then reaches the script's stderr, see {@link runJsonScript});
 *   else `script`.
 *
 * `nonce` (hex, fresh per connection) tells the report from anything the login shell prints.
 */
export function sudoProbeCommand(nonce: string): string {
  if (!/^[0-9a-f]{16,64}$/.test(nonce)) throw new Error("sudo probe nonce: 16-64 hex digits");
  const program = [
    'b=$(command -v bash) || { echo "nix-ssh-cache: bash is not on the PATH of user $(id -un)" >&2; exit 127; }',
    "if sudo -n true </dev/null >/dev/null 2>&1 || ! command -v script >/dev/null 2>&1; then h=direct; else h=script; fi",
    `echo "nix-ssh-cache-sudo-${nonce}: $h $b"`,
  ].join("; ");
  return `exec /bin/sh -c '${program}'`;
}

/**
 * Reads the report of {@link sudoProbeCommand} out of the probe's stdout: exactly one line
 * with this `nonce`, naming a mode and an absolute bash path of plain characters; else nothing.
 */
export function parseSudoProbe(stdout: string, nonce: string): SudoMode | undefined {
  const marker = `nix-ssh-cache-sudo-${nonce}: `;
  const reports = stdout.split("\n").filter((line) => line.startsWith(marker));
  if (reports.length !== 1) return undefined;
  const m = /^(direct|script) (\/[A-Za-z0-9_./+-]+)$/.exec(reports[0].slice(marker.length));
  return m ? { how: m[1] as SudoMode["how"], bash: m[2] } : undefined;
}

/**
 * Runs `body` with bash on the host, as root. The script travels on stdin, never on the command
 * line, so values do not show in the host's process list. Resolves with the exit code; rejects
 * only when the connection itself fails (unreachable, authentication, host key mismatch, lost
 * before the script reported its exit status).
 *
 * Connections are reused: the scripts of one host share one SSH connection, each on its own
 * channel (see {@link sshPool}), so a `pulumi up` or `preview --refresh` logs in to a host once
 * instead of once per step. `NIX_SSH_CACHE_CONNECTION_REUSE=0` in the environment of `pulumi`
 * (or `options.reuse: false`) opens one connection per script instead.
 *
 * For a sudo login, each connection first runs its sudo probe, once, on a channel of its own
 * (see {@link sudoProbeCommand}); nothing a script prints is read back as control.
 */
export async function runScript(
  connection: Connection,
  body: string,
  options: RunOptions = {},
): Promise<ScriptResult> {
  const script = assembleScript(body, options.env);
  const timeoutMs = options.timeoutMs ?? 10 * 60 * 1000;
  const reuse = options.reuse ?? process.env.NIX_SSH_CACHE_CONNECTION_REUSE !== "0";
  if (!reuse) {
    const conn = await openConnection(connection);
    try {
      return await runOnConnection(conn, connection, script, timeoutMs);
    } finally {
      conn.close();
    }
  }
  // A script that never started (the channel was refused, or the connection had just closed)
  // is safe to retry; one that started is not retried here.
  for (let attempt = 1; ; attempt++) {
    const conn = await acquireConnection(connection);
    try {
      return await runOnConnection(conn, connection, script, timeoutMs);
    } catch (e) {
      if (!(e as ScriptError).notStarted || attempt >= 3) throw e;
      conn.refused();
    } finally {
      conn.release();
    }
  }
}

/** An error of {@link execOnConnection}; `notStarted` when the script surely did not run. */
interface ScriptError extends Error {
  notStarted?: boolean;
}

/** One open SSH connection, as {@link runOnConnection} uses it. */
interface OpenConnection {
  client: Client;
  /**
   * What the connection learnt (shared by every lent copy): its sudo probe, set once by the
   * first script that needs it, which the scripts after it wait for; cleared only when the probe
   * found no mode, never replaced by another.
   */
  learnt: { sudo?: Promise<SudoProbe> };
  /** Registers a callback for the connection's end; returns its remover. */
  onGone(callback: (reason: Error) => void): () => void;
  close(): void;
}

/** A pooled connection lent to one script. */
interface LentConnection extends OpenConnection {
  /** Gives the channel slot back. */
  release(): void;
  /** The host refused a channel: use fewer at once, or a new connection. */
  refused(): void;
}

/** A failed dial; `retry` when the host did not answer (yet) and another attempt may work. */
interface DialError extends Error {
  retry?: boolean;
}

/**
 * Opens and authenticates one connection, through its proxy when it has one, retrying dials as
 * `dialErrorLimit` allows; pinned host keys are checked on every hop.
 */
async function openConnection(connection: Connection): Promise<OpenConnection> {
  const where = describeConnection(connection);
  const hop = connection.proxy;
  const proxy = hop
    ? await dialWithRetries(hop, () =>
        handshake(hop, `proxy ${describeConnection(hop)} of ${connection.host}`),
      )
    : undefined;
  try {
    const client = await dialWithRetries(connection, async () =>
      handshake(connection, where, proxy ? await forward(proxy, connection, where) : undefined),
    );
    return watchConnection(client, where, proxy);
  } catch (e) {
    proxy?.end();
    throw e;
  }
}

/** Runs `dial` until it succeeds, fails for good, or `hop.dialErrorLimit` attempts failed. */
async function dialWithRetries<T>(hop: ProxyConnection, dial: () => Promise<T>): Promise<T> {
  const limit = hop.dialErrorLimit ?? 10;
  for (let attempt = 1; ; attempt++) {
    try {
      return await dial();
    } catch (e) {
      const error = e as DialError;
      if (!error.retry || (limit >= 0 && attempt >= Math.max(limit, 1))) {
        if (error.retry) {
          error.message += ` (gave up after ${attempt} attempt${attempt === 1 ? "" : "s"}; raise dialErrorLimit or perDialTimeout if the host is still starting)`;
        }
        throw error;
      }
      await new Promise((wake) => setTimeout(wake, Math.min(1000 * attempt, 5000)));
    }
  }
}

/** Asks the proxy to open a `direct-tcpip` channel to the target's host and port. */
function forward(proxy: Client, target: Connection, where: string): Promise<ClientChannel> {
  const to = `${target.host}:${target.port}`;
  const via = target.proxy ? describeConnection(target.proxy) : "the proxy";
  return new Promise<ClientChannel>((resolve, reject) => {
    const fail = (message: string, retry: boolean) => {
      const error: DialError = new Error(`${where}: cannot connect: ${message}`);
      error.retry = retry;
      reject(error);
    };
    try {
      proxy.forwardOut("127.0.0.1", 0, target.host, target.port, (err, stream) => {
        if (!err) return resolve(stream);
        // RFC 4254 reason codes: 1 administratively prohibited, 2 connect failed.
        const reason = (err as Error & { reason?: number }).reason;
        if (reason === 1) {
          return fail(
            `${via} refused to forward to ${to} (${err.message}); allow TCP forwarding for ${target.proxy?.user ?? "its user"} on the proxy (sshd AllowTcpForwarding yes, PermitOpen ${to})`,
            false,
          );
        }
        // A refused or timed-out connect may be a booting host; an unknown name is not.
        const unknownName = /not known|resolve|No address/i.test(err.message);
        fail(`${via} could not reach ${to}: ${err.message}`, reason === 2 && !unknownName);
      });
    } catch (err) {
      fail(`the connection to ${via} ended: ${(err as Error).message}`, false);
    }
  });
}

/** ssh2 settings of one hop; throws (not retried) when its credentials cannot work. */
function connectConfig(hop: ProxyConnection, where: string): ConnectConfig {
  const seconds = hop.perDialTimeout ?? 15;
  const config: ConnectConfig = {
    host: hop.host,
    port: hop.port,
    username: hop.user,
    readyTimeout: seconds > 0 ? seconds * 1000 : 0,
    keepaliveInterval: 15_000,
  };
  const fail = (message: string): never => {
    throw new Error(`${where}: cannot connect: ${message}`);
  };
  if (hop.privateKey) {
    // ssh2's own parse messages are not shown: they can quote bytes of the key.
    const plain = sshUtils.parseKey(hop.privateKey);
    if (plain instanceof Error) {
      if (!/no passphrase given/.test(plain.message)) {
        fail(
          "privateKey cannot be read (corrupted or truncated); give the key file's complete contents",
        );
      } else if (!hop.privateKeyPassword) {
        fail("privateKey is encrypted; set privateKeyPassword to its passphrase");
      }
      // Decrypting is slow (bcrypt_pbkdf): ssh2 does it once, in connect (see handshake).
      config.passphrase = hop.privateKeyPassword;
    }
    config.privateKey = hop.privateKey;
  }
  if (hop.password) config.password = hop.password;
  const agent = agentSocket(hop);
  if (agent) config.agent = agent;
  if (!config.privateKey && !config.password && !config.agent) {
    fail(
      "no credentials: set privateKey, password or agentSocketPath (SSH_AUTH_SOCK is not set, so no ssh-agent is used)",
    );
  }
  return config;
}

/** The agent socket a hop uses: its own, else `SSH_AUTH_SOCK` when it has no key or password. */
function agentSocket(hop: ProxyConnection): string | undefined {
  if (hop.agentSocketPath) return hop.agentSocketPath;
  if (hop.privateKey || hop.password) return undefined;
  return process.env.SSH_AUTH_SOCK || undefined;
}

/** One SSH handshake and login; resolves with the ready client (its listeners removed). */
function handshake(hop: ProxyConnection, where: string, sock?: ClientChannel): Promise<Client> {
  return new Promise<Client>((resolve, reject) => {
    const config = connectConfig(hop, where);
    if (sock) config.sock = sock;
    const client = new Client();
    let settled = false;
    let hostKeyMismatch: Buffer | undefined;
    let agentProblem: string | undefined;
    const fail = (message: string, retry: boolean) => {
      if (settled) return;
      settled = true;
      client.end();
      const error: DialError = new Error(`${where}: cannot connect: ${message}`);
      error.retry = retry;
      reject(error);
    };
    const expected = expectedHostKey(hop.host, hop.port, hop.hostKey);
    if (typeof expected === "string") {
      return fail(`${expected}; ${hostKeyHint(hop.host, hop.port)}`, false);
    }
    const [type, base64] = expected.key.split(" ");
    if (!hostKeyAlgorithms(type).length) {
      return fail(
        `the host key type ${type} (from ${hop.hostKeySource ?? expected.source}) is not supported by the operator's SSH client; use the host's ed25519 key (/etc/ssh/ssh_host_ed25519_key.pub)`,
        false,
      );
    }
    const expectedBlob = Buffer.from(base64 ?? "", "base64");
    // The server presents a key of the pinned type (else ssh2 would ask for its preferred one).
    config.algorithms = {
      serverHostKey: hostKeyAlgorithms(type) as NonNullable<
        ConnectConfig["algorithms"]
      >["serverHostKey"],
    };
    config.hostVerifier = (key: Buffer) => {
      if (key.equals(expectedBlob)) return true;
      hostKeyMismatch = key;
      return false;
    };
    client.on("error", (err: Error & { level?: string; code?: string }) => {
      if (err.level === "agent") {
        // ssh2 goes on with the next method; say why the agent gave nothing if all fail.
        agentProblem = err.message;
        return;
      }
      if (hostKeyMismatch) {
        return fail(hostKeyMismatchMessage(hop, expected, hostKeyMismatch), false);
      }
      if (err.level === "client-authentication" && !/All configured/.test(err.message)) {
        return; // one key could not sign: ssh2 goes on with the next method
      }
      if (err.level === "client-authentication") {
        settled = true; // the close that follows is not a handshake failure
        void authFailureHint(hop, agentSocket(hop), agentProblem).then((hint) => {
          const error: DialError = new Error(`${where}: cannot connect: ${hint}`);
          reject(error);
        });
        client.end();
        return;
      }
      const transient =
        err.level === "client-timeout" ||
        (err.level === "client-socket" && err.code !== "ENOTFOUND");
      fail(err.message, transient);
    });
    client.on("close", () => fail("the connection closed during the handshake", true));
    client.once("ready", () => {
      if (settled) return client.end();
      settled = true;
      client.removeAllListeners("error");
      client.removeAllListeners("close");
      resolve(client);
    });
    try {
      client.connect(config);
    } catch {
      // Only a key that does not decrypt throws here (connectConfig read it); ssh2's message
      // is not shown: it can quote bytes of the key.
      fail("privateKeyPassword does not decrypt privateKey (wrong passphrase?)", false);
    }
  });
}

/** Why a login was refused, and what to do: which credentials were offered, what the agent holds. */
async function authFailureHint(
  hop: ProxyConnection,
  agent: string | undefined,
  agentProblem: string | undefined,
): Promise<string> {
  const offered: string[] = [];
  if (hop.privateKey) offered.push("privateKey");
  if (hop.password) offered.push("password");
  if (agent) {
    let detail = agentProblem ? `unusable: ${agentProblem}` : "";
    if (agentProblem && !existsSync(agent)) {
      detail += "; no socket there: start ssh-agent, or fix agentSocketPath / SSH_AUTH_SOCK";
    }
    if (!detail) {
      const count = await new Promise<number | undefined>((done) => {
        try {
          new OpenSSHAgent(agent).getIdentities((err, keys) =>
            done(err ? undefined : keys?.length),
          );
        } catch {
          done(undefined);
        }
      });
      if (count === 0) detail = "holds no keys; add one with ssh-add";
      else if (count !== undefined) detail = `offered ${count} key${count === 1 ? "" : "s"}`;
    }
    offered.push(`the ssh-agent at ${agent}${detail ? ` (${detail})` : ""}`);
  }
  return `authentication failed for user ${hop.user} with ${offered.join(", ")}; authorise the key in ~${hop.user}/.ssh/authorized_keys on ${hop.host}, or give the credentials that are`;
}

/** Wraps a ready client: reports its end once to the scripts on it; ends the proxy with it. */
function watchConnection(client: Client, where: string, proxy?: Client): OpenConnection {
  const callbacks = new Set<(reason: Error) => void>();
  let gone: Error | undefined;
  const end = (reason: Error) => {
    proxy?.end();
    if (gone) return;
    gone = reason;
    for (const cb of [...callbacks]) cb(reason);
  };
  client.on("error", (err: Error) => end(new Error(`${where}: connection lost: ${err.message}`)));
  client.on("close", () => end(new Error(`${where}: the connection closed`)));
  proxy?.on("error", () => undefined);
  return {
    client,
    learnt: {},
    onGone(callback) {
      if (gone) {
        const reason = gone;
        queueMicrotask(() => callback(reason));
        return () => undefined;
      }
      callbacks.add(callback);
      return () => callbacks.delete(callback);
    },
    close: () => client.end(),
  };
}

/**
 * Runs the assembled script on a channel of `conn` as the login user (through sudo in the mode
 * the connection's probe found), bounded by `timeoutMs`. A failed probe is the script's result.
 */
async function runOnConnection(
  conn: OpenConnection,
  connection: Connection,
  script: string,
  timeoutMs: number,
): Promise<ScriptResult> {
  const where = describeConnection(connection);
  let mode: SudoMode | undefined = undefined;
  if (needsSudo(connection)) {
    const probe = await sudoProbeOf(conn, connection, timeoutMs);
    if ("failure" in probe) return probe.failure;
    mode = probe.mode;
  }
  return execOnConnection(conn, where, remoteCommand(connection, mode), script, timeoutMs);
}

/**
 * The sudo probe of `conn`: the one already run or running on it, else a new one (see
 * {@link sudoProbeCommand}) on a channel of its own, with a fresh nonce. Concurrent first
 * scripts wait for the same probe; a probe that found no mode is forgotten (the next script
 * probes again), a mode found is kept for the connection's life.
 */
function sudoProbeOf(
  conn: OpenConnection,
  connection: Connection,
  timeoutMs: number,
): Promise<SudoProbe> {
  const learnt = conn.learnt;
  if (learnt.sudo) return learnt.sudo;
  const where = describeConnection(connection);
  const nonce = randomBytes(16).toString("hex");
  const probe = execOnConnection(conn, where, sudoProbeCommand(nonce), "", timeoutMs, true).then(
    (r): SudoProbe => {
      const mode = r.code === 0 ? parseSudoProbe(r.stdout, nonce) : undefined;
      if (mode) return { mode };
      const why =
        r.code === 0
          ? `nix-ssh-cache: cannot tell how to run sudo as ${connection.user}: its probe gave no usable report (one line naming bash by an absolute path of letters, digits and _ . / + -); check what the login shell of ${connection.user} prints, and where its bash is\n`
          : "";
      return { failure: { code: r.code === 0 ? 1 : r.code, stdout: "", stderr: r.stderr + why } };
    },
  );
  learnt.sudo = probe;
  const forget = () => {
    if (learnt.sudo === probe) learnt.sudo = undefined;
  };
  probe.then((p) => ("failure" in p ? forget() : undefined), forget);
  return probe;
}

/**
 * Runs `command` on a new channel of `conn` with `input` on its stdin, bounded by `timeoutMs`.
 * `rerunnable`: nothing of the user's runs on it (the sudo probe), so a lost connection leaves
 * the script safe to retry.
 */
function execOnConnection(
  conn: OpenConnection,
  where: string,
  command: string,
  input: string,
  timeoutMs: number,
  rerunnable = false,
): Promise<ScriptResult> {
  return new Promise<ScriptResult>((resolve, reject) => {
    // Declared before the closures that use them: Pulumi's closure serializer rejects
    // references to a `const` declared further down.
    let settled = false;
    let started = false;
    let channel: ClientChannel | undefined = undefined;
    let timer: NodeJS.Timeout | undefined = undefined;
    let unwatch: () => void = () => undefined;
    const finish = (error: Error | undefined, result?: ScriptResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      unwatch();
      if (error) {
        try {
          channel?.close();
        } catch {
          // the channel may already be gone with its connection
        }
        reject(error);
      } else resolve(result as ScriptResult);
    };
    const fail = (message: string, notStarted = false) => {
      const error: ScriptError = new Error(message);
      error.notStarted = notStarted;
      finish(error);
    };
    timer = setTimeout(
      () => fail(`${where}: no answer within ${Math.round(timeoutMs / 1000)} s`),
      timeoutMs,
    );
    unwatch = conn.onGone((reason) =>
      fail(
        started ? `${reason.message} while the script ran` : reason.message,
        !started || rerunnable,
      ),
    );
    conn.client.exec(command, (err, stream) => {
      if (err) return fail(`${where}: cannot start a command: ${err.message}`, true);
      started = true;
      channel = stream;
      const out: Buffer[] = [];
      const errs: Buffer[] = [];
      stream.on("data", (d: Buffer) => out.push(d));
      stream.stderr.on("data", (d: Buffer) => errs.push(d));
      stream.on("close", (code: number | null | undefined, signal?: string) => {
        if (code == null && !signal) {
          return fail(
            `${where}: the connection ended before the script reported its exit status`,
            rerunnable,
          );
        }
        finish(undefined, {
          code: code ?? 128,
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(errs).toString("utf8"),
        });
      });
      stream.end(input);
    });
  });
}

/** One shared connection of the pool. */
export interface PoolEntry {
  key: string;
  conn: Promise<OpenConnection>;
  /** Channels in use. */
  busy: number;
  /** Channels allowed at once; lowered when the host refuses one (its `MaxSessions`). */
  limit: number;
  /** Scripts waiting for a channel. */
  waiting: (() => void)[];
  gone: boolean;
  idle?: NodeJS.Timeout;
}

/**
 * The connections the dynamic provider process shares between steps: one per user, host, port,
 * credentials, pinned host key and proxy (see {@link poolKey}); up to `maxChannels` (8) channels at once on each (OpenSSH's
 * `MaxSessions` is 10 by default; fewer when the host refuses a channel), more scripts wait; a
 * connection closes after `idleMs` (10 s) without a script, or when the host ends it (the next
 * script opens a new one).
 *
 * Kept on `globalThis`, and used through plain functions: this module is serialized into each
 * dynamic resource's provider by Pulumi's closure serializer, so module-level state would not be
 * shared between resources (and the serializer copies only the properties of an object that the
 * code reads at the call site, which breaks an object whose methods call each other).
 */
export interface SshPool {
  entries: Map<string, PoolEntry>;
  /** Channels per connection at most. */
  maxChannels: number;
  /** Milliseconds a connection stays open without a script. */
  idleMs: number;
}

/** The process's connection pool (created on first use). */
export function sshPool(): SshPool {
  const g = globalThis as unknown as Record<symbol, SshPool | undefined>;
  const slot = Symbol.for("nix-ssh-cache/ssh-pool");
  return (g[slot] ??= { entries: new Map<string, PoolEntry>(), maxChannels: 8, idleMs: 10_000 });
}

/** Waits for a channel slot on the host's pooled connection (opening it when needed). */
async function acquireConnection(connection: Connection): Promise<LentConnection> {
  const key = poolKey(connection);
  const pool = sshPool();
  for (;;) {
    const held = pool.entries.get(key) ?? addConnection(pool, key, connection);
    clearTimeout(held.idle);
    if (held.busy < held.limit) held.busy++;
    else await new Promise<void>((wake) => held.waiting.push(wake));
    let conn: OpenConnection;
    try {
      conn = await held.conn;
    } catch (e) {
      releaseSlot(held);
      throw e;
    }
    if (held.gone) {
      // Closed while this script waited: take a slot on a new connection.
      releaseSlot(held);
      continue;
    }
    return {
      ...conn,
      release: () => releaseSlot(held),
      refused() {
        if (!held.gone && held.busy > 1) held.limit = held.busy - 1;
        else retireConnection(held);
      },
    };
  }
}

/**
 * What identifies a distinct connection: every hop's address, user, pinned key and credentials
 * (the agent socket as resolved). Dial limits do not: they only say how hard to try.
 */
export function poolKey(connection: Connection): string {
  const hop = (h: ProxyConnection) => [
    h.user,
    h.host,
    h.port,
    h.hostKey ?? "",
    h.privateKey ?? "",
    h.privateKeyPassword ?? "",
    h.password ?? "",
    agentSocket(h) ?? "",
  ];
  return JSON.stringify([hop(connection), connection.proxy ? hop(connection.proxy) : null]);
}

/** Opens a connection into the pool; it leaves the pool when it fails or ends. */
function addConnection(pool: SshPool, key: string, connection: Connection): PoolEntry {
  const entry: PoolEntry = {
    key,
    conn: openConnection(connection),
    busy: 0,
    limit: pool.maxChannels,
    waiting: [],
    gone: false,
  };
  pool.entries.set(key, entry);
  entry.conn.then(
    (c) => c.onGone(() => retireConnection(entry)),
    () => retireConnection(entry),
  );
  return entry;
}

function releaseSlot(entry: PoolEntry): void {
  entry.busy--;
  // (A retired entry has no waiters left: retireConnection woke them all.)
  while (entry.waiting.length > 0 && entry.busy < entry.limit) {
    entry.busy++;
    entry.waiting.shift()?.();
  }
  if (entry.busy === 0 && !entry.gone) {
    entry.idle = setTimeout(() => retireConnection(entry), sshPool().idleMs);
    entry.idle.unref();
  }
}

/** Takes a connection out of the pool and closes it (scripts running on it fail). */
function retireConnection(entry: PoolEntry): void {
  if (entry.gone) return;
  entry.gone = true;
  clearTimeout(entry.idle);
  const pool = sshPool();
  if (pool.entries.get(entry.key) === entry) pool.entries.delete(entry.key);
  entry.conn.then(
    (c) => c.close(),
    () => undefined,
  );
  // Waiting scripts wake up, see `gone` and move to a new connection.
  while (entry.waiting.length > 0) {
    entry.busy++;
    entry.waiting.shift()?.();
  }
}

/** Closes every pooled connection (for tests and benchmarks; the provider process just exits). */
export function closeSshConnections(): void {
  for (const entry of [...sshPool().entries.values()]) retireConnection(entry);
}

/**
 * Runs a host script that follows the project's contract (last stdout line is one JSON
 * object) and returns that object. Throws an error naming the host and the script's own
 * `nix-ssh-cache:` message when it fails.
 */
export async function runJsonScript(
  connection: Connection,
  body: string,
  options: RunOptions & { step: string },
): Promise<Record<string, unknown>> {
  const where = describeConnection(connection);
  const result = await runScript(connection, body, options);
  if (result.code !== 0) {
    const lines = result.stderr.trim().split("\n").filter(Boolean);
    const own = lines.filter((l) => l.startsWith("nix-ssh-cache:"));
    const detail = (own.length ? own : lines.slice(-5)).join("\n");
    if (/sudo: sorry, you must have a tty/.test(result.stderr)) {
      throw new Error(
        `${where}: ${options.step} failed: sudo on the host requires a terminal (Defaults requiretty) and util-linux \`script\` is not installed there; install it, or exempt ${connection.user} from requiretty`,
      );
    }
    if (
      /sudo: a password is required|sudo: .*not allowed|is not in the sudoers/.test(result.stderr)
    ) {
      throw new Error(
        `${where}: ${options.step} failed: user ${connection.user} cannot run sudo without a password; give it password-less sudo or connect as root`,
      );
    }
    throw new Error(`${where}: ${options.step} failed (exit ${result.code}): ${detail}`);
  }
  const last = result.stdout.trim().split("\n").pop() ?? "";
  try {
    const parsed: unknown = JSON.parse(last);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error();
    return parsed as Record<string, unknown>;
  } catch {
    throw new Error(
      `${where}: ${options.step} printed no JSON result; last line: ${JSON.stringify(last.slice(0, 200))}`,
    );
  }
}

/**
 * Why a host was refused: both fingerprints (as `ssh-keygen -l` prints them), where the
 * expected key came from (`hostKey`, or the known_hosts file and line), and what to do.
 */
function hostKeyMismatchMessage(
  hop: ProxyConnection,
  expected: ExpectedHostKey,
  got: Buffer,
): string {
  const source = hop.hostKeySource ?? expected.source;
  const line =
    source === "hostKey"
      ? undefined
      : lookupKnownHosts(hop.host, hop.port, [source]).keys.find((k) => k.key === expected.key)
          ?.source;
  const pinned =
    source === "hostKey" ? "the pinned hostKey" : `the key pinned from ${line ?? source}`;
  return (
    `the host key does not match ${pinned}: expected ${fingerprint(expected.key)}, got ${fingerprint(got)}; ` +
    "someone may be intercepting the connection. If the host was reinstalled, compare the new " +
    "fingerprint with the one its console shows (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), " +
    (source === "hostKey"
      ? "then update hostKey"
      : `then replace its line in ${source} (or set hostKey)`) +
    " and run `pulumi up` (without --refresh: a refresh uses the key stored in the state)"
  );
}
