import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { closedLoop } from '../lib/load.ts';
import { ARG, EXPECTED_STDOUT, WrongResultError, type Settings, type WayResult } from './common.ts';

type WasiClass = typeof import('node:wasi').WASI;
const ARGV = ['hello.wasm', ARG];

/**
 * The floor: instantiate the compiled module and run it with node:wasi on this thread, nothing else.
 * Both phases run one loop (concurrency 1): the work is synchronous on one thread, so more loops
 * would only interleave on the same core.
 */
export async function measureBare(code: Uint8Array, settings: Settings): Promise<WayResult> {
  // Loaded here rather than imported: a static import of a builtin loads it (and prints node:wasi's
  // experimental warning) before bench/run.ts has had a chance to silence that warning.
  const { WASI } = await import('node:wasi');
  const module = await WebAssembly.compile(code as Uint8Array<ArrayBuffer>);
  checkOutput(WASI, module);
  const devNull = openSync('/dev/null', 'w');
  try {
    const run = () => runOnce(WASI, module, devNull);
    await closedLoop(run, { concurrency: 1, durationMs: settings.warmupMs });
    const single = await closedLoop(run, { concurrency: 1, durationMs: settings.durationMs });
    const loaded = await closedLoop(run, { concurrency: 1, durationMs: settings.durationMs });
    return { single, loaded };
  } finally {
    closeSync(devNull);
  }
}

async function runOnce(WASI: WasiClass, module: WebAssembly.Module, stdout: number): Promise<void> {
  const wasi = new WASI({ version: 'preview1', args: ARGV, env: {}, stdout, returnOnExit: true });
  const instance = new WebAssembly.Instance(module, jsImports(wasi));
  const exitCode = wasi.start(instance);
  if (exitCode !== 0) throw new WrongResultError(`exit code ${exitCode}`);
}

/**
 * node:wasi's import object wrapped in plain JS functions: V8 instantiates a module against native
 * imports about 8x slower (it builds a wrapper per native import every time). The floor is the fastest
 * bare use, so that the ratios show what vmesh adds, not what it saves.
 */
function jsImports(wasi: InstanceType<WasiClass>): WebAssembly.Imports {
  const native = (wasi.getImportObject() as { wasi_snapshot_preview1: Record<string, (...args: number[]) => number> }).wasi_snapshot_preview1;
  const wrapped = Object.fromEntries(Object.entries(native).map(([name, fn]) => [name, (...args: number[]) => fn(...args)]));
  return { wasi_snapshot_preview1: wrapped };
}

/** Runs the module once with stdout in a file, so that the baseline is known to do the real work. */
function checkOutput(WASI: WasiClass, module: WebAssembly.Module): void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmesh-bench-bare-'));
  const file = path.join(dir, 'stdout');
  const fd = openSync(file, 'w');
  try {
    const wasi = new WASI({ version: 'preview1', args: ARGV, env: {}, stdout: fd, returnOnExit: true });
    const instance = new WebAssembly.Instance(module, jsImports(wasi));
    wasi.start(instance);
    const text = readFileSync(file, 'utf8');
    if (text !== EXPECTED_STDOUT) throw new WrongResultError(`bare run printed ${JSON.stringify(text)}, expected ${JSON.stringify(EXPECTED_STDOUT)}`);
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}
