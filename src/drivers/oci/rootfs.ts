import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidInputError } from '../../spec/index.ts';

const DEFAULT_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const MAX_SYMLINKS = 40;

/**
 * Resolves a path as the container will see it: inside `rootfs`, following symlinks with absolute
 * targets relative to the rootfs, never leaving it. Returns the host path of a regular file, or
 * undefined when there is none.
 */
export async function fileInRoot(rootfs: string, inside: string): Promise<string | undefined> {
  const parts = inside.split('/').filter((p) => p !== '' && p !== '.');
  const resolved: string[] = [];
  let hops = 0;
  while (parts.length > 0) {
    const part = parts.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const host = path.join(rootfs, ...resolved, part);
    const stat = await fs.lstat(host).catch(() => undefined);
    if (stat === undefined) return undefined;
    if (stat.isSymbolicLink()) {
      if (++hops > MAX_SYMLINKS) return undefined;
      const target = await fs.readlink(host);
      if (target.startsWith('/')) resolved.length = 0;
      parts.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
      continue;
    }
    resolved.push(part);
    if (parts.length === 0) return stat.isFile() ? host : undefined;
  }
  return undefined;
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
