/**
 * `LocalFile`: a file on the operator's machine (e.g. a NixOS module committed to the user's
 * repository), whose `read` sees the real file: after an edit or a deletion out of band,
 * `pulumi preview --refresh` shows it and `pulumi up --refresh` writes it again.
 *
 * Files on hosts are tracked the same way by `HostStep` with `remote/file.sh` (see `steps.ts`).
 */
import * as pulumi from "@pulumi/pulumi";

/** Plain inputs of a local file. */
export interface LocalFileProps {
  /** Absolute path, or relative to the Pulumi program's directory. */
  path: string;
  /** Exact content. */
  content: string;
}

interface LocalFileOutputs extends LocalFileProps {
  /** Content observed by the last refresh; `null` when the file was missing. */
  observed: string | null;
}

function writeAtomically(file: string, content: string): void {
  // Required here, not imported: this code is serialized into the dynamic provider.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("fs") as typeof import("fs");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const path = require("path") as typeof import("path");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const temp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(temp, content, { mode: 0o644 });
  fs.renameSync(temp, file);
}

function readOrNull(file: string): string | null {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("fs") as typeof import("fs");
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

const localFileProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: LocalFileProps) {
    writeAtomically(inputs.path, inputs.content);
    return { id: inputs.path, outs: { ...inputs, observed: inputs.content } };
  },
  async diff(_id: string, olds: LocalFileOutputs, news: LocalFileProps) {
    const changes: string[] = [];
    if (olds.content !== news.content || olds.observed !== news.content) changes.push("content");
    const replaces = olds.path !== news.path ? ["path"] : [];
    return { changes: changes.length > 0 || replaces.length > 0, replaces };
  },
  async update(_id: string, _olds: LocalFileOutputs, news: LocalFileProps) {
    writeAtomically(news.path, news.content);
    return { outs: { ...news, observed: news.content } };
  },
  async read(id: string, props: LocalFileOutputs) {
    return { id, props: { ...props, observed: readOrNull(props.path) } };
  },
  async delete(_id: string, props: LocalFileOutputs) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const fs = require("fs") as typeof import("fs");
    fs.rmSync(props.path, { force: true });
  },
};

/** Inputs of {@link LocalFile}. */
export interface LocalFileArgs {
  /** Absolute path, or relative to the Pulumi program's directory, e.g. `"nixos/staging.nix"`. */
  path: pulumi.Input<string>;
  /** Exact content of the file. */
  content: pulumi.Input<string>;
}

/** A tracked file on the operator's machine. */
export class LocalFile extends pulumi.dynamic.Resource {
  /** Content seen by the last refresh (`null` when missing). */
  declare public readonly observed: pulumi.Output<string | null>;

  constructor(name: string, args: LocalFileArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      localFileProvider,
      name,
      { ...args, observed: undefined },
      opts,
      "nix-ssh-cache",
      "LocalFile",
    );
  }
}
