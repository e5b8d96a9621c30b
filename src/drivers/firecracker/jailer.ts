// Running Firecracker under its jailer, as documented for the pinned release (docs/jailer.md and
// src/jailer/src/env.rs at FIRECRACKER_API_VERSION): the jailer, started as root, makes the chroot
// `<chroot base>/<exec file name>/<id>/root`, copies the firecracker binary into it, pivots into it in a
// mount namespace of its own, makes /dev/kvm and /dev/net/tun there, joins `--netns`, drops to uid:gid and
// execs firecracker in the same process (without --daemonize and --new-pid-ns the pid stays the VMM's).
// Everything Firecracker opens through its API must already be inside the chroot, readable (and, for a
// drive or a log, writable) by that uid: vmesh hard-links the run's files in and gives them to it.
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { copySparse, linkOrCopy, moveFile } from '../../util/files.ts';

export interface JailerOptions {
  /** The jailer binary (default: jailer on PATH); its release must be Firecracker's. */
  binary?: string;
  /**
   * The first of the unprivileged users and groups Firecracker runs as (not root): each live jail takes a
   * user and a group of its own, uid + i and gid + i for i below `ids`, as Firecracker's production setup
   * advises, so that one VMM that escapes its guest holds no other VM's files.
   */
  uid: number;
  gid: number;
  /** How many consecutive ids there are from uid and gid: how many jailed VMs at once (default 256). */
  ids?: number;
}

export const DEFAULT_JAIL_IDS = 256;
const MAX_ID = 2 ** 32 - 2;

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

/** The jails' users as the jailer is given them: unprivileged uids and gids, all of them below 2^32 - 1. */
export function jailOwnerProblem(j: JailerOptions): string | undefined {
  const ids = j.ids ?? DEFAULT_JAIL_IDS;
  if (!Number.isInteger(ids) || ids < 1 || ids > 65536) return `drivers.firecracker.jailer.ids: expected 1 to 65536, got ${ids}`;
  for (const [field, id] of [['uid', j.uid], ['gid', j.gid]] as const) {
    if (!Number.isInteger(id) || id < 1 || id + ids - 1 > MAX_ID) return `drivers.firecracker.jailer.${field}: expected an unprivileged id (1 to ${MAX_ID - ids + 1} with ${ids} ids), got ${id}`;
  }
  return undefined;
}

/** The user and group of one jail. */
export interface JailOwner {
  uid: number;
  gid: number;
}

/** Hands each live jail its own uid and gid out of the configured range, and takes them back when it ends. */
export class JailIds {
  private readonly taken = new Set<number>();

  constructor(private readonly j: JailerOptions) {}

  take(): JailOwner {
    const ids = this.j.ids ?? DEFAULT_JAIL_IDS;
    for (let i = 0; i < ids; i++) {
      if (this.taken.has(i)) continue;
      this.taken.add(i);
      return { uid: this.j.uid + i, gid: this.j.gid + i };
    }
    throw new Error(`firecracker: all ${ids} jail users (drivers.firecracker.jailer.ids) are held by running VMs`);
  }

  give(owner: JailOwner): void {
    this.taken.delete(owner.uid - this.j.uid);
  }
}

/**
 * Why `dir` is not safe to build jails under, or undefined: the jailer's docs leave the chroot base's
 * parents to the operator (root-owned, not writable by others). Every existing directory on the way must
 * be root's and writable by no one else, but for a sticky one (such as /tmp), whose entries others cannot
 * rename.
 */
export async function untrustedDirectory(dir: string): Promise<string | undefined> {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const st = await fs.lstat(d).catch(() => undefined);
    if (st !== undefined) {
      if (st.isSymbolicLink()) return `${d} is a symbolic link: give the sandbox root by its real path`;
      const othersWrite = (st.mode & 0o002) !== 0 || ((st.mode & 0o020) !== 0 && st.gid !== 0);
      const sticky = (st.mode & 0o1000) !== 0;
      if (st.uid !== 0 || (othersWrite && !sticky)) return `${d} is not root's alone (owner ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}): jails are built only under directories that only root can change`;
    }
    if (d === path.dirname(d)) return undefined;
  }
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
 * a hard link where the file is on the same filesystem, a sparse copy otherwise.
 */
export async function stageJail(chroot: string, owner: JailOwner, files: readonly JailFile[]): Promise<void> {
  await fs.mkdir(chroot, { recursive: true, mode: 0o700 });
  for (const f of files) {
    if (f.name !== path.basename(f.name) || f.name.startsWith('.')) throw new Error(`jail file name ${JSON.stringify(f.name)}: expected a plain name`);
    const target = path.join(chroot, f.name);
    // link(2) links a symbolic link itself, which would point nowhere inside the chroot: link what it names.
    const source = await fs.realpath(f.source);
    const readable = f.owned || ((await fs.stat(source)).mode & constants.S_IROTH) !== 0;
    await (readable ? linkOrCopy(source, target) : copySparse(source, target));
    if (f.owned || !readable) await fs.chown(target, owner.uid, owner.gid);
  }
}

/**
 * Takes a file the jailed Firecracker wrote at the chroot's top (`name`) out of its reach, into `to`
 * (the node's, 0600), checked on the way: the jail's user owns the chroot's `/`, so a Firecracker that
 * escaped its guest could have put a symbolic link or a hard link there in its place. The name is first
 * renamed into `staging` (a directory of the node's on the same filesystem: rename moves a link itself,
 * never what it names), and only there, where the jail cannot reach, opened without following links and
 * checked to be a plain file of the jail's user with no other name; ownership and mode are changed on
 * that open file, never by a path.
 */
export async function takeFromJail(chroot: string, name: string, staging: string, to: string, owner: JailOwner): Promise<void> {
  const held = path.join(staging, name);
  await fs.rename(path.join(chroot, name), held);
  try {
    const notPlain = new Error(`the jail's ${name} is not a plain file of the jail's own (a link put in its place?)`);
    const handle = await fs.open(held, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ELOOP' ? notPlain : err;
    });
    try {
      const st = await handle.stat();
      if (!st.isFile() || st.nlink !== 1 || st.uid !== owner.uid) throw notPlain;
      await handle.chown(0, 0);
      await handle.chmod(0o600);
    } finally {
      await handle.close();
    }
    await moveFile(held, to);
  } finally {
    await fs.rm(held, { force: true });
  }
}

/** The release in what `jailer --version` printed, or undefined when it is not Firecracker's jailer. */
export function jailerVersion(printed: string): string | undefined {
  return /^Jailer v(\d+\.\d+\.\d+\S*)/m.exec(printed)?.[1];
}
