import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runtimeConfig } from '../../src/drivers/oci/config.ts';
import { claimUnowned } from '../../src/drivers/oci/image/unpack.ts';
import { DEFAULT_ID_MAP, makePassage, userNamespaceProblem } from '../../src/drivers/oci/user-namespace.ts';
import type { OciRuntime } from '../../src/drivers/oci/runtime.ts';
import { WrongResultError } from '../lib/load.ts';
import { COMMAND, EXPECTED_STDOUT, NODE_CGROUP_PARENT, NODE_CONTAINER_PREFIX, RESOURCES, type Leftovers } from './common.ts';
import type { Fixture } from './fixture.ts';
import { cgroupDirs, listContainers, removeCgroup, removeContainers, runRuntime } from './oci.ts';

/** The baseline: `<runtime> run` of a prepared bundle, which deletes the container when it exits. */
export interface BareRuntime {
  /** The user namespace of the bare containers, as the oci driver words it. */
  readonly userNamespace: string;
  once(): Promise<void>;
  /** What the runs left behind, counted before close() removes it. */
  leftovers(): Promise<Leftovers>;
  close(): Promise<void>;
}

/**
 * Writes a bundle whose config.json is the one vmesh writes (src/drivers/oci/config.ts), with the busybox
 * root file system and the node's default container resources; with the user namespace a node gives its
 * containers where the host allows one (the root file system then belongs to the mapped root, as an image
 * unpacked for that range does).
 */
export async function openBare(fixture: Fixture, runtime: OciRuntime): Promise<BareRuntime> {
  const bundle = path.join(fixture.dir, 'bundle');
  const stateDir = path.join(fixture.dir, 'runtime-state');
  // Beside vmesh's own containers (/vmesh/vmesh-<run id>): the kernel shares the CPU out among cgroups, so
  // a container elsewhere would not compete with the same neighbours.
  const cgroup = `${NODE_CGROUP_PARENT}/${NODE_CONTAINER_PREFIX}bench-${process.pid}`;
  mkdirSync(bundle, { recursive: true });
  const idMap = (await userNamespaceProblem(DEFAULT_ID_MAP, fixture.dir)) === undefined ? DEFAULT_ID_MAP : undefined;
  if (idMap !== undefined) {
    await makePassage(fixture.dir, idMap);
    await claimUnowned(fixture.rootfs, idMap);
  }
  const config = runtimeConfig({
    rootfs: fixture.rootfs,
    readOnlyRoot: true,
    args: COMMAND,
    env: {},
    cwd: '/',
    hostname: 'bench',
    resources: RESOURCES,
    cgroupsPath: `/${cgroup}`,
    ...(idMap === undefined ? {} : { idMap }),
  });
  writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(config));
  let seq = 0;

  return {
    userNamespace: idMap === undefined ? 'none' : `container ids 0-${idMap.size - 1} are host ids ${idMap.hostId}-${idMap.hostId + idMap.size - 1}`,
    async once() {
      const id = `bench-${process.pid}-${++seq}`;
      const out = await runRuntime(runtime.command, ['--root', stateDir, 'run', '--bundle', bundle, id]);
      if (out.code !== 0 || out.stdout !== EXPECTED_STDOUT) {
        throw new WrongResultError(`${runtime.name} run: exit ${out.code}, stdout ${JSON.stringify(out.stdout)}, stderr ${JSON.stringify(out.stderr.slice(0, 500))}`);
      }
    },
    async leftovers() {
      return {
        containers: (await listContainers(runtime.command, stateDir)).length,
        cgroups: cgroupDirs(cgroup).length,
        directories: existsSync(stateDir) ? readdirSync(stateDir).length : 0,
      };
    },
    async close() {
      await removeContainers(runtime.command, stateDir);
      removeCgroup(cgroup);
    },
  };
}
