/**
 * The connection model: from the user's `HostArgs` (Pulumi inputs, secrets) to a resolved
 * {@link Connection}, and the host scripts that run over it.
 */
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { Connection } from "./ssh";
import { HostArgs } from "./types";

/** Resolves defaults: port 22, user root, `become: "sudo"` for any other user. */
export function resolveConnection(args: HostArgs): pulumi.Output<Connection> {
  return pulumi
    .all([
      args.host,
      args.port,
      args.user,
      args.privateKey,
      args.password,
      args.hostKey,
      args.become,
    ])
    .apply(([host, port, user, privateKey, password, hostKey, become]) => {
      const login = user ?? "root";
      const connection: Connection = {
        host,
        port: port ?? 22,
        user: login,
        become: become ?? (login === "root" ? "none" : "sudo"),
      };
      if (privateKey) connection.privateKey = privateKey;
      if (password) connection.password = password;
      if (hostKey) connection.hostKey = hostKey.trim();
      return connection;
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
