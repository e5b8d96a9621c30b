import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * The host ids a container's ids map onto: container id `n` (user and group alike) is host id
 * `hostId + n`, for `n` below `size`. Root in the container is then an unprivileged host id: a process
 * that got out of its namespaces would own nothing of the host's.
 */
export interface IdMap {
  hostId: number;
  size: number;
}

/**
 * The default range: in the span systemd leaves to container ranges (524288–1879048191, its
 * UIDS-GIDS documentation), on a 65536 boundary, holding the 65536 ids an image may use.
 */
export const DEFAULT_ID_MAP: IdMap = { hostId: 0x6000_0000, size: 65536 };

/** The largest host id a range may reach: uid_t is 32 bits, and (uid_t)-1 means "no id". */
const MAX_HOST_ID = 2 ** 32 - 2;

/** Why `map` is not a usable range, or undefined when it is. */
export function idMapProblem(map: IdMap): string | undefined {
  if (!Number.isInteger(map.hostId) || map.hostId < 1) return `hostId must be a whole number above 0 (host root is never mapped), not ${map.hostId}`;
  if (!Number.isInteger(map.size) || map.size < 1 || map.size > 2 ** 31) return `size must be a whole number from 1 to 2^31, not ${map.size}`;
  if (map.hostId + map.size - 1 > MAX_HOST_ID) return `hostId + size passes the largest host id (${MAX_HOST_ID})`;
  return undefined;
}

/** A container's `uid` or `gid` as a host id, or undefined when the range does not hold it. */
export function hostIdOf(map: IdMap, id: number): number | undefined {
  return Number.isInteger(id) && id >= 0 && id < map.size ? map.hostId + id : undefined;
}

/**
 * Whether this host can give containers a user namespace with `map`, and can hand them root file
 * systems under `rootsDir`: the kernel allows user namespaces, and the mapped root can reach
 * `rootsDir` (the runtime mounts a container's root as the container's own root, so every directory
 * on the way must let the mapped id search it). Returns the reason when not.
 */
export async function userNamespaceProblem(map: IdMap, rootsDir: string): Promise<string | undefined> {
  const invalid = idMapProblem(map);
  if (invalid !== undefined) return `drivers.oci.userNamespace: ${invalid}`;
  const max = await fs.readFile('/proc/sys/user/max_user_namespaces', 'utf8').catch(() => undefined);
  if (max === undefined) return 'this kernel has no user namespaces (/proc/sys/user/max_user_namespaces is missing)';
  if (Number(max.trim()) === 0) return 'user namespaces are switched off (/proc/sys/user/max_user_namespaces is 0)';
  // rootsDir itself is made a passage (makePassage); the directories above it are the host's.
  for (let dir = path.dirname(path.resolve(rootsDir)); ; dir = path.dirname(dir)) {
    const st = await fs.stat(dir).catch(() => undefined);
    if (st !== undefined && !searchable(st, map.hostId)) {
      return `${dir} (mode ${(st.mode & 0o7777).toString(8)}, owner ${st.uid}:${st.gid}) does not let the containers' root (host id ${map.hostId}) through to ${rootsDir}`;
    }
    if (dir === path.dirname(dir)) return undefined;
  }
}

function searchable(st: { mode: number; uid: number; gid: number }, id: number): boolean {
  if (st.uid === id) return (st.mode & 0o100) !== 0;
  if (st.gid === id) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/**
 * Makes `dir` (and any missing parent) a directory that host root owns and that the containers' root
 * may only pass through: group `map.hostId`, mode 0710. What lies in it stays out of every other
 * host user's reach.
 */
export async function makePassage(dir: string, map: IdMap): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await fs.chown(dir, 0, map.hostId);
  await fs.chmod(dir, 0o710);
}

/** Where vmesh mounts containers' roots by default: a directory every user may pass through, but not list. */
const RUN_DIR = '/run/vmesh';

/**
 * The default roots directory of a driver whose sandboxes are under `sandboxRoot`: in /run/vmesh, since
 * a node's home is often in a directory only host root may enter (/root), one per sandbox root so that
 * nodes sharing a host keep apart.
 */
export function defaultRootsDir(sandboxRoot: string): string {
  return path.join(RUN_DIR, `roots-${createHash('sha256').update(path.resolve(sandboxRoot)).digest('hex').slice(0, 12)}`);
}

/** Makes the parent of a default roots directory (mode 0711) when it is missing. */
export async function makeRunDir(): Promise<void> {
  await fs.mkdir(RUN_DIR, { recursive: true, mode: 0o711 });
}
