import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const CGROUP_ROOT = '/sys/fs/cgroup';

export interface ContainerOutput {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs an OCI runtime command to its end, its output captured (as the oci driver does, through spawn). */
export function runRuntime(command: string, args: readonly string[]): Promise<ContainerOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') }));
  });
}

/** The containers in a runtime state directory (`--root`); none when it does not exist. */
export async function listContainers(command: string, stateDir: string): Promise<string[]> {
  if (!existsSync(stateDir)) return [];
  const { stdout } = await exec(command, ['--root', stateDir, 'list', '--quiet'], { timeout: 30_000 });
  return stdout.split('\n').filter((id) => id !== '');
}

/** Kills and deletes every container in a runtime state directory; returns how many there were. */
export async function removeContainers(command: string, stateDir: string): Promise<number> {
  const ids = await listContainers(command, stateDir).catch(() => []);
  for (const id of ids) await exec(command, ['--root', stateDir, 'delete', '--force', id], { timeout: 30_000 }).catch(() => {});
  return ids.length;
}

/**
 * The directories of a cgroup (`rel` as given to the runtime as cgroupsPath, without the leading slash) in
 * every hierarchy: one on cgroup v2, one per controller (and named hierarchy) on v1.
 */
export function cgroupDirs(rel: string): string[] {
  const hierarchies = [CGROUP_ROOT, ...readdirSync(CGROUP_ROOT).map((h) => path.join(CGROUP_ROOT, h))];
  // v1 hosts often link cpu and cpuacct to one hierarchy: count each directory once.
  return [...new Set(hierarchies.map((h) => path.join(h, rel)).filter((d) => existsSync(d)).map((d) => realpathSync(d)))];
}

/** Removes an empty cgroup from every hierarchy; a busy one is left where it is. */
export function removeCgroup(rel: string): void {
  for (const dir of cgroupDirs(rel)) removeEmptyDir(dir);
}

/** Processes in the child cgroups of `parentRel`: the containers running under it. */
export function containerProcesses(parentRel: string): number {
  const parent = cgroupDirs(parentRel)[0];
  if (parent === undefined) return 0;
  let processes = 0;
  for (const child of readdirSync(parent, { withFileTypes: true })) {
    if (!child.isDirectory()) continue;
    try {
      processes += readFileSync(path.join(parent, child.name, 'cgroup.procs'), 'utf8').split('\n').filter((l) => l !== '').length;
    } catch {
      /* removed meanwhile */
    }
  }
  return processes;
}

function removeEmptyDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* still has processes in it: not ours to force */
  }
}
