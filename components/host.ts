/**
 * The connection model: from the user's `HostArgs` (Pulumi inputs, secrets) to a resolved
 * {@link Connection}, and the host scripts that run over it.
 */
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { Connection, ProxyConnection } from "./ssh";
import { HostArgs, ProxyArgs } from "./types";

/** Resolves defaults: port 22, user root, `become: "sudo"` for any other user. */
export function resolveConnection(args: HostArgs): pulumi.Output<Connection> {
  return pulumi
    .all([resolveHop(args), pulumi.output(args.become), pulumi.output(args.proxy)])
    .apply(([hop, become, proxy]) =>
      pulumi.output(proxy ? resolveHop(proxy) : undefined).apply((proxyHop) => {
        const connection: Connection = {
          ...hop,
          become: become ?? (hop.user === "root" ? "none" : "sudo"),
        };
        if (proxyHop) connection.proxy = proxyHop;
        return connection;
      }),
    );
}

/** One hop's plain values, unset optional fields left out (they would show in diffs). */
function resolveHop(args: HostArgs | ProxyArgs): pulumi.Output<ProxyConnection> {
  return pulumi
    .output({
      host: args.host,
      port: args.port,
      user: args.user,
      privateKey: args.privateKey,
      privateKeyPassword: args.privateKeyPassword,
      password: args.password,
      agentSocketPath: args.agentSocketPath,
      hostKey: args.hostKey,
      dialErrorLimit: args.dialErrorLimit,
      perDialTimeout: args.perDialTimeout,
    })
    .apply((a) => {
      const hop: ProxyConnection = { host: a.host, port: a.port ?? 22, user: a.user ?? "root" };
      if (a.privateKey) hop.privateKey = a.privateKey;
      if (a.privateKeyPassword) hop.privateKeyPassword = a.privateKeyPassword;
      if (a.password) hop.password = a.password;
      if (a.agentSocketPath) hop.agentSocketPath = a.agentSocketPath;
      if (a.hostKey) hop.hostKey = a.hostKey.trim();
      if (a.dialErrorLimit !== undefined) hop.dialErrorLimit = a.dialErrorLimit;
      if (a.perDialTimeout !== undefined) hop.perDialTimeout = a.perDialTimeout;
      return hop;
    });
}

/** Where the host scripts live: next to this file, in `remote/` (the build copies them). */
const remoteDir = path.join(__dirname, "remote");

const cache = new Map<string, string>();

/** The text of `remote/<name>.sh`. */
export function remoteScriptText(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = fs.readFileSync(path.join(remoteDir, `${name}.sh`), "utf8");
    cache.set(name, text);
  }
  return text;
}

/**
 * The body sent to a host for step `name`: `lib.sh` followed by `remote/<name>.sh`. With
 * `onlyOn`, the step does nothing (and reports `{"skipped":true}`) on hosts of another kind.
 */
export function hostScript(name: string, onlyOn?: "nixos" | "linux"): string {
  const guard = onlyOn
    ? [
        `if { [ -e /etc/NIXOS ] && [ ${onlyOn} != nixos ]; } || { ! [ -e /etc/NIXOS ] && [ ${onlyOn} != linux ]; }; then`,
        `  echo '{"skipped":true}'`,
        `  exit 0`,
        `fi`,
      ].join("\n")
    : "";
  return [remoteScriptText("lib"), guard, remoteScriptText(name)].join("\n");
}
