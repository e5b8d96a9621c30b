import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** A host command that failed: carries the command line and what it printed. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command} failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no output'}`);
    this.name = 'CommandError';
  }
}

/** Runs a host command (no shell), with a time limit; rejects with CommandError when it fails. */
export function run(command: string, args: readonly string[], options: { timeoutMs?: number; signal?: AbortSignal; cwd?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: options.timeoutMs ?? 30_000, signal: options.signal, maxBuffer: 16 * 2 ** 20, ...(options.cwd === undefined ? {} : { cwd: options.cwd }) }, (err, stdout, stderr) => {
      if (err === null) resolve({ stdout, stderr });
      else reject(new CommandError([command, ...args].join(' '), typeof err.code === 'number' ? err.code : null, stderr || err.message));
    });
  });
}

/** Where `command` is: itself when it names a path, else the first executable file of that name on PATH. */
export async function findCommand(command: string): Promise<string | undefined> {
  const candidates = command.includes('/') ? [path.resolve(command)] : (process.env.PATH ?? '').split(':').filter(Boolean).map((dir) => path.join(dir, command));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      if ((await stat(c)).isFile()) return c;
    } catch {
      /* not here */
    }
  }
  return undefined;
}
