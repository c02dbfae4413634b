/**
 * The closures the substitution benchmark moves: Nix expressions of `builtins.derivation`s with
 * builder `/bin/sh` (no nixpkgs), each burning a fixed amount of CPU (a `sh` busy loop, standing
 * in for compilation) and writing incompressible bytes from `/dev/urandom`; and one compressible
 * path (`text`): text-like lines of words and numbers drawn by awk from a fixed seed, which
 * gzip -6 shrinks about 3.3× (like a typical store path's mix of text and binaries).
 */

/** One closure shape. */
export interface ShapeSpec {
  /** Attribute in the generated expression, e.g. `large`. */
  attr: string;
  /** What it is, for the report. */
  title: string;
}

/** Sizes of the shapes (overridable for a quick run). */
export interface ShapeSizes {
  /** Bytes of the one large path. */
  largeBytes: number;
  /** Bytes of the one compressible (text-like) path. */
  textBytes: number;
  /** Paths in the dependency chain. */
  chainLength: number;
  /** Bytes of each chain link. */
  chainBytes: number;
  /** Leaves of the mixed closure (plus one root referring to all of them). */
  mixedLeaves: number;
  /** `sh` loop iterations each derivation burns. */
  work: number;
}

/** The sizes asked for by issue 7. */
export const FULL_SIZES: ShapeSizes = {
  largeBytes: 256 * 1024 * 1024,
  textBytes: 64 * 1024 * 1024,
  chainLength: 500,
  chainBytes: 64 * 1024,
  mixedLeaves: 49,
  work: 20_000,
};

/** Size of leaf `i` of the mixed closure: 1 KiB … 8 MiB, shuffled (2^(10 + 5i mod 14)). */
export function mixedLeafBytes(i: number): number {
  return 2 ** (10 + ((i * 5) % 14));
}

/** The four shapes, described with their sizes. */
export function shapes(s: ShapeSizes): ShapeSpec[] {
  const mixedTotal = Array.from({ length: s.mixedLeaves }, (_, i) => mixedLeafBytes(i)).reduce(
    (a, b) => a + b,
    0,
  );
  return [
    { attr: "large", title: `one ${mib(s.largeBytes)} path` },
    {
      attr: "text",
      title: `one ${mib(s.textBytes)} compressible path (text-like, gzip -6 about 3.3×)`,
    },
    {
      attr: "chain",
      title: `${s.chainLength} paths of ${kib(s.chainBytes)} in a dependency chain`,
    },
    {
      attr: "mixed",
      title: `mixed: ${s.mixedLeaves} leaves of 1 KiB–8 MiB (${mib(mixedTotal)}) + 1 root`,
    },
  ];
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(bytes % (1024 * 1024) === 0 ? 0 : 1)} MiB`;
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(0)} KiB`;
}

/**
 * Text-like lines (4 to 12 words of a small vocabulary and a number) from awk with a fixed seed,
 * until `bytes` are written, cut to exactly `bytes`: compressible, and the same on every run.
 */
export function textScript(bytes: number): string {
  const words =
    "the of and to in is that for it as with was on be by this are from at or an have not" +
    " which but all store path nix lib bin share include libfoo.so.1 main return int void" +
    " const struct static char if else while /nix/store/ error warning info debug";
  return (
    `awk 'BEGIN { srand(7); n = split("${words}", w, " "); b = 0;` +
    ` while (b < ${bytes}) { l = ""; k = 4 + int(rand() * 9);` +
    ` for (i = 0; i < k; i++) l = l w[1 + int(rand() * n)] " ";` +
    ` l = l int(rand() * 100000); print l; b += length(l) + 1 } }' | head -c ${bytes}`
  );
}

/**
 * The Nix expression (an attribute set `{ large, text, chain, mixed }`). Evaluating it on staging and
 * on production gives the same derivations (same Nix, same system), so production can build
 * them itself for the local-build comparison.
 */
export function benchExpression(s: ShapeSizes): string {
  const leaves = Array.from({ length: s.mixedLeaves }, (_, i) => mixedLeafBytes(i));
  return `let
  work = ${s.work};
  mk = name: script: builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      export PATH=/usr/bin:/bin
      i=0; while [ "$i" -lt \${toString work} ]; do i=$((i + 1)); done
      \${script}
    '' ];
  };
  data = bytes: "head -c \${toString bytes} /dev/urandom";
  chain = n:
    if n == 1 then mk "bench-chain-1" "\${data ${s.chainBytes}} > $out"
    else mk "bench-chain-\${toString n}" "{ echo \${chain (n - 1)}; \${data ${s.chainBytes}}; } > $out";
  leaves = builtins.genList
    (i: mk "bench-mixed-\${toString i}" "\${data (builtins.elemAt [ ${leaves.join(" ")} ] i)} > $out")
    ${s.mixedLeaves};
in {
  large = mk "bench-large" "\${data ${s.largeBytes}} > $out";
  text = mk "bench-text" ''${textScript(s.textBytes)} > $out'';
  chain = chain ${s.chainLength};
  mixed = mk "bench-mixed" "echo \${toString leaves} > $out";
}
`;
}
