/**
 * Running one bash script on a host over SSH, as root (directly or through `sudo -n`).
 *
 * This module is used inside dynamic providers, so it is serialized by Pulumi's closure
 * serializer: keep it self-contained (only `ssh2` and Node built-ins, no module-level state).
 */
import { Client, ConnectConfig } from "ssh2";

/** A resolved connection to one host (plain values; the private key is a secret upstream). */
export interface Connection {
  /** DNS name or IP address the operator connects to. */
  host: string;
  /** SSH port. */
  port: number;
  /** Login user. */
  user: string;
  /** OpenSSH or PEM private key text. */
  privateKey?: string;
  /** Password, when no private key is used. */
  password?: string;
  /** Pinned host public key line (`ssh-ed25519 AAAA...`); when set, any other host key is refused. */
  hostKey?: string;
  /** `"sudo"` runs the script through `sudo -n`; `"none"` runs it as the login user. */
  become: "sudo" | "none";
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
 * only when the connection itself fails (unreachable, authentication, host key mismatch).
 */
export function runScript(
  connection: Connection,
  body: string,
  options: RunOptions = {},
): Promise<ScriptResult> {
  const script = assembleScript(body, options.env);
  const timeoutMs = options.timeoutMs ?? 10 * 60 * 1000;
  const where = describeConnection(connection);
  const command =
    connection.become === "sudo" && connection.user !== "root" ? "sudo -n bash -s" : "bash -s";

  return new Promise<ScriptResult>((resolve, reject) => {
    const client = new Client();
    let settled = false;
    let hostKeyMismatch: string | undefined;
    let timer: NodeJS.Timeout | undefined = undefined;
    const finish = (error: Error | undefined, result?: ScriptResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.end();
      if (error) reject(error);
      else resolve(result as ScriptResult);
    };
    timer = setTimeout(
      () => finish(new Error(`${where}: no answer within ${Math.round(timeoutMs / 1000)} s`)),
      timeoutMs,
    );

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
      finish(new Error(`${where}: cannot connect: ${reason}`));
    });
    client.on("ready", () => {
      client.exec(command, (err, stream) => {
        if (err) return finish(new Error(`${where}: cannot start a command: ${err.message}`));
        const out: Buffer[] = [];
        const errs: Buffer[] = [];
        stream.on("data", (d: Buffer) => out.push(d));
        stream.stderr.on("data", (d: Buffer) => errs.push(d));
        stream.on("close", (code: number | null, signal?: string) => {
          finish(undefined, {
            code: code ?? (signal ? 128 : 255),
            stdout: Buffer.concat(out).toString("utf8"),
            stderr: Buffer.concat(errs).toString("utf8"),
          });
        });
        stream.end(script);
      });
    });
    client.connect(config);
  });
}

function expectedPrefix(hostKey: string | undefined): string {
  return (hostKey?.trim().split(/\s+/)[1] ?? "").slice(0, 12);
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
