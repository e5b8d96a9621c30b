import type { Command } from 'commander';
import { createReadStream, promises as fs } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withClient } from '../connect.ts';
import { printJson, table } from '../format.ts';
import { parseInteger } from '../parse.ts';
import { byteProgress } from '../progress.ts';
import { saveStream } from '../save-stream.ts';

const MiB = 2 ** 20;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

/** `vmesh blob put|get|ls|rm`: the node's content-addressed store, and through it the mesh's blob pool. */
export function blobCommands(program: Command): void {
  const blob = program.command('blob').description("content-addressed bytes in the node's store, shared with the mesh");

  blob
    .command('put')
    .description('store a file (or - for stdin) as a blob and print its hash')
    .argument('<file>', 'the file, or - to read stdin')
    .action((file: string, _opts: object, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const size = file === '-' ? undefined : (await fs.stat(file)).size;
        const progress = byteProgress(`sending ${file}`, size);
        const source = file === '-' ? process.stdin : createReadStream(file);
        const body = source.pipe(progress.stream);
        source.once('error', (err: Error) => body.destroy(err));
        try {
          const stored = await client.putBlob(body, size === undefined ? {} : { size });
          if (global.json) return printJson(stored);
          process.stdout.write(`${stored.blob}\n`);
        } finally {
          progress.end();
        }
      }),
    );

  blob
    .command('get')
    .description('write a blob to a file (or - for stdout); a blob this node lacks is fetched from the mesh first')
    .argument('<hash>', 'sha256:<64 hex>')
    .option('-o, --out <file>', 'where to write it; - writes it to stdout', '-')
    .option('--force', 'overwrite the file if it exists')
    .option('--local', 'only from this node: do not ask the mesh')
    .action((hash: string, opts: { out: string; force?: boolean; local?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const got = await client.getBlob(hash, { local: opts.local ?? false });
        const body = Readable.fromWeb(got.body);
        if (opts.out === '-') {
          await pipeline(body, process.stdout);
          return;
        }
        const progress = byteProgress(`receiving ${hash.slice(0, 19)}…`, got.bytes);
        try {
          const saved = await saveStream(body, opts.out, { force: opts.force ?? false, expect: hash, tap: progress.stream });
          const report = { ...saved, ...(got.from === undefined ? {} : { from: got.from }) };
          if (global.json) return printJson(report);
          process.stderr.write(`vmesh: wrote ${saved.bytes} bytes to ${saved.file}${got.from === undefined ? '' : ` (fetched from node ${got.from})`}\n`);
        } finally {
          progress.end();
        }
      }),
    );

  blob
    .command('ls')
    .description("the blobs this node holds, most recently used first, and how full its store is")
    .option('--limit <n>', 'at most this many', parseInteger, 50)
    .action((opts: { limit: number }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const list = await client.listBlobs({ limit: opts.limit });
        if (global.json) return printJson(list);
        const rows = [['BLOB', 'SIZE', 'HELD', 'KEPT FOR OTHERS UNTIL']];
        for (const b of list.blobs) rows.push([b.hash, mib(b.bytes), b.held ? 'by a live run' : '-', b.pinnedUntil ?? '-']);
        const u = list.usage;
        process.stdout.write(
          `${table(rows)}\n${u.blobs} blobs, ${mib(u.bytes)} of ${mib(u.maxBytes)} (limits.blobStoreBytes); ${mib(u.heldBytes)} held by live runs, ${mib(u.pinnedBytes)} kept for other nodes\n`,
        );
      }),
    );

  blob
    .command('rm')
    .description('delete a blob from this node (other nodes keep their copies); refused while a live run holds it')
    .argument('<hash...>', 'sha256:<64 hex>, one or more')
    .action((hashes: string[], _opts: object, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        for (const hash of hashes) await client.deleteBlob(hash);
        if (global.json) printJson({ removed: hashes });
      }),
    );
}
