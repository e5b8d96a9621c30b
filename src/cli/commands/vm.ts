import type { Command } from 'commander';
import { withClient } from '../connect.ts';
import { printJson } from '../format.ts';
import { parseDuration } from '../parse.ts';
import { submitAndReport } from './run.ts';

/** `vmesh vm pause|resume|snapshot|restore`: a running microVM frozen, captured, and continued. */
export function vmCommands(program: Command): void {
  const vm = program.command('vm').description('pause, resume, snapshot and restore running microVMs');

  for (const [op, description] of [
    ['pause', "freeze a running run's sandbox (its resources stay reserved; its timeout keeps counting)"],
    ['resume', 'let a paused run go on'],
  ] as const) {
    vm.command(op)
      .description(description)
      .argument('<run>', 'run id')
      .action((id: string, _opts: object, cmd: Command) =>
        withClient(cmd, async (client, global) => {
          const run = op === 'pause' ? await client.pause(id) : await client.resume(id);
          if (global.json) printJson(run);
          else process.stdout.write(`${run.id} ${run.state}\n`);
        }),
      );
  }

  vm.command('snapshot')
    .description("capture a running microVM's memory, devices and disks into the node's blob store; the run is left paused")
    .argument('<run>', 'run id')
    .action((id: string, _opts: object, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const info = await client.snapshot(id);
        if (global.json) return printJson(info);
        process.stdout.write(`${info.snapshot}\n`);
        process.stderr.write(`vmesh: run ${id} is paused; ${(info.bytes / 2 ** 20).toFixed(1)} MiB in ${Object.keys(info.files).length} blobs. Continue it with: vmesh vm restore ${info.snapshot}\n`);
      }),
    );

  vm.command('restore')
    .description('continue a snapshot as a new run, printing its output from where it stopped')
    .argument('<snapshot>', 'snapshot id (sha256:…) from `vmesh vm snapshot`')
    .option('--timeout <duration>', 'wall-clock limit of the new run (default: the original run\'s)', parseDuration)
    .option('--detach', 'print the new run id and return at once')
    .action((snapshot: string, opts: { timeout?: number; detach?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const workload = { kind: 'microvm' as const, source: { snapshot }, ...(opts.timeout === undefined ? {} : { resources: { timeoutMs: opts.timeout } }) };
        await submitAndReport(client, global, workload, opts.detach ?? false);
      }),
    );
}
