import os from 'node:os';
import type { Benchmark, BenchReport } from './lib/benchmark.ts';
import { envNumber } from './lib/env.ts';
import { measureApi } from './functions/api.ts';
import { measureBare } from './functions/bare.ts';
import { loadHelloWasm, type Settings } from './functions/common.ts';
import { measureDriver } from './functions/driver.ts';
import { renderMarkdown, renderText, type FunctionsResults } from './functions/report.ts';

/** A trivial wasm function three ways: bare node:wasi, the wasm driver in-process, the HTTP API of a node. */
export const functionsBenchmark: Benchmark = {
  name: 'functions',
  async run(log): Promise<BenchReport> {
    const settings = settingsFromEnv();
    const code = loadHelloWasm();
    log('functions: bare node:wasi on this thread');
    const bare = await measureBare(code, settings);
    log('functions: POST /v1/runs on a node in a child process');
    const api = await measureApi(code, settings, log);
    log(`functions: WasmDriver in-process (${settings.workers} workers)`);
    const driver = await measureDriver(code, settings);
    const results: FunctionsResults = { settings, cores: os.availableParallelism(), moduleBytes: code.byteLength, bare, driver, api };
    return { heading: 'Functions: API round trip (issue 2)', text: renderText(results), markdown: renderMarkdown(results) };
  },
};

function settingsFromEnv(): Settings {
  return {
    durationMs: envNumber('BENCH_DURATION_S', 5, { min: 0.1 }) * 1000,
    warmupMs: envNumber('BENCH_WARMUP_S', 1) * 1000,
    concurrency: envNumber('BENCH_CONCURRENCY', 32, { min: 1, integer: true }),
    workers: envNumber('BENCH_WORKERS', 2, { min: 1, integer: true }),
    idleMs: envNumber('BENCH_IDLE_S', 2) * 1000,
    settleMs: envNumber('BENCH_SETTLE_S', 60) * 1000,
  };
}
