import { existsSync, mkdirSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { DEFAULT_BUSYBOX } from '../../guest/image.ts';
import { run } from '../../util/exec.ts';

/** How a container gets a root it can write without touching the shared image: an overlay, or a copy. */
export type WritableLayerMethod = 'overlay' | 'copy';

/**
 * A container's own file system, under its bundle directory. A tmpfs capped at the run's `diskMiB` (the
 * scratch) holds what the container writes: the upper layer of an overlay over the image (whose lower
 * layer, shared by every run, is never written) and /out. Input files lie on disk in a directory of their
 * own, mounted read-only.
 */
export interface SandboxFilesystem {
  /** Where the root is mounted, and what the runtime's config names as `/`. */
  readonly root: string;
  readonly scratch: string;
  /** Bound read-write at /out, on the scratch; the node reads it after the run when the scratch is mounted on the host (`mountScratch`). */
  readonly outputsDir: string;
  /** Bound read-only at /in. */
  readonly inputsDir: string;
  /** Written with the reason when the file system could not be made; removed once it was. */
  readonly setupErrors: string;
}

/** The file system of the container whose bundle is `bundle`, whose root is mounted at `root`, and whose input files go in `inputsDir`. */
export function sandboxFilesystem(bundle: string, root: string, inputsDir: string): SandboxFilesystem {
  const scratch = path.join(bundle, 'scratch');
  return {
    root,
    scratch,
    outputsDir: path.join(scratch, 'out'),
    inputsDir,
    setupErrors: path.join(bundle, 'setup-errors'),
  };
}

/**
 * Makes the root and the scratch in a mount namespace of the runtime's own, then becomes the runtime.
 * The mounts exist only in that namespace, so they vanish with the container's last process, whatever
 * happens to the node, and making them costs the node one process start instead of three (a fork of a
 * large node process is the expensive part; see docs/development.md). The lower directory is opened as
 * fd 3 and the upper and work directories are named relative to the scratch, so no path is ever spelled
 * inside the overlay's comma- and colon-separated options. A failure stops before the runtime starts,
 * with the reason in `setupErrors`.
 */
const LAUNCH = `lower=$1 scratch=$2 root=$3 size=$4 method=$5 mounted=$6 errors=$7 skeleton=$8 resolv=$9
shift 9
exec 4>&2 2>"$errors"
set -eu
umask 022
[ "$mounted" = 1 ] || mount -t tmpfs -o "size=\${size}m,mode=0755,nosuid,nodev" vmesh-scratch "$scratch"
cd "$scratch"
cp -a "$skeleton/." .
if [ "$method" = copy ] || ! { exec 3<"$lower" && mount -t overlay -o nodev,nosuid,lowerdir=/proc/self/fd/3,upperdir=upper,workdir=work vmesh-root "$root"; }; then
  [ "$method" != overlay ] || { echo "overlayfs refused the container's root" >&2; exit 1; }
  cp -a "$lower/." upper/
  cp -a "$skeleton/upper/." upper/
  mount -o bind upper "$root"
fi
# A mount point for /etc/resolv.conf, made here as host root: the container's root may not own /etc.
# Never through a symlink, which would lead out of the container's root.
if [ "$resolv" = 1 ] && [ ! -L "$root/etc" ] && [ ! -L "$root/etc/resolv.conf" ]; then
  [ -d "$root/etc" ] || mkdir -m 0755 "$root/etc"
  : >>"$root/etc/resolv.conf"
fi
exec 3<&- 2>&4 4>&-
: >"$errors"
exec "$@"
`;

export interface LaunchOptions {
  /** The image's root directory (or the user's root file system): the overlay's lower layer. */
  lower: string;
  diskMiB: number;
  method: WritableLayerMethod | 'auto';
  /** The scratch is already a tmpfs on the host (`mountScratch`), because the node reads /out after the run. */
  scratchMounted: boolean;
  /** Whose unshare, shell and mount do the work: a static busybox where the host has one (default), or util-linux's and sh. */
  tools?: LaunchTools;
  /** The directories every scratch starts with, made by `makeSkeleton`. */
  skeleton: string;
  /** /etc/resolv.conf will be bound: make its mount point. */
  resolvConf?: boolean;
}

export type LaunchTools = 'busybox' | 'util-linux';

/**
 * The command line that makes the sandbox file system and then execs `runtime` with `runtimeArgs`. With a
 * static busybox on the host, its unshare, shell, mount and mkdir do the work: a static binary starts
 * without a dynamic loader, and the whole launch took 1.8 ms here against 4.3 ms through util-linux's
 * unshare, dash and mount (50 launches each; see docs/benchmarks.md).
 */
export function launchCommand(sfs: SandboxFilesystem, options: LaunchOptions, runtime: string, runtimeArgs: readonly string[]): [string, string[]] {
  const size = String(Math.max(1, Math.ceil(options.diskMiB)));
  const script = [LAUNCH, 'vmesh-container', options.lower, sfs.scratch, sfs.root, size, options.method, options.scratchMounted ? '1' : '0', sfs.setupErrors, options.skeleton, options.resolvConf ? '1' : '0', runtime, ...runtimeArgs];
  if ((options.tools ?? (hasBusybox() ? 'busybox' : 'util-linux')) === 'busybox') return [DEFAULT_BUSYBOX, ['unshare', '-m', '--propagation', 'private', DEFAULT_BUSYBOX, 'sh', '-c', ...script]];
  return ['unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', ...script]];
}

let busybox: boolean | undefined;
function hasBusybox(): boolean {
  busybox ??= existsSync(DEFAULT_BUSYBOX);
  return busybox;
}

/** Makes the directories the launch mounts onto: the scratch inside the (existing) bundle, and the root (synchronously, see prepare). */
export function makeMountPoints(sfs: SandboxFilesystem): void {
  mkdirSync(sfs.root, { mode: 0o700 });
  mkdirSync(sfs.scratch, { mode: 0o700 });
}

/** Mounts the scratch tmpfs on the host (the launch makes its /out), for runs whose outputs the node collects afterwards. */
export async function mountScratch(sfs: SandboxFilesystem, diskMiB: number, signal?: AbortSignal): Promise<void> {
  const size = Math.max(1, Math.ceil(diskMiB));
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size}m,mode=0755,nosuid,nodev`, 'vmesh-scratch', sfs.scratch], signal === undefined ? {} : { signal });
}

export async function unmountScratch(sfs: SandboxFilesystem): Promise<void> {
  await run('umount', ['--lazy', sfs.scratch]).catch(() => {});
}

/**
 * Why the sandbox file system could not be made, when it could not (read after the launch ended). The
 * launch empties the file once it has made everything (a shell builtin, where removing it would cost a
 * process), and every way it can fail says why.
 */
export async function setupFailure(sfs: SandboxFilesystem): Promise<string | undefined> {
  const text = await fs.readFile(sfs.setupErrors, 'utf8').catch(() => undefined);
  return text?.trim() || undefined;
}

/**
 * Makes `dir`, the directories every container's scratch starts with, which the launch copies in one
 * process instead of making them one by one: the upper layer (the container's `/`), its 1777 `/tmp`,
 * the overlay's work directory, and `/out`. With `owner` (the user namespace's root, as `[uid, gid]`),
 * the container's root owns its `/`, `/tmp` and `/out`.
 */
export async function makeSkeleton(dir: string, owner?: readonly [number, number]): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(path.join(dir, 'upper', 'tmp'), { recursive: true, mode: 0o755 });
  await fs.mkdir(path.join(dir, 'work'), { mode: 0o755 });
  await fs.mkdir(path.join(dir, 'out'), { mode: 0o755 });
  await fs.chmod(dir, 0o755);
  await fs.chmod(path.join(dir, 'upper', 'tmp'), 0o1777);
  if (owner !== undefined) {
    for (const d of ['upper', 'upper/tmp', 'out']) await fs.chown(path.join(dir, d), ...owner);
  }
}
