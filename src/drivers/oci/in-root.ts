import { promises as fs } from 'node:fs';
import path from 'node:path';

const MAX_SYMLINK_HOPS = 40;

export type InRoot =
  | { host: string; kind: 'file' | 'directory' | 'other' }
  | { problem: 'missing' | 'not a directory' | 'too many levels of symlinks'; at: string };

/**
 * Resolves a path the way a process inside `rootfs` would see it: symlinks are followed, an absolute
 * target starts again from the root, and `..` never climbs above it. Nothing on the host outside the
 * root is ever looked at. With `createDirectories`, missing components are made as directories.
 */
export async function resolveInRoot(rootfs: string, inside: string, { createDirectories = false } = {}): Promise<InRoot> {
  const pending = inside.split('/').filter((p) => p !== '' && p !== '.');
  const resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const host = path.join(rootfs, ...resolved, part);
    const at = [...resolved, part].join('/');
    let stat = await fs.lstat(host).catch(() => undefined);
    if (stat === undefined) {
      if (!createDirectories) return { problem: 'missing', at };
      await fs.mkdir(host, { mode: 0o755 });
      stat = await fs.lstat(host);
    }
    if (stat.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) return { problem: 'too many levels of symlinks', at };
      const target = await fs.readlink(host);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
      continue;
    }
    resolved.push(part);
    if (pending.length > 0 && !stat.isDirectory()) return { problem: 'not a directory', at };
    if (pending.length === 0) return { host, kind: stat.isFile() ? 'file' : stat.isDirectory() ? 'directory' : 'other' };
  }
  return { host: path.join(rootfs, ...resolved), kind: 'directory' };
}
