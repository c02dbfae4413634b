/**
 * The host scripts of the package (`remote/*.sh`, copied beside the compiled modules by the
 * build), the other files it installs on hosts (`remote/*.pl`), and the body a step sends to a
 * host. Plain Node.js (no `@pulumi/pulumi`): the dynamic provider process loads this module too,
 * to rebuild the scripts and files a state names (see `packScript` in hostStepProvider.ts).
 * @packageDocumentation
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";

/** Where the host scripts live: next to this file, in `remote/` (the build copies them). */
const remoteDir = path.join(__dirname, "remote");

const cache = new Map<string, string>();

/** The text of `remote/<name>.sh` (or of `remote/<file>` for a file name with its extension). */
export function remoteScriptText(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    const file = path.extname(name) === "" ? `${name}.sh` : name;
    text = fs.readFileSync(path.join(remoteDir, file), "utf8");
    cache.set(name, text);
  }
  return text;
}

/** The kinds of host a step may be limited to (see {@link hostScript}). */
export type OnlyOn = "nixos" | "linux";

/**
 * The body sent to a host for step `name`: `lib.sh` followed by `remote/<name>.sh`. With
 * `onlyOn`, the step does nothing (and reports `{"skipped":true}`) on hosts of another kind.
 */
export function hostScript(name: string, onlyOn?: OnlyOn): string {
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

/**
 * The reference (`<name>` or `<name>:<onlyOn>`) of a body that is exactly `hostScript(name,
 * onlyOn)` of this package, else undefined. Built once per process from `remote/*.sh`.
 */
export function packagedScriptRef(body: string): string | undefined {
  const registry = globalThis as { [k: symbol]: Map<string, string> | undefined };
  const slot = Symbol.for("nix-ssh-cache/packaged-scripts");
  let index = registry[slot];
  if (!index) {
    index = new Map();
    const names = fs
      .readdirSync(remoteDir)
      .filter((f) => f.endsWith(".sh") && f !== "lib.sh")
      .map((f) => f.slice(0, -3));
    for (const name of names) {
      index.set(hostScript(name), name);
      for (const onlyOn of ["nixos", "linux"] as const) {
        index.set(hostScript(name, onlyOn), `${name}:${onlyOn}`);
      }
    }
    registry[slot] = index;
  }
  return index.get(body);
}

/** The body a reference from {@link packagedScriptRef} names, from the installed package. */
export function packagedScript(ref: string): string {
  const [name, onlyOn] = ref.split(":");
  if (
    !/^[a-z][a-z0-9-]*$/.test(name) ||
    (onlyOn !== undefined && !/^(nixos|linux)$/.test(onlyOn))
  ) {
    throw new Error(`nix-ssh-cache: not a packaged host script reference: ${JSON.stringify(ref)}`);
  }
  return hostScript(name, onlyOn as OnlyOn | undefined);
}

/** Prefix of a file of the package stored by name: `package-file <file> <digest>`. */
const PACKAGED_FILE = "package-file ";

/** Short digest of a text, for names and diffs: the first 16 hex digits of its SHA-256. */
export function digest(text: string): string {
  return crypto.createHash("sha256").update(text).digest("hex").slice(0, 16);
}

let packagedFiles: Map<string, string> | undefined;

/**
 * `package-file <file> <digest>` when `text` is exactly `remote/<file>`, one of the files the
 * package installs on hosts that is not a host script (`nix-ssh-cache-fetch.pl`), else undefined.
 * The digest makes another version of the file another value, so a step sees the change.
 */
export function packagedFileRef(text: string): string | undefined {
  if (!packagedFiles) {
    packagedFiles = new Map();
    for (const file of fs.readdirSync(remoteDir).filter((f) => !f.endsWith(".sh"))) {
      if (!fs.statSync(path.join(remoteDir, file)).isFile()) continue;
      const content = remoteScriptText(file);
      packagedFiles.set(content, `${PACKAGED_FILE}${file} ${digest(content)}`);
    }
  }
  return packagedFiles.get(text);
}

/**
 * The text a {@link packagedFileRef} names, from the installed package; `value` itself when it is
 * not a reference. A reference to another version of the file (a state written by another version
 * of the package) is kept as it is, or with `strict` is an error.
 */
export function packagedFileText(value: string, strict: boolean): string {
  if (!value.startsWith(PACKAGED_FILE)) return value;
  const [file, named] = value.slice(PACKAGED_FILE.length).split(" ");
  if (!/^[a-z][a-z0-9.-]*$/.test(file ?? "") || file.endsWith(".sh")) {
    throw new Error(`nix-ssh-cache: not a packaged file reference: ${JSON.stringify(value)}`);
  }
  const text = remoteScriptText(file);
  if (digest(text) === named) return text;
  if (!strict) return value;
  throw new Error(
    `nix-ssh-cache: the inputs name ${file} ${named}, but the installed package has ${file} ${digest(text)}: run pulumi from the project whose nix-ssh-cache made the program's inputs`,
  );
}
