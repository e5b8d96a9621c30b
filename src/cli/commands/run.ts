import { isUtf8 } from 'node:buffer';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { Run, Workload, WorkloadKind } from '../../spec/index.ts';
import { isWasm } from '../../drivers/wasm/module-limits.ts';
import type { VmeshClient } from '../../sdk/client.ts';
import { withClient, type GlobalOptions } from '../connect.ts';
import { EXIT, exitCodeOf } from '../exit-codes.ts';
import { printJson, table } from '../format.ts';
import type { PlacementExplanation } from '../../placement/index.ts';
import { collect, collectEnv, parseDuration, parseInteger, parseJson, parseMiB, parseNumber } from '../parse.ts';

export interface RunOptions {
  kind: WorkloadKind;
  runtime?: 'wasm' | 'js';
  input?: unknown;
  stdin?: string;
  arg?: string[];
  env?: Record<string, string>;
  memory?: number;
  vcpus?: number;
  disk?: number;
  timeout?: number;
  driver?: string;
  node?: string;
  isolation?: Workload['isolation'];
  name?: string;
  output?: string[];
  replicas?: number;
  detach?: boolean;
  label?: Record<string, string>;
  region?: string[];
  excludeRegion?: string[];
  minReputation?: number;
  maxRtt?: number;
  strategy?: 'binpack' | 'spread';
  explain?: boolean;
  dryRun?: boolean;
}

export function runCommand(program: Command): void {
  program
    .command('run')
    .description('run a workload and print its output (`-` reads the code from stdin)')
    .argument('<file>', 'a .wasm module, a .js function, - for stdin, (--kind container) a root file system or OCI image directory, or (--kind microvm) guest for the default guest')
    .argument('[args...]', 'arguments for the workload (after --)')
    .option('--kind <kind>', 'function, container, microvm or unikernel', 'function')
    .option('--runtime <runtime>', 'wasm or js (default: from the file)')
    .option('--input <json>', 'JSON input (a js function\'s argument; stdin of a wasm module)', parseJson)
    .option('--stdin <text>', 'text fed to the workload\'s stdin')
    .option('--arg <arg>', 'an argument (repeatable)', collect)
    .option('--env <KEY=VALUE>', 'an environment variable (repeatable)', collectEnv)
    .option('--memory <MiB>', 'memory limit, e.g. 64 or 1GiB', parseMiB)
    .option('--vcpus <n>', 'virtual CPUs', parseNumber)
    .option('--disk <MiB>', 'scratch disk', parseMiB)
    .option('--timeout <duration>', 'wall-clock limit, e.g. 500ms, 10s, 2m', parseDuration)
    .option('--driver <name>', 'use exactly this driver')
    .option('--node <id>', 'run on exactly this node of the mesh (see `vmesh nodes`)')
    .option('--isolation <level>', 'least isolation acceptable: language, process, container or vm')
    .option('--name <name>', 'a label shown by `vmesh ps`')
    .option('--output <path>', 'a file or directory the workload writes (under /out in a container), returned as a tar with the result (repeatable)', collect)
    .option('--replicas <k>', 'keep the outputs archive on k nodes: this run\'s and the k-1 nearest others (1-8)', parseInteger)
    .option('--label <key=value>', 'place only on a node that carries this label (repeatable)', collectEnv)
    .option('--region <name>', 'place only on a node that declares this region (repeatable: any of them)', collect)
    .option('--exclude-region <name>', 'never place on a node that declares this region (repeatable)', collect)
    .option('--min-reputation <0..1>', 'place only on a node this node holds at least this reputation of', parseNumber)
    .option('--max-rtt <duration>', 'place only on a node at most this round trip away, e.g. 20ms', parseDuration)
    .option('--strategy <name>', 'binpack (fill the fullest node that fits) or spread (the emptiest)')
    .option('--explain', 'after the run, print where placement put it and why: every node, filter verdict and score')
    .option('--dry-run', 'print where placement would put the run and why, and run nothing')
    .option('--detach', 'print the run id and return at once')
    .action(async (file: string, args: string[], opts: RunOptions, cmd: Command) => {
      const workload = buildWorkload(file, args, opts);
      await withClient(cmd, async (client, global) => {
        if (opts.dryRun === true) {
          const e = await client.explainPlacement(workload);
          if (global.json) printJson(e);
          else process.stdout.write(`${explanationText(e)}\n`);
          if (e.chosen === null) process.exitCode = EXIT.refused;
          return;
        }
        await submitAndReport(client, global, workload, opts.detach ?? false, opts.explain ?? false);
      });
    });
}

/** Placement's explanation as a table: the nodes that fit by rank with their score terms, then why the others do not. */
export function explanationText(e: PlacementExplanation): string {
  const rows = [['RANK', 'NODE', 'SCORE', 'RESOURCES', 'PROXIMITY', 'REPUTATION', 'LOAD', 'RTT', 'WHY NOT']];
  const n = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(3));
  for (const c of e.candidates) {
    const rtt = c.rtt.ms === null ? 'unknown' : `${c.rtt.ms.toFixed(1)} ms (${c.rtt.source})`;
    const failed = c.filters.filter((f) => !f.pass).map((f) => `${f.filter}: ${f.reason ?? ''}`);
    rows.push([
      c.rank === undefined ? '-' : String(c.rank),
      `${c.node}${c.self ? ' (this node)' : ''}`,
      n(c.score),
      n(c.terms?.resources),
      n(c.terms?.proximity),
      n(c.reputation),
      n(c.terms?.load),
      rtt,
      failed.join('; ') || '-',
    ]);
  }
  const w = e.policy.weights;
  const policy = `${e.policy.strategy}, weights resources ${w.resources} proximity ${w.proximity} reputation ${w.reputation} load ${w.load}, least reputation ${e.policy.minReputation}`;
  return `placement: ${e.summary}\n${e.chosen === null ? 'chosen: none' : `chosen: ${e.chosen}`} (${policy})\n${table(rows)}`;
}

/**
 * Submits a workload the way `vmesh run` does: with --detach, prints the run id at once; with --json, waits
 * and prints the run; otherwise streams its output and prints how it ended. Sets the exit code from the run.
 */
export async function submitAndReport(client: VmeshClient, global: GlobalOptions, workload: Workload, detach: boolean, explain = false): Promise<void> {
  if (detach || global.json) {
    const run = await client.run(workload, { wait: !detach, explain });
    if (global.json) printJson(run);
    else process.stdout.write(`${run.id}\n`);
    if (!detach) process.exitCode = exitCodeOf(run);
    return;
  }
  const run = await streamRun(client, workload, explain);
  printResult(run);
  if (run.placement?.explanation !== undefined) process.stderr.write(`${explanationText(run.placement.explanation)}\n`);
  process.exitCode = exitCodeOf(run);
}

export function buildWorkload(file: string, args: string[], opts: RunOptions): Workload {
  const name = opts.name ?? (file === '-' ? 'stdin' : path.basename(path.resolve(file)));
  let source: Workload['source'];
  if (opts.kind === 'microvm' && file === 'guest') {
    source = { guest: 'default' }; // the command (after --) runs inside the node's default guest
  } else if (file !== '-' && (opts.kind === 'container' || statSync(file).isDirectory())) {
    // A root file system, an image layout or an image archive: the node reads it in place (it must be
    // under its fileRoots).
    source = { file: path.resolve(file) };
  } else {
    const code = file === '-' ? readFileSync(0) : readFileSync(file);
    // Text (a JavaScript module) goes as itself; bytes (a wasm module, a unikernel's ELF) as base64.
    const text = opts.kind !== 'unikernel' && !isWasm(code) && isUtf8(code);
    source = text ? { inline: code.toString('utf8') } : { inline: code.toString('base64'), encoding: 'base64' };
  }
  const workload: Workload = { kind: opts.kind, source, name };
  if (opts.runtime !== undefined) workload.runtime = opts.runtime;
  const allArgs = [...(opts.arg ?? []), ...args];
  if (allArgs.length > 0) workload.args = allArgs;
  if (opts.env !== undefined) workload.env = opts.env;
  if (opts.input !== undefined) workload.input = opts.input;
  if (opts.stdin !== undefined) workload.stdin = opts.stdin;
  if (opts.driver !== undefined) workload.driver = opts.driver;
  const placement: NonNullable<Workload['placement']> = {};
  if (opts.node !== undefined) placement.node = opts.node;
  if (opts.label !== undefined) placement.labels = opts.label;
  if (opts.region !== undefined) placement.regions = opts.region;
  if (opts.excludeRegion !== undefined) placement.excludeRegions = opts.excludeRegion;
  if (opts.minReputation !== undefined) placement.minReputation = opts.minReputation;
  if (opts.maxRtt !== undefined) placement.maxRttMs = opts.maxRtt;
  if (opts.strategy !== undefined) placement.strategy = opts.strategy;
  if (Object.keys(placement).length > 0) workload.placement = placement;
  if (opts.isolation !== undefined) workload.isolation = opts.isolation;
  if (opts.replicas !== undefined) workload.outputs = { paths: opts.output ?? [], replicas: opts.replicas };
  else if (opts.output !== undefined) workload.outputs = opts.output;
  const r: NonNullable<Workload['resources']> = {};
  if (opts.memory !== undefined) r.memoryMiB = opts.memory;
  if (opts.vcpus !== undefined) r.vcpus = opts.vcpus;
  if (opts.disk !== undefined) r.diskMiB = opts.disk;
  if (opts.timeout !== undefined) r.timeoutMs = opts.timeout;
  if (Object.keys(r).length > 0) workload.resources = r;
  return workload;
}

/**
 * Submits the run and prints its stdout and stderr as they come (the node's log stream), so that a long
 * run shows progress; Ctrl-C cancels the run. Resolves with the finished run.
 */
async function streamRun(client: VmeshClient, workload: Workload, explain: boolean): Promise<Run> {
  const { id } = await client.run(workload, { wait: false, explain });
  const onInterrupt = () => {
    process.stderr.write(`\nvmesh: cancelling run ${id}\n`);
    client.cancel(id).catch(() => {});
  };
  process.on('SIGINT', onInterrupt);
  try {
    for await (const e of client.logs(id)) {
      if (e.event === 'stdout') process.stdout.write(e.text);
      else if (e.event === 'stderr') process.stderr.write(e.text);
    }
  } finally {
    process.off('SIGINT', onInterrupt);
  }
  return client.getRun(id);
}

/** After the streamed output: a js function's JSON result, cut streams, outputs, and how it ended. */
function printResult(run: Run): void {
  const r = run.result;
  if (r !== undefined) {
    if (r.output !== undefined) process.stdout.write(`${JSON.stringify(r.output, null, 2)}\n`);
    for (const [name, s] of [['stdout', r.stdout], ['stderr', r.stderr]] as const) {
      if (s.truncated) process.stderr.write(`vmesh: ${name} truncated: the run wrote ${s.bytes} bytes, ${Buffer.byteLength(s.text)} kept\n`);
    }
    for (const f of r.outputs) process.stderr.write(`vmesh: output ${f.path}: ${f.bytes} bytes ${f.sha256}\n`);
    for (const s of r.outputsSkipped ?? []) process.stderr.write(`vmesh: output ${s.path} left out: ${s.reason}\n`);
    if (r.outputsArchive !== undefined) {
      process.stderr.write(`vmesh: outputs archive ${r.outputsArchive.bytes} bytes ${r.outputsArchive.blob}: vmesh outputs ${run.id}\n`);
      const copies = r.outputsArchive.copies;
      if (copies !== undefined) {
        process.stderr.write(`vmesh: outputs kept on ${copies.nodes.length} of ${copies.wanted} nodes: ${copies.nodes.join(', ')}${copies.missing === undefined ? '' : ` (${copies.missing})`}\n`);
      }
    }
  }
  if (run.state !== 'succeeded') {
    process.stderr.write(`vmesh: run ${run.id} ${run.state}${run.reason ? `: ${run.reason}` : ''}\n`);
  }
}
