import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SandboxIO, SandboxRequest } from '../../src/drivers/driver.ts';
import { runInSandbox } from '../../src/drivers/lifecycle.ts';
import { WasmDriver } from '../../src/drivers/wasm/driver.ts';
import { BlobStore } from '../../src/blobs/blob-store.ts';
import type { OutputSink } from '../../src/outputs/pack.ts';
import { blobSink } from '../../src/outputs/sink.ts';
import type { ResolvedResources } from '../../src/spec/index.ts';
import { closedLoop } from '../lib/load.ts';
import { openFds } from '../lib/proc.ts';
import { EXPECTED_STDOUT, helloWorkload, WrongResultError, type Settings, type WayResult } from './common.ts';

// What the node gives a function that asks for nothing, but with a shorter timeout.
const RESOURCES: ResolvedResources = { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 10_000, network: { egressMbps: 0, ingressMbps: 0 } };
const OUTPUT_CAP_BYTES = 1024 * 1024;

export interface DriverResult extends WayResult {
  /** Descriptors this process held before and after the phases, and the runs (warm-ups too) in between. */
  fds: { before: number; after: number; runs: number };
}

/** The wasm driver in this process, through the same lifecycle the node's executor uses. */
export async function measureDriver(code: Uint8Array, settings: Settings): Promise<DriverResult> {
  const sandboxRoot = mkdtempSync(path.join(os.tmpdir(), 'vmesh-bench-sandboxes-'));
  const driver = new WasmDriver({ sandboxRoot, workers: settings.workers });
  const fdsBefore = openFds();
  let runs = 0;
  try {
    const blobs = new BlobStore(path.join(sandboxRoot, '.blobs'));
    const requests = requestFactory(code, blobSink(blobs, { maxBytes: 2 ** 20, inlineBytes: 2 ** 20 }));
    const run = () => {
      runs++;
      return runOnce(driver, requests());
    };
    await closedLoop(run, { concurrency: 1, durationMs: settings.warmupMs });
    const single = await closedLoop(run, { concurrency: 1, durationMs: settings.durationMs });
    await closedLoop(run, { concurrency: settings.concurrency, durationMs: settings.warmupMs });
    const loaded = await closedLoop(run, { concurrency: settings.concurrency, durationMs: settings.durationMs });
    return { single, loaded, fds: { before: fdsBefore, after: openFds(), runs } };
  } finally {
    await driver.close();
    rmSync(sandboxRoot, { recursive: true, force: true });
  }
}

function requestFactory(code: Uint8Array, outputs: OutputSink): () => SandboxRequest {
  const workload = helloWorkload(code);
  let seq = 0;
  return () => ({ runId: `bench${++seq}`, workload, code, resources: RESOURCES, outputCapBytes: OUTPUT_CAP_BYTES, outputs });
}

/** One run, checked: it must exit 0 having printed exactly the expected line. */
async function runOnce(driver: WasmDriver, request: SandboxRequest): Promise<void> {
  let stdout = '';
  const io: SandboxIO = {
    write(stream, chunk) {
      if (stream === 'stdout') stdout += Buffer.from(chunk).toString('utf8');
    },
    total() {},
  };
  const exit = await runInSandbox(driver, request, io);
  if (exit.outcome !== 'exited' || exit.exitCode !== 0) {
    throw new WrongResultError(`outcome ${exit.outcome}, exit code ${exit.exitCode}${exit.reason ? `: ${exit.reason}` : ''}`);
  }
  if (stdout !== EXPECTED_STDOUT) throw new WrongResultError(`stdout ${JSON.stringify(stdout)}`);
}
