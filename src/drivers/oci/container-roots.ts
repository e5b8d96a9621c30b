import { promises as fs } from 'node:fs';
import path from 'node:path';
import { makeSkeleton } from './sandbox-fs.ts';
import { DEFAULT_ID_MAP, defaultRootsDir, makePassage, makeRunDir, userNamespaceProblem, type IdMap } from './user-namespace.ts';

/**
 * Where the oci driver's containers get their roots, and in whose ids: the user namespace it gives
 * them (chosen once the driver is probed), the directory their roots are mounted under (a passage for
 * that namespace's root), and the skeleton every scratch is copied from. The directories are made at
 * the first container, so a node that runs none leaves nothing in /run.
 */
export class ContainerRoots {
  readonly dir: string;
  /** What every container's scratch starts with (makeSkeleton). */
  readonly skeleton: string;
  /** The user namespace containers get; undefined for none. */
  idMap: IdMap | undefined;
  private ready: Promise<void> | undefined;

  /** `configured`: drivers.oci.userNamespace (undefined: the default range where the host allows it). */
  constructor(
    private readonly configured: IdMap | false | undefined,
    sandboxRoot: string,
    private readonly configuredDir?: string,
  ) {
    this.dir = configuredDir ?? defaultRootsDir(sandboxRoot);
    this.skeleton = `${this.dir}.skeleton`;
  }

  /**
   * Decides the user namespace: the configured range, or by default DEFAULT_ID_MAP where the host
   * allows it. Returns how `vmesh drivers` shows it, or why a configured range cannot be had. `changed`
   * says the range differs from the one chosen before (the image cache depends on it).
   */
  async choose(): Promise<{ shown: string; changed: boolean } | { unavailable: string }> {
    const wanted = this.configured ?? DEFAULT_ID_MAP;
    const problem = wanted === false ? 'switched off (drivers.oci.userNamespace: false)' : await userNamespaceProblem(wanted, this.dir);
    if (problem !== undefined && this.configured !== undefined && wanted !== false) {
      return { unavailable: `containers cannot have the user namespace configured: ${problem}` };
    }
    const map = problem === undefined && wanted !== false ? wanted : undefined;
    const changed = map?.hostId !== this.idMap?.hostId || map?.size !== this.idMap?.size;
    if (changed) {
      this.idMap = map;
      this.ready = undefined;
    }
    const shown = map === undefined ? `none: ${problem}` : `container ids 0-${map.size - 1} are host ids ${map.hostId}-${map.hostId + map.size - 1}`;
    return { shown, changed };
  }

  /** Where a container's root is mounted. */
  rootOf(containerId: string): string {
    return path.join(this.dir, containerId);
  }

  /** Makes the roots directory and the skeleton, the first time a container needs them. */
  async ensure(): Promise<void> {
    this.ready ??= this.make().catch((err: unknown) => {
      this.ready = undefined; // the next container tries again
      throw err;
    });
    await this.ready;
  }

  /** Mount points a crashed process left (their mounts went with the launches' namespaces). */
  async removeLeftovers(prefix: string): Promise<void> {
    for (const root of await fs.readdir(this.dir).catch(() => [] as string[])) {
      if (root.startsWith(prefix)) await fs.rmdir(path.join(this.dir, root)).catch(() => {});
    }
  }

  /** Removes the roots directory (when no container is left in it) and the skeleton. */
  async remove(): Promise<void> {
    this.ready = undefined;
    await fs.rmdir(this.dir).catch(() => {});
    await fs.rm(this.skeleton, { recursive: true, force: true });
  }

  private async make(): Promise<void> {
    if (this.configuredDir === undefined) await makeRunDir();
    if (this.idMap === undefined) await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    else await makePassage(this.dir, this.idMap);
    await makeSkeleton(this.skeleton, this.idMap === undefined ? undefined : [this.idMap.hostId, this.idMap.hostId]);
  }
}
