import { promises as fs, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../util/exec.ts';

/** Caps what the bundles may hold (their files are a few KiB each; stdin, the largest, is capped by the workload schema). */
const AREA_SIZE = '256m';

/**
 * A tmpfs of the driver's own for its containers' bundles: the runtime's config.json, the launch's
 * script and stdin, the scratch's mount point. Small files made and removed on every run's path: on this
 * host's disk each create cost 0.3 to 1 ms of journal waits (timestamps over 100 runs), on a tmpfs a few
 * µs. Like the runtime's own state under /run, they never need to outlive a boot. Input files, which can
 * be large, stay on disk under the sandbox root.
 *
 * Mounted at the first container; checked again at every one (a stat), so that a driver sharing it
 * (tests do) finds it gone and mounts it again; unmounted when the driver closes with no container left.
 * One a crashed node left is taken over, its leftovers removed by `recover`.
 */
export class BundleArea {
  /** A mount under way: containers prepared meanwhile wait for it rather than mount a second tmpfs over it. */
  private mounting: Promise<void> | undefined;

  constructor(readonly dir: string) {}

  /** Mounts the area unless it is mounted already; its parent must exist. */
  async ensure(): Promise<void> {
    if (this.mounted()) return;
    this.mounting ??= this.mount().finally(() => (this.mounting = undefined));
    await this.mounting;
  }

  private async mount(): Promise<void> {
    await fs.mkdir(this.dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    if (this.mounted()) return; // another driver of this process got there first
    await run('mount', ['-t', 'tmpfs', '-o', `size=${AREA_SIZE},mode=0700,nosuid,nodev`, 'vmesh-bundles', this.dir]);
  }

  /** The bundles a crashed node left (their mounts are gone already: `recover` unmounts first). */
  async removeLeftovers(prefix: string): Promise<void> {
    if (!this.mounted()) return;
    for (const entry of readdirSync(this.dir)) {
      if (entry.startsWith(prefix)) await fs.rm(path.join(this.dir, entry), { recursive: true, force: true });
    }
  }

  /** Unmounts and removes the area when it holds no bundle. */
  async remove(): Promise<void> {
    if (!this.mounted() || readdirSync(this.dir).length > 0) return;
    await run('umount', [this.dir]).catch(() => {});
    await fs.rmdir(this.dir).catch(() => {});
  }

  /** A mount point has a device of its own, unlike the directory that holds it. */
  private mounted(): boolean {
    try {
      return statSync(this.dir).dev !== statSync(path.dirname(this.dir)).dev;
    } catch {
      return false;
    }
  }
}
