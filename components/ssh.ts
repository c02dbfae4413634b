/**
 * Running one bash script on a host over SSH, as root (directly or through `sudo -n`).
 *
 * This module is used inside dynamic providers, so it is serialized by Pulumi's closure
 * serializer: keep it self-contained (only `ssh2` and Node built-ins, no module-level state; the
 * connection pool lives on `globalThis`).
 */
import { Client, ClientChannel, ConnectConfig } from "ssh2";

/**
 * A resolved hop (plain values; the private key is a secret upstream). Field names are those of
 * `@pulumi/command`'s `types.input.remote.ConnectionArgs`.
 */
export interface ProxyConnection {
  /** DNS name or IP address the operator connects to. */
  host: string;
  /** SSH port. */
  port: number;
  /** Login user. */
  user: string;
  /** OpenSSH or PEM private key text. */
  privateKey?: string;
  /** Passphrase of an encrypted `privateKey`. */
  privateKeyPassword?: string;
  /** Password, when no private key is used. */
  password?: string;
  /** ssh-agent socket. */
  agentSocketPath?: string;
  /** Pinned host public key line (`ssh-ed25519 AAAA...`); when set, any other host key is refused. */
  hostKey?: string;
  /** Dial attempts before giving up (`-1`: no limit; `@pulumi/command`'s default 10). */
  dialErrorLimit?: number;
  /** Seconds per dial attempt (`@pulumi/command`'s default 15). */
  perDialTimeout?: number;
}

/** A resolved connection to one host, possibly through a jump host. */
export interface Connection extends ProxyConnection {
  /** Jump host the connection is forwarded through. */
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

/** A label for messages: `user@host:port`. */
export function describeConnection(c: Connection): string {
  return `${c.user}@${c.host}${c.port === 22 ? "" : `:${c.port}`}`;
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
 * Runs `body` with bash on the host, as root. The script travels on stdin, never on the command
 * line, so values do not show in the host's process list. Resolves with the exit code; rejects
 * only when the connection itself fails (unreachable, authentication, host key mismatch, lost
 * before the script reported its exit status).
 *
 * Connections are reused: the scripts of one host share one SSH connection, each on its own
 * channel (see {@link sshPool}), so a `pulumi up` or `preview --refresh` logs in to a host once
 * instead of once per step. `NIX_SSH_CACHE_CONNECTION_REUSE=0` in the environment of `pulumi`
 * (or `options.reuse: false`) opens one connection per script instead.
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

/** An error of {@link runOnConnection}; `notStarted` when the script surely did not run. */
interface ScriptError extends Error {
  notStarted?: boolean;
}

/** One open SSH connection, as {@link runOnConnection} uses it. */
interface OpenConnection {
  client: Client;
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

/** Opens and authenticates one connection, with the pinned host key checked. */
function openConnection(connection: Connection): Promise<OpenConnection> {
  const where = describeConnection(connection);
  return new Promise<OpenConnection>((resolve, reject) => {
    const client = new Client();
    const callbacks = new Set<(reason: Error) => void>();
    let ready = false;
    let gone: Error | undefined;
    let hostKeyMismatch: string | undefined;
    const end = (reason: Error) => {
      if (!ready) return reject(reason);
      if (gone) return;
      gone = reason;
      for (const cb of [...callbacks]) cb(reason);
    };
    const config: ConnectConfig = {
      host: connection.host,
      port: connection.port,
      username: connection.user,
      readyTimeout: 30_000,
      keepaliveInterval: 15_000,
    };
    if (connection.privateKey) config.privateKey = connection.privateKey;
    if (connection.password) config.password = connection.password;
    if (connection.hostKey) {
      const expected = connection.hostKey.trim().split(/\s+/)[1] ?? "";
      config.hostVerifier = (key: Buffer) => {
        const actual = key.toString("base64");
        if (actual === expected) return true;
        hostKeyMismatch = actual;
        return false;
      };
    }
    client.on("error", (err: Error) => {
      const reason = hostKeyMismatch
        ? `the host key does not match the pinned hostKey (pinned ${connection.hostKey?.split(/\s+/)[0]} ${expectedPrefix(connection.hostKey)}..., got ...${hostKeyMismatch.slice(-12)}); if the host was reinstalled, update hostKey`
        : err.message;
      end(new Error(`${where}: ${ready ? "connection lost" : "cannot connect"}: ${reason}`));
    });
    client.on("close", () =>
      end(
        new Error(
          `${where}: ${ready ? "the connection closed" : "cannot connect: the connection closed during the handshake"}`,
        ),
      ),
    );
    client.once("ready", () => {
      ready = true;
      resolve({
        client,
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
      });
    });
    client.connect(config);
  });
}

/** Runs the assembled script on a channel of `conn`, bounded by `timeoutMs`. */
function runOnConnection(
  conn: OpenConnection,
  connection: Connection,
  script: string,
  timeoutMs: number,
): Promise<ScriptResult> {
  const where = describeConnection(connection);
  const command =
    connection.become === "sudo" && connection.user !== "root" ? "sudo -n bash -s" : "bash -s";
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
      fail(started ? `${reason.message} while the script ran` : reason.message, !started),
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
          return fail(`${where}: the connection ended before the script reported its exit status`);
        }
        finish(undefined, {
          code: code ?? 128,
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(errs).toString("utf8"),
        });
      });
      stream.end(script);
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
 * credentials and pinned host key; up to `maxChannels` (8) channels at once on each (OpenSSH's
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
  const key = JSON.stringify([
    connection.user,
    connection.host,
    connection.port,
    connection.hostKey ?? "",
    connection.privateKey ?? "",
    connection.password ?? "",
  ]);
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

function expectedPrefix(hostKey: string | undefined): string {
  return (hostKey?.trim().split(/\s+/)[1] ?? "").slice(0, 12);
}
