// What vmesh keeps beside the files a VMM driven through its API (Firecracker, Cloud Hypervisor) writes
// for a snapshot: the run's initramfs and outputs disk, and a manifest that a restore checks first.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { copySparse } from '../../util/files.ts';
import { checkSnapshotFiles, MANIFEST_FILE, readManifest, snapshotRefused } from '../snapshot-manifest.ts';

export const VMM_SNAPSHOT_FORMAT = 'vmesh-vmm-snapshot/1';

/** The names vmesh gives its own files in a snapshot directory (the VMM names the rest). */
export const VMM_SNAPSHOT_FILES = { manifest: MANIFEST_FILE, initrd: 'initrd.cpio', disk: 'outputs.img' } as const;

export interface VmmSnapshotManifest {
  format: typeof VMM_SNAPSHOT_FORMAT;
  /** The driver that took it: only it can load it. */
  driver: string;
  /** A VMM loads only the snapshot format of its own version. */
  vmmVersion: string;
  vcpus: number;
  memoryMiB: number;
  /** The declared outputs of the run the state came from: the agent inside will still write them. */
  outputs: string[];
  /** Bytes of every file in the directory but the manifest, checked before a restore. */
  files: Record<string, number>;
  createdAt: string;
}

/** What the captured machine was started with. */
export interface VmmMachine {
  driver: string;
  vmmVersion: string;
  vcpus: number;
  memoryMiB: number;
  initrd: string;
  disk?: string;
  outputs: string[];
}

/**
 * Once the VMM has written its snapshot into `dir`: copies the run's initramfs and outputs disk (sparse)
 * beside it and writes the manifest over everything there.
 */
export async function completeVmmSnapshot(dir: string, machine: VmmMachine): Promise<VmmSnapshotManifest> {
  await fs.copyFile(machine.initrd, path.join(dir, VMM_SNAPSHOT_FILES.initrd));
  if (machine.disk !== undefined) await copySparse(machine.disk, path.join(dir, VMM_SNAPSHOT_FILES.disk));
  const files: Record<string, number> = {};
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    if (entry.name === VMM_SNAPSHOT_FILES.manifest) continue;
    if (!entry.isFile()) throw new Error(`snapshot: the VMM left ${entry.name} in the snapshot, which is not a plain file`);
    files[entry.name] = (await fs.stat(path.join(dir, entry.name))).size;
  }
  const manifest: VmmSnapshotManifest = {
    format: VMM_SNAPSHOT_FORMAT,
    driver: machine.driver,
    vmmVersion: machine.vmmVersion,
    vcpus: machine.vcpus,
    memoryMiB: machine.memoryMiB,
    outputs: machine.outputs,
    files,
    createdAt: new Date().toISOString(),
  };
  await fs.writeFile(path.join(dir, VMM_SNAPSHOT_FILES.manifest), JSON.stringify(manifest, null, 2), { mode: 0o600 });
  return manifest;
}

/**
 * Reads and checks a snapshot directory against this driver and VMM: the format, the driver, the VMM's
 * version, and every file at the size the manifest records. Refuses with `snapshot` named.
 */
export async function readVmmSnapshot(dir: string, here: { driver: string; vmmVersion: string }): Promise<VmmSnapshotManifest> {
  const bad = snapshotRefused;
  const m = await readManifest<VmmSnapshotManifest>(dir);
  if (m.format !== VMM_SNAPSHOT_FORMAT) throw bad(`format ${JSON.stringify(m.format)} is not ${VMM_SNAPSHOT_FORMAT}`);
  if (m.driver !== here.driver) throw bad(`it was taken by the ${JSON.stringify(m.driver)} driver, not ${here.driver}`);
  if (m.vmmVersion !== here.vmmVersion) throw bad(`it was taken with ${here.driver} ${m.vmmVersion}; this node has ${here.vmmVersion}`);
  if (!(m.vcpus >= 1 && m.memoryMiB >= 1 && Array.isArray(m.outputs) && typeof m.files === 'object' && m.files !== null)) throw bad('its machine description is incomplete');
  if (!(VMM_SNAPSHOT_FILES.initrd in m.files)) throw bad(`it holds no ${VMM_SNAPSHOT_FILES.initrd}`);
  await checkSnapshotFiles(dir, m.files);
  return m;
}
