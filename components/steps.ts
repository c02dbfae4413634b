/**
 * Builders for the host steps both roles use: probing a host, managing a file on it.
 */
import * as pulumi from "@pulumi/pulumi";
import { hostScript } from "./host";
import { HostStep } from "./hostStep";
import { Connection } from "./ssh";

/** What `probe.sh` reports about a host. */
export interface HostFacts {
  os: "nixos" | "linux";
  nixVersion: string;
  daemonRunning: boolean;
  init: string;
  hostKey: string;
  /** Directory the Nix tools were found in, e.g. `/nix/var/nix/profiles/default/bin`. */
  nixBin?: string;
}

/**
 * Observes a host (OS, Nix version, daemon, SSH host key) without changing it. A refresh that
 * sees another host key or OS marks it drifted, so the next `up` re-reads and re-pins the key.
 */
export function probeStep(
  name: string,
  connection: pulumi.Input<Connection>,
  opts: pulumi.CustomResourceOptions,
): HostStep {
  return new HostStep(
    name,
    {
      connection,
      step: "probe",
      script: hostScript("probe"),
      env: {},
      readable: true,
      removable: false,
      removeEnv: {},
      driftKeys: ["hostKey", "os"],
      triggers: [],
      timeoutSeconds: 60,
    },
    opts,
  );
}

/** Facts of a probe step as a typed output. */
export function hostFacts(probe: HostStep): pulumi.Output<HostFacts> {
  return probe.result.apply((r) => r as unknown as HostFacts);
}

/** Arguments of {@link fileStep}. */
export interface FileStepArgs {
  connection: pulumi.Input<Connection>;
  /** Absolute path on the host. */
  path: string;
  /** Exact content. */
  content: pulumi.Input<string>;
  /** Octal mode, e.g. `"0644"`. */
  mode?: string;
  /** `user:group`. */
  owner?: string;
  /**
   * What to do after a change: reload sshd (after `sshd -t`), include + restart nix-daemon and
   * check the settings are in force, or (`"ssh"`) check root's ssh really uses the pin.
   */
  after?: "none" | "sshd" | "nix" | "ssh";
  /** Only act on hosts of this kind (the step reports `skipped` elsewhere). */
  onlyOn?: "nixos" | "linux";
  /** Label for messages, e.g. `sshd drop-in`. */
  label: string;
}

/**
 * A file on a host, tracked: written atomically on create/update, re-read on refresh (an edit or
 * a deletion out of band is drift that the next `up` repairs), removed on delete.
 */
export function fileStep(
  name: string,
  args: FileStepArgs,
  opts: pulumi.CustomResourceOptions,
): HostStep {
  const env = pulumi.output(args.content).apply((content) => ({
    FILE_PATH: args.path,
    FILE_CONTENT_B64: Buffer.from(content, "utf8").toString("base64"),
    FILE_MODE: args.mode ?? "0644",
    FILE_OWNER: args.owner ?? "root:root",
    AFTER: args.after ?? "none",
  }));
  return new HostStep(
    name,
    {
      connection: args.connection,
      step: `${args.label} ${args.path}`,
      script: hostScript("file", args.onlyOn),
      env,
      readable: true,
      removable: true,
      removeEnv: {},
      driftKeys: ["exists", "sha256"],
      triggers: [],
      timeoutSeconds: 120,
    },
    opts,
  );
}
