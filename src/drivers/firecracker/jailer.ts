// Running Firecracker under its jailer, as documented for the pinned release (docs/jailer.md and
// src/jailer/src/env.rs at FIRECRACKER_API_VERSION): the jailer, started as root, makes the chroot
// `<chroot base>/<exec file name>/<id>/root`, copies the firecracker binary into it, pivots into it in a
// mount namespace of its own, makes /dev/kvm and /dev/net/tun there, joins `--netns`, drops to uid:gid and
// execs firecracker in the same process (without --daemonize and --new-pid-ns the pid stays the VMM's).
// Everything Firecracker opens through its API must already be inside the chroot, readable (and, for a
// drive or a log, writable) by that uid: vmesh hard-links the run's files in and gives them to it.
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { run } from '../../util/exec.ts';

export interface JailerOptions {
  /** The jailer binary (default: jailer on PATH); its release must be Firecracker's. */
  binary?: string;
  /** The unprivileged user and group Firecracker runs as (not root). */
  uid: number;
  gid: number;
}

/** The API socket, as the jailed Firecracker names it (inside its chroot). */
export const JAILED_API_SOCKET = '/run/firecracker.socket';

/** The jailer's `--id` check: 1 to 64 alphanumerics and hyphens (src/utils/src/validators.rs). */
export const JAILER_ID = /^[A-Za-z0-9-]{1,64}$/;

export interface JailerLaunch {
  /** Firecracker's `--id`, which names the chroot. */
  id: string;
  /** The firecracker binary, absolute (the jailer copies it into the chroot). */
  execFile: string;
  uid: number;
  gid: number;
  /** Where the chroot is made (must exist). */
  chrootBase: string;
  /** A network namespace handle the jailer joins before it drops privileges. */
  netns?: string;
  /** Firecracker's own arguments (the jailer adds `--id`). */
  firecrackerArgs: readonly string[];
}

/** The jailer's command line. No cgroup is asked for: no `--cgroup`, so the jailer makes none. */
export function jailerArgs(l: JailerLaunch): string[] {
  if (!JAILER_ID.test(l.id)) throw new Error(`jailer id ${JSON.stringify(l.id)}: expected 1 to 64 letters, digits and hyphens`);
  if (!path.isAbsolute(l.execFile) || !path.isAbsolute(l.chrootBase)) throw new Error('jailer: the exec file and the chroot base must be absolute paths');
  return [
    '--id', l.id,
    '--exec-file', l.execFile,
    '--uid', String(l.uid),
    '--gid', String(l.gid),
    '--chroot-base-dir', l.chrootBase,
    ...(l.netns === undefined ? [] : ['--netns', l.netns]),
    '--', ...l.firecrackerArgs,
  ]; // prettier-ignore
}

/** The directory the jailed Firecracker sees as `/`. */
export function chrootDir(chrootBase: string, execFile: string, id: string): string {
  return path.join(chrootBase, path.basename(execFile), id, 'root');
}

/** `/run/firecracker.socket` as the host sees it. */
export function jailedSocket(chroot: string): string {
  return path.join(chroot, JAILED_API_SOCKET);
}

/** The jail's user as the jailer is given it: an unprivileged uid and gid. */
export function jailOwnerProblem(j: JailerOptions): string | undefined {
  for (const [field, id] of [['uid', j.uid], ['gid', j.gid]] as const) {
    if (!Number.isInteger(id) || id < 1 || id > 2 ** 32 - 2) return `drivers.firecracker.jailer.${field}: expected an unprivileged id (1 to 4294967294), got ${id}`;
  }
  return undefined;
}

/** A file the jailed Firecracker opens: `source` on the host, `name` inside the chroot. */
export interface JailFile {
  source: string;
  /** A plain name (the chroot's top directory). */
  name: string;
  /**
   * Given to the jail's user: a file made for this run that Firecracker writes (a drive, its log) or
   * reads. Otherwise (the operator's kernel) ownership stays; a file that others cannot read is copied
   * and the copy is given instead.
   */
  owned: boolean;
}

/**
 * Makes the chroot before the jailer does (it leaves an existing one as it is) and puts `files` in it:
 * a hard link where the file is on the same filesystem, a sparse copy otherwise. `dirs` are made there
 * too, owned by the jail's user (where Firecracker writes a snapshot).
 */
export async function stageJail(chroot: string, owner: { uid: number; gid: number }, files: readonly JailFile[], dirs: readonly string[] = []): Promise<void> {
  await fs.mkdir(chroot, { recursive: true, mode: 0o700 });
  for (const f of files) {
    if (f.name !== path.basename(f.name) || f.name.startsWith('.')) throw new Error(`jail file name ${JSON.stringify(f.name)}: expected a plain name`);
    const target = path.join(chroot, f.name);
    const readable = f.owned || ((await fs.stat(f.source)).mode & constants.S_IROTH) !== 0;
    if (readable) {
      try {
        await fs.link(f.source, target);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
        await run('cp', ['--sparse=always', f.source, target]);
      }
    } else {
      await run('cp', ['--sparse=always', f.source, target]);
    }
    if (f.owned || !readable) await fs.chown(target, owner.uid, owner.gid);
  }
  for (const d of dirs) {
    const target = path.join(chroot, d);
    await fs.mkdir(target, { mode: 0o700 });
    await fs.chown(target, owner.uid, owner.gid);
  }
}

/** The release in what `jailer --version` printed, or undefined when it is not Firecracker's jailer. */
export function jailerVersion(printed: string): string | undefined {
  return /^Jailer v(\d+\.\d+\.\d+\S*)/m.exec(printed)?.[1];
}
