import { promises as fs } from 'node:fs';
import path from 'node:path';
import { copySparse } from '../../util/files.ts';
import { shellQuote } from '../../guest/agent.ts';
import { checkSnapshotFiles, MANIFEST_FILE, readManifest, snapshotRefused } from '../snapshot-manifest.ts';
import type { QmpClient } from './qmp.ts';

export const SNAPSHOT_FORMAT = 'vmesh-qemu-snapshot/1';

/** What a snapshot directory holds besides the files it names: enough to start the same machine again. */
export interface SnapshotManifest {
  format: typeof SNAPSHOT_FORMAT;
  driver: 'qemu';
  /** QEMU loads a machine state only into the version (and accelerator) that wrote it. */
  qemuVersion: string;
  accel: 'kvm' | 'tcg';
  vcpus: number;
  memoryMiB: number;
  tscKhz?: number;
  /** The declared outputs of the run the state came from: the agent inside will still write them. */
  outputs: string[];
  /** Bytes of each file, checked before a restore so that a truncated copy is refused, not loaded. */
  files: { memory: number; kernel: number; initrd: number; disk?: number };
  createdAt: string;
}

export const SNAPSHOT_FILES = { manifest: MANIFEST_FILE, memory: 'memory', kernel: 'kernel', initrd: 'initrd', disk: 'disk.img' } as const;

/** What the machine being captured was started with. */
export interface CapturedMachine {
  qemuVersion: string;
  accel: 'kvm' | 'tcg';
  vcpus: number;
  memoryMiB: number;
  tscKhz?: number;
  kernel: string;
  initrd: string;
  disk?: string;
  outputs: string[];
}

/**
 * Writes a paused machine's whole state into `dir` (which must not exist): its memory and devices through
 * QMP `migrate` into a file, and copies of its kernel, initramfs and disk (sparse). The machine is
 * paused first and stays paused; the caller resumes or ends it.
 */
export async function captureMachine(qmp: QmpClient, machine: CapturedMachine, dir: string, signal?: AbortSignal): Promise<SnapshotManifest> {
  await fs.mkdir(dir, { mode: 0o700 });
  const memory = path.join(dir, SNAPSHOT_FILES.memory);
  await qmp.execute('stop');
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(memory)}` });
  for (;;) {
    const status = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (status.status === 'completed') break;
    if (status.status === 'failed' || status.status === 'cancelled') throw new Error(`qemu could not save the machine state: ${status['error-desc'] ?? status.status}`);
    if (signal?.aborted) {
      await qmp.execute('migrate_cancel').catch(() => {});
      throw new Error('the snapshot was aborted');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await fs.copyFile(machine.kernel, path.join(dir, SNAPSHOT_FILES.kernel));
  await fs.copyFile(machine.initrd, path.join(dir, SNAPSHOT_FILES.initrd));
  if (machine.disk !== undefined) await copySparse(machine.disk, path.join(dir, SNAPSHOT_FILES.disk));
  const size = async (name: string) => (await fs.stat(path.join(dir, name))).size;
  const manifest: SnapshotManifest = {
    format: SNAPSHOT_FORMAT,
    driver: 'qemu',
    qemuVersion: machine.qemuVersion,
    accel: machine.accel,
    vcpus: machine.vcpus,
    memoryMiB: machine.memoryMiB,
    ...(machine.tscKhz === undefined ? {} : { tscKhz: machine.tscKhz }),
    outputs: machine.outputs,
    files: {
      memory: await size(SNAPSHOT_FILES.memory),
      kernel: await size(SNAPSHOT_FILES.kernel),
      initrd: await size(SNAPSHOT_FILES.initrd),
      ...(machine.disk === undefined ? {} : { disk: await size(SNAPSHOT_FILES.disk) }),
    },
    createdAt: new Date().toISOString(),
  };
  await fs.writeFile(path.join(dir, SNAPSHOT_FILES.manifest), JSON.stringify(manifest, null, 2), { mode: 0o600 });
  return manifest;
}

/**
 * Reads and checks a snapshot directory against this driver: the format, the driver, the QEMU version
 * and accelerator, and every file at the size the manifest records. Refuses with `snapshot` named.
 */
export async function readSnapshot(dir: string, here: { qemuVersion: string; accel: 'kvm' | 'tcg' }): Promise<SnapshotManifest> {
  const bad = snapshotRefused;
  const m = await readManifest<SnapshotManifest>(dir);
  if (m.format !== SNAPSHOT_FORMAT) throw bad(`format ${JSON.stringify(m.format)} is not ${SNAPSHOT_FORMAT}`);
  if (m.driver !== 'qemu') throw bad(`it was taken by the ${JSON.stringify(m.driver)} driver, not qemu`);
  if (m.qemuVersion !== here.qemuVersion) throw bad(`it was taken with QEMU ${m.qemuVersion}; this node has ${here.qemuVersion}`);
  if (m.accel !== here.accel) throw bad(`it was taken under ${m.accel}; this node runs guests under ${here.accel}`);
  if (!(m.vcpus >= 1 && m.memoryMiB >= 1 && Array.isArray(m.outputs) && typeof m.files === 'object' && m.files !== null)) throw bad('its machine description is incomplete');
  // The manifest names its files by role (memory, kernel, …); each role has its fixed file name.
  const files: Record<string, number> = {};
  for (const [role, bytes] of Object.entries(m.files)) {
    if (!Object.hasOwn(SNAPSHOT_FILES, role) || role === 'manifest') throw bad(`it lists a file ${JSON.stringify(role)} that a QEMU snapshot does not hold`);
    files[SNAPSHOT_FILES[role as keyof typeof SNAPSHOT_FILES]] = bytes;
  }
  await checkSnapshotFiles(dir, files);
  return m;
}
