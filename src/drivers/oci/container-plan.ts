import { InvalidInputError, InvalidSourceError } from '../../spec/index.ts';
import type { SandboxRequest } from '../driver.ts';
import { ImageCache } from './image/cache.ts';
import { isImageDir, type ImageConfig } from './image/layout.ts';
import { resolveCommand } from './rootfs.ts';
import type { IdMap } from './user-namespace.ts';

/** What a container runs: its root file system, command, environment and working directory. */
export interface ContainerPlan {
  rootfs: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

/**
 * Works out what each request's container runs: the root file system (a directory as given, or an image
 * unpacked into the cache), the command (the workload's, or the image's entrypoint and cmd), its
 * environment and working directory. Throws typed errors for anything that could not run. Worked out
 * once per request: the node validates at submission and prepares later with the same request.
 */
export class ContainerPlans {
  private images: ImageCache;
  private readonly plans = new WeakMap<SandboxRequest, Promise<ContainerPlan>>();
  /** `rootfs\0program\0PATH` of commands already found in an unpacked (immutable) image. */
  private readonly foundCommands = new Set<string>();

  constructor(imageRoot: string) {
    this.images = new ImageCache(imageRoot);
  }

  /** Images are unpacked owned by the user namespace's ids (none: as they are): a cache of their own. */
  useIdMap(idMap: IdMap | undefined): void {
    this.images = new ImageCache(this.images.root, idMap);
    this.foundCommands.clear();
  }

  plan(request: SandboxRequest): Promise<ContainerPlan> {
    let plan = this.plans.get(request);
    if (plan === undefined) {
      plan = this.make(request);
      this.plans.set(request, plan);
    }
    return plan;
  }

  /** Removes unpackings a crashed process left half done. */
  removeIncomplete(): Promise<void> {
    return this.images.removeIncomplete();
  }

  private async make(request: SandboxRequest): Promise<ContainerPlan> {
    const w = request.workload;
    const dir = request.sourceDir;
    const diskBytes = request.resources.diskMiB * 2 ** 20;
    let rootfs: string;
    let image: ImageConfig = { entrypoint: [], cmd: [], env: {} };
    if (request.sourceFile !== undefined) {
      // An archive blob is known by its hash; a file by its path, size and mtime.
      const blob = 'blob' in w.source ? w.source.blob : undefined;
      ({ rootfs, config: image } = await this.images.ensureArchive(request.sourceFile, diskBytes, blob));
    } else if (dir !== undefined && isImageDir(dir)) {
      ({ rootfs, config: image } = await this.images.ensure(dir, diskBytes));
    } else if (dir !== undefined) {
      rootfs = dir;
    } else {
      throw new InvalidSourceError(
        "source: a container needs a root file system or an image: source.file naming a directory or an image archive under the node's file roots, or source.blob holding an image archive",
        { field: 'source' },
      );
    }
    const args = w.command !== undefined ? [...w.command, ...(w.args ?? [])] : [...image.entrypoint, ...(w.args ?? image.cmd)];
    if (args.length === 0) {
      throw new InvalidInputError('command: a container needs a command (e.g. ["/bin/sh", "-c", "echo hi"]) when its image names none', { field: 'command' });
    }
    const env = { ...image.env, ...w.env };
    // A root file system unpacked from an image never changes, so a program found in it once is there for
    // every later run; a plain directory is the user's and is checked every time.
    const immutable = rootfs !== dir;
    const key = `${rootfs}\0${args[0]}\0${env.PATH ?? ''}`;
    if (!immutable || !this.foundCommands.has(key)) {
      await resolveCommand(rootfs, args, env);
      if (immutable) {
        if (this.foundCommands.size >= 4096) this.foundCommands.clear();
        this.foundCommands.add(key);
      }
    }
    return { rootfs, args, env, cwd: w.workdir ?? image.workdir ?? '/' };
  }
}
