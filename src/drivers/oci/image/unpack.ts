import { createHash } from 'node:crypto';
import { constants, createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract, type Header } from 'tar-stream';
import { sha256File } from '../../../blobs/blob-store.ts';
import { InvalidSourceError } from '../../../spec/index.ts';
import { resolveInRoot } from '../in-root.ts';
import { hostIdOf, type IdMap } from '../user-namespace.ts';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export type LayerCompression = 'none' | 'gzip';

/** Running total of bytes written into one root file system, against its cap. */
export interface UnpackBudget {
  usedBytes: number;
  maxBytes: number;
}

export interface LayerOptions {
  /** The layer's digest (`sha256:…`), checked as it streams. */
  digest?: string;
  /**
   * Give every entry the owner its tar header names, shifted into these host ids (a user namespace's
   * range); an owner outside the range is refused. Without, entries belong to the node's user.
   */
  owners?: IdMap;
}

/**
 * Applies one image layer (a tar, maybe gzipped) onto `rootfs`, the OCI way: entries in order, `.wh.`
 * whiteouts delete what lower layers made, `.wh..wh..opq` empties a directory. Nothing it writes can land
 * outside `rootfs`: paths with `..` or a leading `/` are refused, and so are symlinks and hard links whose
 * targets leave the root, and device nodes. Parent directories are resolved inside the root, so a
 * symlink from an earlier entry cannot carry a later write out of it.
 */
export async function applyLayer(rootfs: string, file: string, compression: LayerCompression, budget: UnpackBudget, label: string, o: LayerOptions = {}): Promise<void> {
  const digest = o.digest;
  const tar = extract();
  const source = createReadStream(file);
  const hash = createHash('sha256');
  source.on('data', (chunk) => hash.update(chunk as Buffer)); // the digest is checked as the layer streams
  const stages = compression === 'gzip' ? [source, createGunzip(), tar] : [source, tar];
  const done = pipeline(stages as unknown as [NodeJS.ReadableStream, NodeJS.WritableStream]);
  try {
    for await (const entry of tar) {
      await applyEntry(rootfs, entry.header, entry, budget, label, o.owners);
    }
    await done;
    const actual = `sha256:${hash.digest('hex')}`;
    if (digest !== undefined && actual !== digest) {
      throw new InvalidSourceError(`source: layer ${label} does not match its digest (it hashes to ${actual})`, { field: 'source' });
    }
  } catch (err) {
    source.destroy();
    await done.catch(() => {});
    if (err instanceof InvalidSourceError) throw err;
    // A layer that cannot be read is most often one that is not what the manifest says: say so.
    const actual = digest === undefined ? undefined : await sha256File(file).catch(() => undefined);
    if (actual !== undefined && actual !== digest) {
      throw new InvalidSourceError(`source: layer ${label} does not match its digest (it hashes to ${actual})`, { field: 'source' });
    }
    throw new InvalidSourceError(`source: layer ${label} is not a readable tar: ${(err as Error).message}`, { field: 'source', cause: err });
  }
}

async function applyEntry(
  rootfs: string,
  header: Header,
  body: AsyncIterable<unknown> & { resume(): void },
  budget: UnpackBudget,
  label: string,
  owners: IdMap | undefined,
): Promise<void> {
  const fail = (why: string): never => {
    throw new InvalidSourceError(`source: layer ${label} entry ${JSON.stringify(header.name)}: ${why}`, { field: 'source' });
  };
  const owner = owners === undefined ? undefined : ownerOf(header, owners, fail);
  const rel = normalize(header.name, fail);
  if (rel === '') {
    body.resume();
    return; // the root itself
  }
  const dir = await dirInRoot(rootfs, path.posix.dirname(rel), fail);
  const base = path.posix.basename(rel);

  if (base === OPAQUE) {
    for (const child of await fs.readdir(dir)) await fs.rm(path.join(dir, child), { recursive: true, force: true });
    body.resume();
    return;
  }
  if (base.startsWith(WHITEOUT)) {
    await fs.rm(path.join(dir, base.slice(WHITEOUT.length)), { recursive: true, force: true });
    body.resume();
    return;
  }
  const target = path.join(dir, base);
  const mode = (header.mode ?? 0o644) & 0o7777;
  switch (header.type) {
    case 'directory': {
      const existing = await fs.lstat(target).catch(() => undefined);
      if (existing !== undefined && !existing.isDirectory()) await fs.rm(target, { recursive: true, force: true });
      if (existing === undefined || !existing.isDirectory()) await fs.mkdir(target, { mode });
      if (owner !== undefined) await fs.lchown(target, owner.uid, owner.gid);
      await fs.chmod(target, mode);
      body.resume();
      return;
    }
    case 'file':
    case 'contiguous-file': {
      const size = header.size ?? 0;
      budget.usedBytes += size;
      if (budget.usedBytes > budget.maxBytes) {
        fail(`the image unpacks to more than ${Math.floor(budget.maxBytes / 2 ** 20)} MiB (resources.diskMiB)`);
      }
      await fs.rm(target, { recursive: true, force: true });
      const handle = await fs.open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
      try {
        for await (const chunk of body) await handle.write(chunk as Buffer);
        // Owner first: a chown clears the setuid and setgid bits, which the mode then puts back.
        if (owner !== undefined) await handle.chown(owner.uid, owner.gid);
        await handle.chmod(mode); // the umask may have cut the mode at open
      } finally {
        await handle.close();
      }
      return;
    }
    case 'symlink': {
      const link = header.linkname ?? '';
      // An absolute target is resolved inside the container's root; a relative one must not climb out of it.
      if (!link.startsWith('/')) normalize(path.posix.join(path.posix.dirname(rel), link), () => fail(`symlink to ${JSON.stringify(link)} leaves the root file system`));
      await fs.rm(target, { recursive: true, force: true });
      await fs.symlink(link, target);
      if (owner !== undefined) await fs.lchown(target, owner.uid, owner.gid);
      body.resume();
      return;
    }
    case 'link': {
      const linkRel = normalize(header.linkname ?? '', () => fail(`hard link to ${JSON.stringify(header.linkname)} leaves the root file system`));
      const source = path.join(await dirInRoot(rootfs, path.posix.dirname(linkRel), fail), path.posix.basename(linkRel));
      const stat = await fs.lstat(source).catch(() => undefined);
      if (stat === undefined || !stat.isFile()) fail(`hard link to ${JSON.stringify(header.linkname)}, which is not a file of the image`);
      await fs.rm(target, { recursive: true, force: true });
      await fs.link(source, target);
      body.resume();
      return;
    }
    case 'character-device':
    case 'block-device':
      return fail('device nodes are not allowed in images');
    default:
      return fail(`entries of type ${header.type} are not allowed in images`);
  }
}

/** The host owner of an entry: its header's uid and gid, shifted into `owners`. */
function ownerOf(header: Header, owners: IdMap, fail: (why: string) => never): { uid: number; gid: number } {
  const [uid, gid] = [header.uid ?? 0, header.gid ?? 0];
  const [hostUid, hostGid] = [hostIdOf(owners, uid), hostIdOf(owners, gid)];
  if (hostUid === undefined || hostGid === undefined) {
    return fail(`its owner ${uid}:${gid} is outside the ${owners.size} ids a container has (drivers.oci.userNamespace.size)`);
  }
  return { uid: hostUid, gid: hostGid };
}

/**
 * Gives what an unpack made without an owner of its own (the root directory, parents that no entry
 * named) to the containers' root: host ids outside `owners` become `owners.hostId`. Symlinks are
 * changed themselves, never followed.
 */
export async function claimUnowned(rootfs: string, owners: IdMap): Promise<void> {
  const inRange = (id: number) => id >= owners.hostId && id < owners.hostId + owners.size;
  const visit = async (p: string): Promise<void> => {
    const st = await fs.lstat(p);
    if (!inRange(st.uid) || !inRange(st.gid)) {
      await fs.lchown(p, inRange(st.uid) ? st.uid : owners.hostId, inRange(st.gid) ? st.gid : owners.hostId);
    }
    if (st.isDirectory()) for (const child of await fs.readdir(p)) await visit(path.join(p, child));
  };
  await visit(rootfs);
}

/** `./a/b/` → `a/b`; refuses absolute paths and any `..` that would leave the root. */
function normalize(name: string, fail: (why: string) => never): string {
  if (name.startsWith('/')) fail('absolute paths are not allowed in layers');
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) fail('the path leaves the root file system');
      out.pop();
    } else out.push(part);
  }
  return out.join('/');
}

/** The host path of directory `rel` inside `rootfs`, made if missing (see resolveInRoot). */
async function dirInRoot(rootfs: string, rel: string, fail: (why: string) => never): Promise<string> {
  const found = await resolveInRoot(rootfs, rel, { createDirectories: true });
  if ('problem' in found) return fail(`${found.at}: ${found.problem}`);
  if (found.kind !== 'directory') return fail(`${rel} is not a directory`);
  return found.host;
}
