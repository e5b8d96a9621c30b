import type { Target } from '../lib/benchmark.ts';
import { count, mib, ms, rate, ratio, tableMarkdown, tableText, type Row, type Table } from '../lib/format.ts';
import { failureWarnings, type PhaseResult } from '../lib/load.ts';
import type { ApiResult } from './api.ts';
import { EXPECTED_STDOUT, type Settings, type WayResult } from './common.ts';
import type { DriverResult } from './driver.ts';

/** The goals of issue 2. */
export const TARGETS = { apiP50Ms: 3, runsPerSecond: 1000, runsConcurrency: 32, runsCores: 2, idleRssMiB: 120 } as const;

export interface FunctionsResults {
  settings: Settings;
  cores: number;
  moduleBytes: number;
  bare: WayResult;
  driver: DriverResult;
  api: ApiResult;
}

export function renderText(r: FunctionsResults): string {
  const parts = tables(r).map(tableText);
  return [settingsLine(r), sampleLine(r), ...parts, ...failureLines(r), ...leakLines(r)].join('\n\n');
}

export function renderMarkdown(r: FunctionsResults): string {
  const parts = tables(r).map(tableMarkdown);
  const failures = failureLines(r);
  const outcome = failures.length > 0 ? failures : ['Every measured run succeeded with the expected output.'];
  return [settingsLine(r), sampleLine(r), ...parts, ...outcome, ...leakLines(r), WAYS].join('\n\n');
}

const WAYS = `What each way measures:

- **bare**: \`WebAssembly.instantiate\` of the already compiled module and \`wasi.start\` with node:wasi, stdout to /dev/null,
  on the benchmark's own thread; one loop, as the work is synchronous on one thread.
- **driver**: \`runInSandbox(new WasmDriver(...), request, io)\` in the benchmark process: scratch directory, module
  memory limit and cache lookup, a pooled worker thread, output capture, cleanup.
- **API**: \`POST /v1/runs\` (waiting for the result) with autocannon against \`vmesh up\` in a child process: HTTP,
  auth, validation, the store, the ledger and the executor on top of the driver. Latency is per request, client side.

Each figure comes from one phase of a few seconds; on a small or shared machine expect run-to-run variation of
tens of percent, and compare ratios from the same run rather than figures from different runs.`;

function tables(r: FunctionsResults): Table[] {
  return [figuresTable(r), ratiosTable(r), nodeTable(r), targetsTable(r)];
}

function figuresTable({ bare, driver, api, settings }: FunctionsResults): Table {
  const row = (way: string, w: WayResult, at: string): Row => [
    way,
    ms(w.single.latency.p50),
    ms(w.single.latency.p99),
    rate(w.loaded.runsPerSecond),
    at,
    ms(w.loaded.latency.p50),
    ms(w.loaded.latency.p99),
    count(w.single.ok + w.loaded.ok),
    count(w.single.failed + w.loaded.failed),
  ];
  const c = `c=${settings.concurrency}`;
  return {
    title: 'Latency and throughput',
    header: ['way', 'p50 (c=1)', 'p99 (c=1)', 'throughput', 'at', 'p50 loaded', 'p99 loaded', 'runs ok', 'failed'],
    rows: [row('bare node:wasi', bare, 'c=1 loop'), row('driver in-process', driver, c), row('HTTP API', api, c)],
  };
}

function ratiosTable({ bare, driver, api }: FunctionsResults): Table {
  const p50 = (w: WayResult) => w.single.latency.p50;
  const p99 = (w: WayResult) => w.single.latency.p99;
  const tput = (w: WayResult) => w.loaded.runsPerSecond;
  return {
    title: 'Ratios',
    header: ['ratio', 'value'],
    rows: [
      ['driver p50 / bare p50', ratio(p50(driver) / p50(bare))],
      ['API p50 / bare p50', ratio(p50(api) / p50(bare))],
      ['API p50 / driver p50', ratio(p50(api) / p50(driver))],
      ['driver p99 / bare p99', ratio(p99(driver) / p99(bare))],
      ['API p99 / bare p99', ratio(p99(api) / p99(bare))],
      ['API p99 / driver p99', ratio(p99(api) / p99(driver))],
      ['driver throughput / bare throughput', ratio(tput(driver) / tput(bare))],
      ['API throughput / driver throughput', ratio(tput(api) / tput(driver))],
      ['API throughput / bare throughput', ratio(tput(api) / tput(bare))],
    ],
  };
}

function nodeTable({ api, settings, cores }: FunctionsResults): Table {
  const { afterStart, afterLoad } = api.memory;
  const during = `during the c=${settings.concurrency} phase`;
  return {
    title: 'Node process (child, read from /proc)',
    header: ['reading', 'value'],
    rows: [
      ['code run (see bin/vmesh.js)', api.code],
      ['start-up (spawn to healthy API)', ms(api.startupMs)],
      ['idle RSS after start', mib(afterStart.rssMiB)],
      [`RSS ${settings.idleMs / 1000} s after the load`, mib(afterLoad.rssMiB)],
      [`idle RSS once settled (${(api.memory.settled.afterMs / 1000).toFixed(0)} s after the load)`, mib(api.memory.settled.rssMiB)],
      ['peak RSS (VmHWM)', mib(afterLoad.peakMiB)],
      ['open file descriptors after start', count(api.fds.afterStart)],
      ['open file descriptors after the load', count(api.fds.afterLoad)],
      [`node CPU ${during}, all threads`, cpu(api.cpu.nodeCores, cores)],
      [`node CPU ${during}, main thread`, cpu(api.cpu.nodeMainThreadCores, cores)],
      [`load generator CPU ${during}`, cpu(api.cpu.loadGeneratorCores, cores)],
    ],
  };
}

function cpu(cores: number, of: number): string {
  return `${cores.toFixed(2)} of ${of} cores`;
}

function targetsTable(r: FunctionsResults): Table {
  return {
    title: 'Targets (issue 2)',
    header: ['target', 'measured', 'result'],
    rows: targets(r).map((t) => [t.goal, t.measured, t.pass ? 'PASS' : 'MISS']),
  };
}

/** A figure measured while runs failed does not pass, however good it looks. */
export function targets({ api, settings, cores }: FunctionsResults): Target[] {
  const failedNote = (p: PhaseResult) => (p.failed > 0 ? `, ${count(p.failed)} failed` : '');
  const idleRss = Math.max(api.memory.afterStart.rssMiB, api.memory.settled.rssMiB);
  return [
    {
      goal: `API round trip p50 <= ${TARGETS.apiP50Ms} ms (loopback, warm)`,
      measured: `${ms(api.single.latency.p50)}${failedNote(api.single)}`,
      pass: api.single.failed === 0 && api.single.latency.p50 <= TARGETS.apiP50Ms,
    },
    {
      goal: `>= ${count(TARGETS.runsPerSecond)} runs/s at concurrency ${TARGETS.runsConcurrency} on ${TARGETS.runsCores} cores`,
      measured: `${rate(api.loaded.runsPerSecond)} (c=${settings.concurrency}, ${cores} cores${failedNote(api.loaded)})`,
      pass: api.loaded.failed === 0 && api.loaded.runsPerSecond >= TARGETS.runsPerSecond,
    },
    {
      goal: `idle node RSS <= ${TARGETS.idleRssMiB} MiB`,
      measured: `${mib(api.memory.afterStart.rssMiB)} after start, ${mib(api.memory.settled.rssMiB)} idle ${(api.memory.settled.afterMs / 1000).toFixed(0)} s after the load`,
      pass: idleRss <= TARGETS.idleRssMiB,
    },
  ];
}

function settingsLine({ settings: s, moduleBytes }: FunctionsResults): string {
  return (
    `Workload: examples/hello.wasm (${moduleBytes} bytes) with args ["bench"]; every run is checked for exit 0 / state ` +
    `"succeeded" and stdout ${JSON.stringify(EXPECTED_STDOUT)}. Each phase runs ${s.durationMs / 1000} s after a ` +
    `${s.warmupMs / 1000} s warm-up; throughput at concurrency ${s.concurrency}; the wasm driver has ${s.workers} worker threads ` +
    `(in-process and in the node).`
  );
}

function sampleLine({ api }: FunctionsResults): string {
  const s = api.sample;
  const nodeSide = s.totalMs === undefined ? '' : `, node-side totalMs ${s.totalMs}`;
  return `Sample API response: HTTP ${s.status}, state ${s.state}, stdout ${JSON.stringify(s.stdout)}${nodeSide}.`;
}

/** Descriptors still open after the runs that needed them have ended, in this process and in the node. */
function leakLines({ driver, api }: FunctionsResults): string[] {
  const lines: string[] = [];
  const { before, after, runs } = driver.fds;
  if (after - before > runs / 10) {
    lines.push(`WARNING the in-process driver left ${count(after - before)} more descriptors open than before its ${count(runs)} runs.`);
  }
  const nodeRuns = api.single.ok + api.loaded.ok;
  if (api.fds.afterLoad - api.fds.afterStart > nodeRuns / 10) {
    lines.push(
      `WARNING the node holds ${count(api.fds.afterLoad - api.fds.afterStart)} more descriptors after the load than after start ` +
        `(${count(nodeRuns)} measured runs, warm-ups not counted).`,
    );
  }
  return lines;
}

function failureLines({ bare, driver, api }: FunctionsResults): string[] {
  return failureWarnings([
    ['bare, c=1', bare.single],
    ['bare, loop', bare.loaded],
    ['driver, c=1', driver.single],
    [`driver, c=${driver.loaded.concurrency}`, driver.loaded],
    ['API, c=1', api.single],
    [`API, c=${api.loaded.concurrency}`, api.loaded],
  ]);
}
