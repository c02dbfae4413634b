/**
 * The bench's preview timeline (bench/timeline.ts): the events read from the engine's gRPC log.
 */
import { strict as assert } from "assert";
import { describe, it } from "node:test";
import { timelineOf } from "../../bench/timeline";

const start = Date.parse("2026-11-26T06:51:37.000Z");
const at = (ms: number) => new Date(start + ms).toISOString();
const entry = (method: string, progress: string, ms?: number, type?: string) =>
  JSON.stringify({
    method,
    progress,
    ...(ms === undefined ? { timestamp: "0001-01-01T00:00:00Z" } : { timestamp: at(ms) }),
    request: type ? { type, name: "x" } : {},
  });

describe("bench preview timeline", () => {
  it("reads the program, stack, first resource, provider and last diff times", () => {
    const log = [
      entry("/pulumirpc.LanguageRuntime/Run", "request_started", 600),
      entry(
        "/pulumirpc.ResourceMonitor/RegisterResource",
        "request_started",
        undefined,
        "pulumi:pulumi:Stack",
      ),
      entry(
        "/pulumirpc.ResourceMonitor/RegisterResource",
        "response_completed",
        1900,
        "pulumi:pulumi:Stack",
      ),
      entry(
        "/pulumirpc.ResourceMonitor/RegisterResource",
        "response_completed",
        2900,
        "nix-ssh-cache:index:NixSshCache",
      ),
      entry(
        "/pulumirpc.ResourceMonitor/RegisterResource",
        "response_completed",
        2950,
        "nix-ssh-cache:index:CacheServer",
      ),
      entry("/pulumirpc.ResourceProvider/Handshake", "request_started", 4100),
      entry("/pulumirpc.ResourceProvider/Check", "response_completed", 4150),
      entry("/pulumirpc.ResourceProvider/Diff", "response_completed", 4160),
      entry("/pulumirpc.ResourceProvider/Check", "response_completed", 4200),
      entry("/pulumirpc.ResourceProvider/Diff", "response_completed", 4600),
      entry("/pulumirpc.LanguageRuntime/Run", "response_completed", 4700),
      '{"method":"/pulumirpc.ResourceMonitor/Log", "progress": "requ', // cut short at exit
    ].join("\n");
    assert.deepEqual(timelineOf(log, start, start + 4800), {
      run: 0.6,
      stack: 1.9,
      firstResource: 2.9,
      providerReady: 4.1,
      lastDiff: 4.6,
      providerCalls: 4,
      runDone: 4.7,
      end: 4.8,
    });
  });

  it("an empty stack has no resource, provider or diff", () => {
    const log = [
      entry("/pulumirpc.LanguageRuntime/Run", "request_started", 500),
      entry(
        "/pulumirpc.ResourceMonitor/RegisterResource",
        "response_completed",
        1800,
        "pulumi:pulumi:Stack",
      ),
      entry("/pulumirpc.LanguageRuntime/Run", "response_completed", 2300),
    ].join("\n");
    const t = timelineOf(log, start, start + 2500);
    assert.equal(t.firstResource, undefined);
    assert.equal(t.providerReady, undefined);
    assert.equal(t.lastDiff, undefined);
    assert.equal(t.providerCalls, 0);
    assert.equal(t.end, 2.5);
  });
});
