import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withClient } from '../connect.ts';
import { printJson } from '../format.ts';
import { hashingTap } from '../../util/hashing-tap.ts';

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
        const file = path.resolve(opts.out === '<id>-outputs.tar' ? `${id}-outputs.tar` : opts.out);
        if (!opts.force && existsSync(file)) throw new Error(`${file} exists; pass --force to overwrite it`);
        // Written beside the target and renamed, so an interrupted download never leaves a partial tar under its name.
        const temp = `${file}.${randomBytes(4).toString('hex')}.part`;
        const tap = hashingTap();
        try {
          await pipeline(body, tap.stream, createWriteStream(temp, { mode: 0o644 }));
          await fs.rename(temp, file);
        } catch (err) {
          await fs.rm(temp, { force: true });
          throw err;
        }
        const [bytes, blob] = [tap.bytes(), tap.digest()];
        if (global.json) printJson({ file, bytes, blob });
        else process.stderr.write(`vmesh: wrote ${bytes} bytes to ${file} (${blob})\n`);
      }),
    );
}
