// The driver compliance suite: every driver runs these cases against its real sandbox technology.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CappedStream } from '../../src/drivers/capture.ts';
import type { Driver, SandboxExit, SandboxInput, SandboxIO, SandboxRequest, StreamName } from '../../src/drivers/driver.ts';
import { runInSandbox } from '../../src/drivers/lifecycle.ts';
import { AbortedError, type ResolvedResources, type Workload } from '../../src/spec/index.ts';
import { testOutputs } from '../helpers/outputs.ts';
import { tempDir } from '../helpers/tmp.ts';

/** A workload for the driver under test, with its code already as bytes. */
export interface Case {
  workload: Workload;
  code: Uint8Array;
  /** For directory sources (a container's root file system): what the node resolved source.file to. */
  sourceDir?: string;
  /** Input files as the node resolved them from `workload.inputs`. */
  inputs?: SandboxInput[];
}

export interface ComplianceFixtures {
  /** Prints exactly `stdout` and exits 0. */
  hello: Case & { stdout: string };
  /** Writes `stderr` to its standard error. */
  stderr: Case & { stderr: string };
  /** Ends with exit code `exitCode` (non-zero). */
  exitCode: Case & { exitCode: number };
  /** Never ends by itself. */
  spin: Case;
  /** Allocates memory without bound. */
  memoryBomb: Case;
  /** Writes far more than 64 KiB to stdout, then exits 0. */
  flood: Case;
  /** Prints a line that depends on `n`, so concurrent runs can be told apart. */
  numbered(n: number): Case & { stdout: string };
}

const BASE: ResolvedResources = { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 20_000, network: { egressMbps: 0, ingressMbps: 0 } };

interface Outcome {
  exit: SandboxExit;
  stdout: ReturnType<CappedStream['toJSON']>;
  stderr: ReturnType<CappedStream['toJSON']>;
}

let seq = 0;
const outputs = testOutputs();

/** Runs one case through the common lifecycle, capturing output the way the node does. */
export async function runCase(
  driver: Driver,
  c: Case,
  opts: { resources?: Partial<ResolvedResources>; outputCapBytes?: number; signal?: AbortSignal; onRunning?: () => void } = {},
): Promise<Outcome> {
  const cap = opts.outputCapBytes ?? 1024 * 1024;
  const streams: Record<StreamName, CappedStream> = { stdout: new CappedStream(cap), stderr: new CappedStream(cap) };
  const io: SandboxIO = {
    write: (s, chunk) => void streams[s].append(chunk),
    total: (s, n) => streams[s].noteTotal(n),
  };
  const request: SandboxRequest = {
    runId: `compliance${++seq}`,
    workload: c.workload,
    code: c.code,
    resources: { ...BASE, ...opts.resources },
    outputCapBytes: cap,
    outputs: outputs.sink,
  };
  if (c.sourceDir !== undefined) request.sourceDir = c.sourceDir;
  if (c.inputs !== undefined) request.inputs = c.inputs;
  await driver.validate(request);
  const hooks = opts.onRunning === undefined ? {} : { onRunning: opts.onRunning };
  const exit = await runInSandbox(driver, request, io, opts.signal, hooks);
  return { exit, stdout: streams.stdout.toJSON(), stderr: streams.stderr.toJSON() };
}

export function driverCompliance(
  name: string,
  make: (sandboxRoot: string) => Driver,
  fixtures: () => Promise<ComplianceFixtures>,
  options: { skip?: string | false; memoryBombMiB?: number; resources?: Partial<ResolvedResources>; concurrency?: number } = {},
): void {
  const bombMiB = options.memoryBombMiB ?? 16;
  describe(`driver compliance: ${name}`, { skip: options.skip ?? false }, () => {
    const root = tempDir(`vmesh-compliance-${name}-`);
    let driver: Driver;
    let f: ComplianceFixtures;
    /** runCase with the driver's own resource defaults (a microVM needs more memory and boot time) under each case's. */
    const runC = (c: Case, o: Parameters<typeof runCase>[2] = {}) => runCase(driver, c, { ...o, resources: { ...options.resources, ...o?.resources } });

    before(async () => {
      driver = make(root.dir);
      const probe = await driver.probe();
      assert.equal(probe.available, true, `${name} must be available for its compliance suite: ${probe.reason}`);
      f = await fixtures();
    });

    after(async () => {
      await driver.close();
      root.remove();
    });

    /** Nothing of a finished case may remain: no live sandbox, no scratch directory. */
    function assertNothingLeft(): void {
      assert.equal(driver.liveSandboxes(), 0, 'live sandboxes after the case');
      assert.deepEqual(readdirSync(root.dir), [], 'scratch directories after the case');
    }

    it('runs a workload and returns its stdout and exit code 0', async () => {
      const { exit, stdout } = await runC(f.hello);
      assert.equal(exit.outcome, 'exited');
      assert.equal(exit.exitCode, 0);
      assert.equal(stdout.text, f.hello.stdout);
      assert.equal(stdout.truncated, false);
      assertNothingLeft();
    });

    it('captures stderr apart from stdout', async () => {
      const { stderr } = await runC(f.stderr);
      assert.ok(stderr.text.includes(f.stderr.stderr), `stderr was ${JSON.stringify(stderr.text)}`);
      assertNothingLeft();
    });

    it('reports a non-zero exit code', async () => {
      const { exit } = await runC(f.exitCode);
      assert.equal(exit.outcome, 'exited');
      assert.equal(exit.exitCode, f.exitCode.exitCode);
      assertNothingLeft();
    });

    it('kills a workload at its timeout', async () => {
      const { exit } = await runC(f.spin, { resources: { timeoutMs: 300 } });
      assert.equal(exit.outcome, 'timeout');
      assert.equal(exit.exitCode, null);
      assert.match(exit.reason ?? '', /300 ms/);
      assertNothingLeft();
    });

    it('ends a workload that exceeds its memory limit as oom', async () => {
      const { exit } = await runC(f.memoryBomb, { resources: { memoryMiB: bombMiB, timeoutMs: 60_000 } });
      assert.equal(exit.outcome, 'oom', `outcome ${exit.outcome}: ${exit.reason}`);
      assert.match(exit.reason ?? '', new RegExp(`${bombMiB} MiB`));
      assertNothingLeft();
    });

    it('caps a flood of output and says it was truncated', async () => {
      const { exit, stdout } = await runC(f.flood, { outputCapBytes: 4096 });
      assert.equal(exit.outcome, 'exited');
      assert.equal(Buffer.byteLength(stdout.text), 4096);
      assert.equal(stdout.truncated, true);
      assert.ok(stdout.bytes > 64 * 1024, `counted ${stdout.bytes} bytes`);
      assertNothingLeft();
    });

    it('cancels a running workload through its AbortSignal', async () => {
      const controller = new AbortController();
      const { exit } = await runC(f.spin, {
        signal: controller.signal,
        onRunning: () => setTimeout(() => controller.abort(new AbortedError('test cancel')), 50),
      });
      assert.equal(exit.outcome, 'cancelled');
      assertNothingLeft();
    });

    it('refuses to start when aborted before it began, leaving nothing', async () => {
      const controller = new AbortController();
      controller.abort();
      await assert.rejects(runC(f.hello, { signal: controller.signal }), AbortedError);
      assertNothingLeft();
    });

    const concurrency = options.concurrency ?? 10;
    it(`runs ${concurrency} workloads concurrently without mixing their output`, async () => {
      const cases = Array.from({ length: concurrency }, (_, i) => f.numbered(i));
      const outcomes = await Promise.all(cases.map((c) => runC(c)));
      outcomes.forEach((o, i) => {
        assert.equal(o.exit.outcome, 'exited', `run ${i}: ${o.exit.reason}`);
        assert.equal(o.stdout.text, cases[i]!.stdout);
      });
      assertNothingLeft();
    });

    it('still runs normally after kills (timeouts and cancels do not poison the driver)', async () => {
      await runC(f.spin, { resources: { timeoutMs: 100 } });
      const { exit, stdout } = await runC(f.hello);
      assert.equal(exit.outcome, 'exited');
      assert.equal(stdout.text, f.hello.stdout);
      assertNothingLeft();
    });
  });
}
