import type { Command } from 'commander';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withClient } from '../connect.ts';
import { printJson } from '../format.ts';
import { saveStream } from '../save-stream.ts';

/** `vmesh outputs <id>`: download the tar of a run's declared outputs. */
export function outputsCommand(program: Command): void {
  program
    .command('outputs')
    .description("download a run's declared outputs as a tar (to a file, or - for stdout)")
    .argument('<id>', 'run id')
    .option('-o, --out <file>', 'where to write the tar; - writes it to stdout', '<id>-outputs.tar')
    .option('--force', 'overwrite the file if it exists')
    .action((id: string, opts: { out: string; force?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const body = Readable.fromWeb(await client.outputs(id));
        if (opts.out === '-') {
          await pipeline(body, process.stdout);
          return;
        }
        const target = opts.out === '<id>-outputs.tar' ? `${id}-outputs.tar` : opts.out;
        const { file, bytes, blob } = await saveStream(body, target, { force: opts.force ?? false });
        if (global.json) printJson({ file, bytes, blob });
        else process.stderr.write(`vmesh: wrote ${bytes} bytes to ${file} (${blob})\n`);
      }),
    );
}
