import { promises as fs } from 'node:fs';
import path from 'node:path';
import { sha256, sha256File, type BlobStore } from '../blobs/blob-store.ts';
import { InvalidInputError, type ResolvedResources, type Run, type WorkloadKind } from '../spec/index.ts';

export const SNAPSHOT_INDEX_FORMAT = 'vmesh-snapshot/1';

/** The largest snapshot index a node reads: it lists file names and hashes, nothing else. */
const MAX_INDEX_BYTES = 64 * 1024;

/**
 * A captured sandbox as the blob store keeps it: one blob per file the driver wrote, and this index, a
 * small JSON blob whose hash is the snapshot's id. Any node that holds the index and its files (carried
 * by the blob pool) can restore it.
 */
export interface SnapshotIndex {
  format: typeof SNAPSHOT_INDEX_FORMAT;
  /** The driver that wrote it; only that driver can load it. */
  driver: string;
  kind: WorkloadKind;
  /** The run it was taken from, and what that run had reserved (a restore reserves the same). */
  run: string;
  resources: ResolvedResources;
  /** File name (plain, no directories) → blob hash. */
  files: Record<string, string>;
  bytes: number;
  createdAt: string;
}

/**
 * Moves every file of a snapshot directory into the blob store (by rename: the directory is emptied) and
 * stores the index. Returns the index and its hash, the snapshot id.
 */
export async function storeSnapshot(dir: string, blobs: BlobStore, meta: Pick<SnapshotIndex, 'driver' | 'kind' | 'run' | 'resources'>): Promise<{ id: string; index: SnapshotIndex }> {
  const files: Record<string, string> = {};
  let bytes = 0;
  for (const name of (await fs.readdir(dir)).sort()) {
    const file = path.join(dir, name);
    const st = await fs.lstat(file);
    if (!st.isFile()) throw new Error(`snapshot: ${file} is not a regular file`);
    const hash = await sha256File(file);
    await blobs.adopt(file, hash);
    files[name] = hash;
    bytes += st.size;
  }
  const index: SnapshotIndex = { format: SNAPSHOT_INDEX_FORMAT, ...meta, files, bytes, createdAt: new Date().toISOString() };
  const text = Buffer.from(JSON.stringify(index));
  return { id: await blobs.put(text, sha256(text)), index };
}

/** Reads and checks a snapshot's index from the blob store; errors name `source.snapshot`. */
export async function readSnapshotIndex(id: string, blobs: BlobStore): Promise<SnapshotIndex> {
  const bad = (why: string) => new InvalidInputError(`source.snapshot: ${why}`, { field: 'source.snapshot' });
  const file = await blobs.fileOf(id);
  if (file === undefined) throw bad(`this node holds no blob ${id}`);
  if ((await fs.stat(file)).size > MAX_INDEX_BYTES) throw bad(`${id} is not a snapshot index (over ${MAX_INDEX_BYTES} bytes)`);
  const bytes = await blobs.get(id);
  let index: SnapshotIndex;
  try {
    index = JSON.parse(bytes!.toString('utf8')) as SnapshotIndex;
  } catch {
    throw bad(`${id} is not a snapshot index (not JSON)`);
  }
  if (index?.format !== SNAPSHOT_INDEX_FORMAT) throw bad(`${id} is not a ${SNAPSHOT_INDEX_FORMAT} index`);
  if (typeof index.driver !== 'string' || typeof index.files !== 'object' || index.files === null || typeof index.resources !== 'object') {
    throw bad(`${id} is an incomplete snapshot index`);
  }
  for (const [name, hash] of Object.entries(index.files)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw bad(`the index names a file ${JSON.stringify(name)}, which is not a plain file name`);
    if (!(await blobs.has(hash))) throw bad(`this node does not hold ${name} (${hash}); copy the snapshot's blobs here first`);
  }
  return index;
}

/**
 * Lays a snapshot's files out in `dir` (created; must not exist) as the driver wrote them: hard links to
 * the blobs where they share a file system, copies otherwise. The blobs stay; `dir` is the caller's to
 * remove. Drivers copy what they write to, so the links are only ever read.
 */
export async function materializeSnapshot(index: SnapshotIndex, blobs: BlobStore, dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: false, mode: 0o700 });
  for (const [name, hash] of Object.entries(index.files)) {
    const source = await blobs.fileOf(hash);
    if (source === undefined) throw new InvalidInputError(`source.snapshot: the blob ${hash} (${name}) went missing`, { field: 'source.snapshot' });
    await fs.link(source, path.join(dir, name)).catch(() => fs.copyFile(source, path.join(dir, name)));
  }
}

/** Under the node's home: snapshots being captured or laid out for a restore (emptied at start). */
export const SNAPSHOT_WORK = 'snapshot-work';

export interface SnapshotInfo {
  /** The snapshot's id: the hash of its index blob. */
  snapshot: string;
  /** The run it was taken from, now paused. */
  run: Run;
  bytes: number;
  /** File name → blob hash. */
  files: Record<string, string>;
}

