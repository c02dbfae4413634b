/**
 * Records of the reliability tests: every case appends one JSON line (item, case, expected,
 * observed, pass, duration) to the file named by env `NSC_RELIABILITY_LOG` (default
 * `build/reliability.jsonl`). `scripts/reliability-report.ts` renders `docs/reliability.md`
 * from it, so the document holds what the last run observed, never hand-written figures.
 */
import * as fs from "fs";
import * as path from "path";
import { repoRoot } from "../pulumi";

/** One line of the reliability log. */
export interface ReliabilityRecord {
  /** Issue item, e.g. `"bad input"`, `"faults"`, `"security"`, `"destroy"`. */
  item: string;
  /** The case, e.g. `production[0].port = 70000`. */
  case: string;
  /** What must happen. */
  expected: string;
  /** What happened (a message excerpt, a figure). */
  observed: string;
  /** Whether the observation met the expectation. */
  pass: boolean;
  /** Wall-clock duration of the case, in milliseconds (reported, never asserted). */
  durationMs: number;
  /** ISO time the case ended. */
  at: string;
}

/** The log file: env `NSC_RELIABILITY_LOG`, else `<repo>/build/reliability.jsonl`. */
export function reliabilityLogPath(): string {
  return process.env.NSC_RELIABILITY_LOG || path.join(repoRoot, "build", "reliability.jsonl");
}

/** Appends one record. */
export function record(r: Omit<ReliabilityRecord, "at">): void {
  const file = reliabilityLogPath();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const line: ReliabilityRecord = { ...r, at: new Date().toISOString() };
  fs.appendFileSync(file, JSON.stringify(line) + "\n");
}

/** One line of text, at most `max` characters, for the `observed` column. */
export function excerpt(text: string, max = 220): string {
  const one = text.replace(/\s+/g, " ").trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

/**
 * Runs one case: `fn` returns what it observed and throws (an assertion) when the expectation is
 * not met. Either way one record is appended; the error is re-thrown so the test fails.
 */
export async function reliabilityCase(
  item: string,
  name: string,
  expected: string,
  fn: () => Promise<string>,
): Promise<void> {
  const t0 = Date.now();
  try {
    const observed = await fn();
    record({ item, case: name, expected, observed, pass: true, durationMs: Date.now() - t0 });
  } catch (e) {
    const observed = `FAILED: ${excerpt((e as Error).message ?? String(e), 400)}`;
    record({ item, case: name, expected, observed, pass: false, durationMs: Date.now() - t0 });
    throw e;
  }
}
