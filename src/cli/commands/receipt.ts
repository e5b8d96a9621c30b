import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { MAX_RECEIPT_BYTES, verifyReceipt } from '../../trust/receipt.ts';
import { withClient } from '../connect.ts';
import { EXIT } from '../exit-codes.ts';
import { printJson } from '../format.ts';

/** `vmesh receipt <run>` prints a run's signed receipt; `vmesh receipt verify <file>` checks one offline. */
export function receiptCommands(program: Command): void {
  const receipt = program
    .command('receipt')
    .description("a run's receipt, signed by the node that executed it (`verify` checks one offline)")
    .argument('[id]', 'run id')
    .option('-o, --out <file>', 'write the receipt to this file instead of stdout')
    .action((id: string | undefined, opts: { out?: string }, cmd: Command) =>
      withClient(cmd, async (client) => {
        if (id === undefined) return void cmd.help({ error: true });
        const run = await client.getRun(id);
        if (run.receipt === undefined) {
          process.stderr.write(`vmesh: run ${id} has no receipt yet (it is ${run.state}; a receipt is signed when a run ends)\n`);
          process.exitCode = EXIT.notFound;
          return;
        }
        const text = `${JSON.stringify(run.receipt, null, 2)}\n`;
        if (opts.out === undefined) process.stdout.write(text);
        else writeFileSync(opts.out, text, { flag: 'wx' });
      }),
    );
  receipt
    .command('verify')
    .description("check a receipt with nothing but itself: its signer's key is in the signer's node id")
    .argument('<file>', 'a receipt as `vmesh receipt` prints it, or - for stdin')
    .action(async (file: string, _opts: object, cmd: Command) => {
      const json = cmd.optsWithGlobals<{ json?: boolean }>().json === true;
      let text: string;
      try {
        const bytes = readFileSync(file === '-' ? 0 : file);
        if (bytes.byteLength > MAX_RECEIPT_BYTES) throw new Error(`${bytes.byteLength} bytes, more than a receipt's ${MAX_RECEIPT_BYTES}`);
        text = bytes.toString('utf8');
      } catch (err) {
        process.stderr.write(`vmesh: cannot read ${file}: ${(err as Error).message}\n`);
        process.exitCode = EXIT.usage;
        return;
      }
      try {
        const r = await verifyReceipt(text);
        if (json) printJson({ valid: true, receipt: r });
        else {
          process.stdout.write(`valid: signed by node ${r.node}\n`);
          process.stdout.write(`run ${r.run} ${r.state}${r.driver === undefined ? '' : ` on ${r.driver}`}${r.requester === undefined ? '' : ` for node ${r.requester}`}\n`);
          process.stdout.write(`spec ${r.specHash}\n`);
          if (r.resultHash !== undefined) process.stdout.write(`result ${r.resultHash} (exit code ${r.result?.exitCode ?? 'none'})\n`);
          process.stdout.write(`from ${r.startedAt ?? r.createdAt} to ${r.endedAt}\n`);
        }
      } catch (err) {
        if (json) printJson({ valid: false, error: (err as Error).message });
        else process.stderr.write(`vmesh: invalid receipt: ${(err as Error).message}\n`);
        process.exitCode = EXIT.runFailed;
      }
    });
}
