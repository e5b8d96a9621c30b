import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { httpLoad } from '../lib/http-load.ts';
import { openFds, readCpu, readMemory, settledMemory, type MemoryReading, type SettledMemory } from '../lib/proc.ts';
import { TARGETS } from './report.ts';
import { startNode, type NodeCode, type NodeProcess } from '../lib/vmesh-node.ts';
import { EXPECTED_STDOUT, helloWorkload, type Settings, type WayResult } from './common.ts';

export interface ApiResult extends WayResult {
  code: NodeCode;
  startupMs: number;
  /** The node's memory once started and idle, and again once idle after the load. */
  memory: { afterStart: MemoryReading; afterLoad: MemoryReading; settled: SettledMemory };
  /** File descriptors the node holds at the same two moments. */
  fds: { afterStart: number; afterLoad: number };
  /** CPU used during the throughput phase, in cores: where the time goes when the node is saturated. */
  cpu: LoadCpu;
  /** One response, checked before the load, shown in the report. */
  sample: { status: number; state: string; stdout: string; totalMs?: number };
}

/** POST /v1/runs (waiting for the result) against a real node in a child process. */
export async function measureApi(code: Uint8Array, settings: Settings, log: (line: string) => void): Promise<ApiResult> {
  const home = mkdtempSync(path.join(os.tmpdir(), 'vmesh-bench-home-'));
  let node: NodeProcess | undefined;
  try {
    // Worker threads end after 1 s idle (30 s by default), so the reading after the load is an idle node.
    node = await startNode({ home, workers: settings.workers, workerIdleMs: 1000 });
    log(`  node pid ${node.pid} at ${node.url}`);
    await sleep(settings.idleMs);
    const afterStart = readMemory(node.pid);
    const fdsAfterStart = openFds(node.pid);

    const body = JSON.stringify(helloWorkload(code));
    const sample = await submitOnce(node, body);
    const target = { url: `${node.url}/v1/runs`, method: 'POST' as const, headers: headers(node), body, check: checkRun };
    const phase = (connections: number, durationMs: number) => httpLoad({ ...target, connections, durationMs });
    await phase(1, settings.warmupMs);
    const single = await phase(1, settings.durationMs);
    await phase(settings.concurrency, settings.warmupMs);
    const { value: loaded, cpu } = await withCpu(node.pid, () => phase(settings.concurrency, settings.durationMs));

    await sleep(settings.idleMs);
    const afterLoad = readMemory(node.pid);
    const fds = { afterStart: fdsAfterStart, afterLoad: openFds(node.pid) };
    log(`  waiting up to ${settings.settleMs / 1000} s for the idle node's memory to settle`);
    const settled = await settledMemory(node.pid, { targetMiB: TARGETS.idleRssMiB, maxMs: settings.settleMs });
    settled.afterMs += settings.idleMs;
    return { single, loaded, sample, code: node.code, startupMs: node.startupMs, memory: { afterStart, afterLoad, settled }, fds, cpu };
  } finally {
    await node?.stop();
    rmSync(home, { recursive: true, force: true });
  }
}

export interface LoadCpu {
  nodeCores: number;
  nodeMainThreadCores: number;
  /** This process: autocannon and the checks of its responses. */
  loadGeneratorCores: number;
}

async function withCpu<T>(pid: number, work: () => Promise<T>): Promise<{ value: T; cpu: LoadCpu }> {
  const node0 = readCpu(pid);
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await work();
  const elapsedMs = performance.now() - t0;
  const node1 = readCpu(pid);
  const self = process.cpuUsage(self0);
  return {
    value,
    cpu: {
      nodeCores: (node1.totalMs - node0.totalMs) / elapsedMs,
      nodeMainThreadCores: (node1.mainThreadMs - node0.mainThreadMs) / elapsedMs,
      loadGeneratorCores: (self.user + self.system) / 1000 / elapsedMs,
    },
  };
}

function headers(node: NodeProcess): Record<string, string> {
  return { authorization: `Bearer ${node.token}`, 'content-type': 'application/json' };
}

/** Submits one run and insists that it succeeded with the right output: the load below is only worth it then. */
async function submitOnce(node: NodeProcess, body: string): Promise<ApiResult['sample']> {
  const res = await fetch(`${node.url}/v1/runs`, { method: 'POST', headers: headers(node), body });
  const text = await res.text();
  const problem = res.ok ? checkRun(text) : `HTTP ${res.status}`;
  if (problem !== undefined) throw new Error(`POST /v1/runs did not return a succeeded run (${problem}): ${text.slice(0, 2000)}`);
  const run = JSON.parse(text) as RunBody;
  const sample: ApiResult['sample'] = { status: res.status, state: run.state ?? '', stdout: run.result?.stdout?.text ?? '' };
  if (run.result?.timings?.totalMs !== undefined) sample.totalMs = run.result.timings.totalMs;
  return sample;
}

interface RunBody {
  state?: string;
  reason?: string;
  result?: { stdout?: { text?: string }; timings?: { totalMs?: number } };
}

/** Why a response body is not a succeeded run that printed the expected line; undefined when it is. */
function checkRun(text: string): string | undefined {
  let run: RunBody;
  try {
    run = JSON.parse(text) as RunBody;
  } catch {
    return 'the body is not JSON';
  }
  if (run.state !== 'succeeded') return `state ${run.state}${run.reason ? `: ${run.reason}` : ''}`;
  const stdout = run.result?.stdout?.text;
  if (stdout !== EXPECTED_STDOUT) return `stdout ${JSON.stringify(stdout)}`;
  return undefined;
}
