import type { Command } from 'commander';
import path from 'node:path';
import { readDaemonInfo } from '../../daemon/info.ts';
import { defaultHome } from '../../node/home.ts';
import { withClient, type GlobalOptions } from '../connect.ts';
import { EXIT } from '../exit-codes.ts';
import { printJson } from '../format.ts';
import { alive } from './up.ts';

/** `vmesh logs`, `vmesh cancel`, `vmesh down`. */
export function controlCommands(program: Command): void {
  program
    .command('logs')
    .description("print a run's output; -f follows it until it ends")
    .argument('<id>', 'run id')
    .option('-f, --follow', 'keep printing until the run ends')
    .action((id: string, opts: { follow?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        for await (const e of client.logs(id, { follow: opts.follow ?? false })) {
          if (global.json) process.stdout.write(`${JSON.stringify(e)}\n`);
          else if (e.event === 'stdout') process.stdout.write(e.text);
          else if (e.event === 'stderr') process.stderr.write(e.text);
          else if (e.event === 'state' && e.reason !== undefined) process.stderr.write(`vmesh: ${e.state}: ${e.reason}\n`);
        }
      }),
    );

  program
    .command('cancel')
    .description('cancel a queued or running run')
    .argument('<id>', 'run id')
    .action((id: string, _opts: object, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const run = await client.cancel(id);
        if (global.json) printJson(run);
        else process.stdout.write(`${run.id} ${run.state === 'cancelled' ? 'cancelled' : `cancelling (${run.state})`}\n`);
      }),
    );

  program
    .command('down')
    .description('stop the node started by `vmesh up --detach`')
    .option('--timeout <ms>', 'how long to wait for a clean stop before SIGKILL', (v) => Number(v), 30_000)
    .action(async (opts: { timeout: number }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const home = path.resolve(global.home ?? defaultHome());
      const info = readDaemonInfo(home);
      if (info === undefined || !alive(info.pid)) {
        if (global.json) printJson({ status: 'not running' });
        else process.stdout.write('no vmesh node is running here\n');
        return;
      }
      process.kill(info.pid, 'SIGTERM');
      const deadline = Date.now() + opts.timeout;
      while (alive(info.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (alive(info.pid)) {
        process.kill(info.pid, 'SIGKILL');
        process.stderr.write(`vmesh: the node did not stop within ${opts.timeout} ms; killed it\n`);
        process.exitCode = EXIT.runFailed;
      }
      if (global.json) printJson({ status: 'stopped', pid: info.pid, nodeId: info.nodeId });
      else process.stdout.write(`vmesh node ${info.nodeId} stopped\n`);
    });
}
