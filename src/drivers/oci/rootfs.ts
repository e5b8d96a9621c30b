import { InvalidInputError } from '../../spec/index.ts';
import { resolveInRoot } from './in-root.ts';

const DEFAULT_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The host path of a regular file as the container will see it (see resolveInRoot), or undefined. */
export async function fileInRoot(rootfs: string, inside: string): Promise<string | undefined> {
  const found = await resolveInRoot(rootfs, inside);
  return 'host' in found && found.kind === 'file' ? found.host : undefined;
}

/**
 * Checks that the command's program exists in the root file system (searching PATH for a bare name),
 * so that a typo fails before anything is created. Returns the arguments unchanged: the runtime resolves
 * the program again inside the container.
 */
export async function resolveCommand(rootfs: string, args: string[], env: Record<string, string>): Promise<string[]> {
  const program = args[0]!;
  const searchPath = program.includes('/') ? [''] : (env.PATH?.split(':') ?? DEFAULT_PATH);
  for (const dir of searchPath) {
    const candidate = program.includes('/') ? program : `${dir}/${program}`;
    if (await fileInRoot(rootfs, candidate.startsWith('/') ? candidate : `/${candidate}`)) return args;
  }
  throw new InvalidInputError(`command: ${JSON.stringify(program)} does not exist in the container's root file system`, { field: 'command' });
}
