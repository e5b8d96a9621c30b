import { Command, CommanderError } from 'commander';
import { ApiError, NodeUnreachableError } from '../sdk/errors.ts';
import { isVmeshError } from '../spec/errors.ts';
import { VMESH_VERSION } from '../version.ts';
import { blobCommands } from './commands/blob.ts';
import { controlCommands } from './commands/control.ts';
import { inspectCommands } from './commands/inspect.ts';
import { outputsCommand } from './commands/outputs.ts';
import { runCommand } from './commands/run.ts';
import { upCommand } from './commands/up.ts';
import { vmCommands } from './commands/vm.ts';
import { imageCommands } from './commands/image.ts';
import { receiptCommands } from './commands/receipt.ts';
import { EXIT } from './exit-codes.ts';

const program = new Command('vmesh')
  .description('vmesh: a decentralized hypervisor')
  .version(VMESH_VERSION)
  .option('--home <dir>', 'node home: store, token, logs (default $VMESH_HOME or ~/.vmesh)')
  .option('--api <url>', 'API of the node to talk to (default: the one running in the home)')
  .option('--token <token>', 'API bearer token (default: $VMESH_TOKEN or <home>/token)')
  .option('--json', 'machine-readable output')
  .showHelpAfterError()
  .exitOverride();

upCommand(program);
runCommand(program);
inspectCommands(program);
controlCommands(program);
outputsCommand(program);
vmCommands(program);
imageCommands(program);
blobCommands(program);
receiptCommands(program);

function statusToExit(status: number): number {
  if (status === 404) return EXIT.notFound;
  if (status === 400) return EXIT.usage;
  return EXIT.refused;
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : EXIT.usage);
  }
  const json = process.argv.includes('--json');
  let code: number = EXIT.runFailed;
  let body: { code: string; message: string; field?: string };
  if (err instanceof ApiError) {
    code = statusToExit(err.status);
    body = { code: err.code, message: err.message, ...(err.field ? { field: err.field } : {}) };
  } else if (err instanceof NodeUnreachableError) {
    code = EXIT.unreachable;
    body = { code: 'unreachable', message: err.message };
  } else if (isVmeshError(err)) {
    code = err.status < 500 ? EXIT.usage : EXIT.runFailed;
    body = err.toJSON();
  } else if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
    code = EXIT.usage;
    body = { code: 'not_found', message: (err as Error).message };
  } else {
    body = { code: 'error', message: (err as Error).message ?? String(err) };
  }
  if (json) process.stdout.write(`${JSON.stringify({ error: body })}\n`);
  else process.stderr.write(`vmesh: ${body.message}\n`);
  process.exit(code);
}
