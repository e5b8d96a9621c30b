import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('../../', import.meta.url);
const BIN = fileURLToPath(new URL('bin/vmesh.js', ROOT));

/** What `vmesh up` runs, by bin/vmesh.js's own rule: dist/ when built after every change to src/. */
export type NodeCode = 'dist/ (compiled)' | 'src/ through tsx';

export function nodeCode(): NodeCode {
  if (process.env.VMESH_FROM_SOURCE === '1') return 'src/ through tsx';
  let built: number;
  try {
    built = statSync(new URL('dist/.stamp', ROOT)).mtimeMs;
  } catch {
    return 'src/ through tsx';
  }
  const src = new URL('src/', ROOT);
  const fresh = readdirSync(src, { recursive: true }).every((rel) => statSync(new URL(String(rel), src)).mtimeMs <= built);
  return fresh ? 'dist/ (compiled)' : 'src/ through tsx';
}

export interface NodeOptions {
  home: string;
  workers: number;
  /** Worker threads idle this long end (the node's `workerIdleMs`), so that idle RSS can be read soon after a load. */
  workerIdleMs?: number;
  readyTimeoutMs?: number;
}

/** A vmesh node running in a child process, so that it never shares an event loop with the load. */
export interface NodeProcess {
  readonly pid: number;
  readonly url: string;
  readonly token: string;
  /** From spawning the process to the first healthy answer of its API. */
  readonly startupMs: number;
  /** The code it runs, judged when it was started. */
  readonly code: NodeCode;
  stop(): Promise<void>;
}

/** Starts `vmesh up` in the foreground of a child process and resolves once its API answers. */
export async function startNode({ home, workers, workerIdleMs, readyTimeoutMs = 60_000 }: NodeOptions): Promise<NodeProcess> {
  if (workerIdleMs !== undefined) writeFileSync(path.join(home, 'config.json'), JSON.stringify({ workerIdleMs }));
  // BENCH_NODE_ARGS: Node.js flags for the node, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile it.
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const args = [...nodeArgs, BIN, '--home', home, 'up', '--port', '0', '--workers', String(workers), '--log-level', 'warn'];
  const code = nodeCode();
  const started = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const stderr = tail(child);
  try {
    const url = await waitForApi(home, child, readyTimeoutMs, stderr);
    const startupMs = performance.now() - started;
    const token = readFileSync(path.join(home, 'token'), 'utf8').trim();
    return { pid: child.pid!, url, token, startupMs, code, stop: () => stopChild(child) };
  } catch (err) {
    await stopChild(child);
    throw err;
  }
}

/** Keeps the last few KiB of the child's stderr (to explain a failed start) and keeps the pipe drained. */
function tail(child: ChildProcess): () => string {
  let kept = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    kept = (kept + chunk).slice(-8192);
  });
  return () => kept.trim();
}

async function waitForApi(home: string, child: ChildProcess, timeoutMs: number, stderr: () => string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the vmesh node exited (${child.exitCode ?? child.signalCode}) while starting:\n${stderr()}`);
    }
    const url = daemonUrl(home, child.pid!);
    if (url !== undefined && (await healthy(url))) return url;
    await sleep(100);
  }
  throw new Error(`the vmesh node did not answer within ${timeoutMs} ms:\n${stderr()}`);
}

/** The API url from node.json, once the node that wrote it is our child. */
function daemonUrl(home: string, pid: number): string | undefined {
  try {
    const info = JSON.parse(readFileSync(path.join(home, 'node.json'), 'utf8')) as { pid?: number; url?: string };
    return info.pid === pid ? info.url : undefined;
  } catch {
    return undefined;
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

/** SIGTERM (the node drains and exits), then SIGKILL if it has not gone within a few seconds. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
