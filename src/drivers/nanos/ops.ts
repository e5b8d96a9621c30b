// The ops command line (github.com/nanovms/ops 0.1.46), as vmesh uses it: to learn its version and the
// Nanos kernel it holds, and to build a run's image. vmesh starts the image with QEMU itself.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { CommandError, run } from '../../util/exec.ts';
import { moveFile } from '../../util/files.ts';

export interface OpsVersions {
  ops: string;
  /** The Nanos kernel ops builds images with (from its ~/.ops/latest.txt); undefined when it holds none. */
  nanos?: string;
}

/** How long `ops build` may take: it copies the program, its libraries and inputs into a new image. */
const BUILD_TIMEOUT_MS = 300_000;

/**
 * ops asks storage.googleapis.com for the newest Nanos release on every command, and downloads it when
 * newer. A node runs it without a network (a network namespace of its own, when it may make one), so a
 * build uses the kernel the operator installed (`ops update`) and never reaches out mid-run.
 */
function offline(binary: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['unshare', ['--net', '--', binary, ...args]] : [binary, args];
}

/** Where ops keeps its kernels and images: $OPS_HOME/.ops, else ~/.ops. */
export function opsHome(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.OPS_HOME ?? os.homedir(), '.ops');
}

/** `ops version`: "Ops version: X" and "Nanos version: Y" (0.0 when it holds no kernel). */
export async function opsVersions(binary: string, signal?: AbortSignal): Promise<OpsVersions> {
  const [command, args] = offline(binary, ['version']);
  const { stdout } = await run(command, args, { timeoutMs: 20_000, ...(signal === undefined ? {} : { signal }) });
  const ops = /Ops version:\s*(\S*)/.exec(stdout)?.[1];
  const nanos = /Nanos version:\s*(\S+)/.exec(stdout)?.[1];
  if (ops === undefined) throw new Error(`${binary} version printed no "Ops version:" line: ${stdout.trim().slice(0, 200)}`);
  return { ops: ops || 'unknown', ...(nanos === undefined || nanos === '0.0' ? {} : { nanos }) };
}

/**
 * Builds the image of the program staged in `dir` (its config in `dir`/config.json, its files relative to
 * `dir`) under `name` in ops's image directory, and moves it to `target`. ops exits 0 even when the
 * build failed, so the image's presence is what tells.
 */
export async function buildImage(binary: string, dir: string, program: string, name: string, target: string, signal?: AbortSignal): Promise<void> {
  const [command, args] = offline(binary, ['build', program, '-c', 'config.json', '-i', name]);
  const built = path.join(opsHome(), 'images', name);
  let printed = '';
  try {
    const { stdout, stderr } = await run(command, args, { cwd: dir, timeoutMs: BUILD_TIMEOUT_MS, ...(signal === undefined ? {} : { signal }) });
    printed = `${stdout}${stderr}`;
  } catch (err) {
    await fs.rm(built, { force: true });
    throw err;
  }
  try {
    await moveFile(built, target);
  } catch {
    await fs.rm(built, { force: true });
    throw new CommandError([command, ...args].join(' '), 0, `no image came of it: ${stripVTControlCharacters(printed).trim().slice(-1000) || 'it printed nothing'}`);
  }
}

/**
 * Copies the image's `/out` into `dest` (a directory, made here), as `dest/out`, with `ops image cp`. ops
 * reads images only from its own image directory, by name: the image is linked there under `name` for
 * the copy. ops exits 0 even when the copy failed, so whether `dest/out` exists is what tells.
 */
export async function copyOut(binary: string, image: string, name: string, dest: string, signal?: AbortSignal): Promise<string> {
  const images = path.join(opsHome(), 'images');
  const link = path.join(images, name);
  await fs.mkdir(images, { recursive: true });
  await fs.mkdir(dest, { recursive: true });
  await fs.symlink(image, link);
  try {
    const [command, args] = offline(binary, ['image', 'cp', name, '/out', dest, '-r']);
    await run(command, args, { timeoutMs: BUILD_TIMEOUT_MS, ...(signal === undefined ? {} : { signal }) });
  } finally {
    await fs.rm(link, { force: true });
  }
  return path.join(dest, 'out');
}
