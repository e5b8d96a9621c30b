import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Workload } from '../../src/spec/index.ts';
import type { PhaseResult } from '../lib/load.ts';

export { WrongResultError } from '../lib/load.ts';

const HELLO_WASM = fileURLToPath(new URL('../../examples/hello.wasm', import.meta.url));
const BUILD_EXAMPLES = fileURLToPath(new URL('../../scripts/build-examples.mjs', import.meta.url));

/** hello.wasm prints "hello, <argv[1]>"; every run of every way is checked for exactly this output. */
export const ARG = 'bench';
export const EXPECTED_STDOUT = `hello, ${ARG}\n`;

export interface Settings {
  /** Length of each measured phase. */
  durationMs: number;
  /** Length of the unmeasured run before each phase. */
  warmupMs: number;
  /** Concurrent loops (driver) or connections (API) of the throughput phases. */
  concurrency: number;
  /** Worker threads of the wasm driver, in-process and in the node. */
  workers: number;
  /** Quiet time before each memory reading of the node. */
  idleMs: number;
  /** After the load, how long to wait at most for the idle node's RSS to come down. */
  settleMs: number;
}

/** One way of running the function: latency alone (concurrency 1) and throughput under load. */
export interface WayResult {
  single: PhaseResult;
  loaded: PhaseResult;
}

/** The example module, built from examples/hello.wat first if `npm install` has not built it. */
export function loadHelloWasm(): Uint8Array {
  if (!existsSync(HELLO_WASM)) {
    const build = spawnSync(process.execPath, [BUILD_EXAMPLES], { encoding: 'utf8' });
    if (build.status !== 0 || !existsSync(HELLO_WASM)) {
      throw new Error(`examples/hello.wasm is missing and building it failed:\n${build.stderr}${build.stdout}`);
    }
  }
  return readFileSync(HELLO_WASM);
}

/** The workload as a client submits it: the module inline, in base64. */
export function helloWorkload(code: Uint8Array): Workload {
  return { kind: 'function', source: { inline: Buffer.from(code).toString('base64'), encoding: 'base64' }, args: [ARG] };
}
