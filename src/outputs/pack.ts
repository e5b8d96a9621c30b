import { createHash, type Hash } from 'node:crypto';
import { constants, createWriteStream, promises as fs, type Stats } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack as tarPack, type Pack } from 'tar-stream';
import type { OutputFile, OutputsArchive, SkippedOutput } from '../spec/index.ts';
import { hashingTap } from '../util/hashing-tap.ts';

/** Where an archive of outputs goes, and how much of it there may be. Implemented by the node over its blob store. */
export interface OutputSink {
  /** Cap on the whole tar, headers included. */
  maxBytes: number;
  /** Files are also returned inline in the result while their sum stays within this. */
  inlineBytes: number;
  /** A fresh path on the sink's filesystem for an archive being written. */
  tempPath(): Promise<string>;
  /** Takes a finished archive (moving the file) and returns its blob id. */
  adopt(file: string, sha256: string): Promise<string>;
}

/** What a sandbox's declared outputs came to. */
export interface CollectedOutputs {
  files: OutputFile[];
  skipped: SkippedOutput[];
  archive?: OutputsArchive;
}

export const NO_OUTPUTS: CollectedOutputs = Object.freeze({ files: [], skipped: [] }) as CollectedOutputs;

/** Entries (files + directories) one archive may hold. */
export const MAX_OUTPUT_ENTRIES = 10_000;
/** Directory depth followed below a declared path. */
const MAX_DEPTH = 32;
const BLOCK = 512;
/**
 * Archives are deterministic: names in walk order, times at the epoch, modes 0644/0755, owner 0. The same
 * files give the same blob on any node, so results can be compared by hash alone.
 */
const EPOCH = new Date(0);

interface PlannedEntry {
  rel: string;
  abs: string;
  stat: Stats;
}

/**
 * Packs the declared outputs (files or directories, relative to `root`) of a finished sandbox into one tar
 * and hands it to the sink. Nothing outside `root` is ever read: a symlink anywhere on the way is skipped,
 * never followed; fifos, sockets and devices are skipped; files past the size or entry cap are left out
 * and the archive is marked truncated. Every skipped path is reported with its reason.
 */
export async function packOutputs(root: string, declared: readonly string[], sink: OutputSink): Promise<CollectedOutputs> {
  if (declared.length === 0) return NO_OUTPUTS;
  const skipped: SkippedOutput[] = [];
  let realRoot: string;
  try {
    realRoot = await fs.realpath(root);
  } catch {
    return { files: [], skipped: declared.map((p) => ({ path: p, reason: 'missing: the sandbox has no scratch directory' })) };
  }
  const plan = await planEntries(realRoot, declared, sink.maxBytes, skipped);
  const truncated = skipped.some((s) => s.reason.startsWith('over the'));
  let temp: string | undefined;
  try {
    temp = await sink.tempPath();
    const { files, bytes, sha256 } = await writeArchive(plan, temp, sink.inlineBytes);
    const blob = await sink.adopt(temp, sha256);
    return { files, skipped, archive: { blob, bytes, entries: plan.length, truncated } };
  } catch (err) {
    if (temp !== undefined) await fs.rm(temp, { force: true });
    const reason = `could not be archived: ${(err as Error).message}`;
    return { files: [], skipped: [...skipped, ...plan.filter((e) => e.stat.isFile()).map((e) => ({ path: e.rel, reason }))] };
  }
}

/** Walks the declared paths without following symlinks, and keeps what fits under the caps. */
async function planEntries(realRoot: string, declared: readonly string[], maxBytes: number, skipped: SkippedOutput[]): Promise<PlannedEntry[]> {
  const entries: PlannedEntry[] = [];
  const seen = new Set<string>();
  let size = 2 * BLOCK; // the end-of-archive marker

  const add = (rel: string, abs: string, stat: Stats): void => {
    if (seen.has(rel)) return;
    seen.add(rel);
    const cost = headerBytes(rel) + (stat.isFile() ? Math.ceil(stat.size / BLOCK) * BLOCK : 0);
    if (entries.length >= MAX_OUTPUT_ENTRIES) {
      skipped.push({ path: rel, reason: `over the ${MAX_OUTPUT_ENTRIES}-entry cap of an outputs archive` });
    } else if (size + cost > maxBytes) {
      skipped.push({ path: rel, reason: `over the ${maxBytes}-byte outputs cap` });
    } else {
      size += cost;
      entries.push({ rel, abs, stat });
    }
  };

  const visit = async (rel: string, abs: string, depth: number): Promise<void> => {
    let stat: Stats;
    try {
      stat = await fs.lstat(abs);
    } catch {
      skipped.push({ path: rel, reason: 'missing' });
      return;
    }
    if (stat.isSymbolicLink()) return void skipped.push({ path: rel, reason: 'a symlink (never followed)' });
    if (stat.isFile()) return add(rel, abs, stat);
    if (!stat.isDirectory()) return void skipped.push({ path: rel, reason: 'not a regular file or directory' });
    if (depth > MAX_DEPTH) return void skipped.push({ path: rel, reason: `deeper than ${MAX_DEPTH} directories` });
    add(rel, abs, stat);
    const names = (await fs.readdir(abs).catch(() => [] as string[])).sort();
    for (const name of names) await visit(`${rel}/${name}`, path.join(abs, name), depth + 1);
  };

  for (const rel of declared) {
    const clean = path.posix.normalize(rel).replace(/\/+$/, '');
    const abs = path.resolve(realRoot, clean);
    if (clean === '.' || clean.startsWith('../') || !abs.startsWith(realRoot + path.sep)) {
      skipped.push({ path: rel, reason: 'outside the sandbox scratch directory' });
      continue;
    }
    // A symlinked directory on the way would lead out of the sandbox: the parent must resolve to itself.
    const parent = await fs.realpath(path.dirname(abs)).catch(() => undefined);
    if (parent !== path.dirname(abs)) {
      skipped.push({ path: rel, reason: parent === undefined ? 'missing' : 'under a symlinked directory (never followed)' });
      continue;
    }
    await visit(clean, abs, 0);
  }
  return entries;
}

/** A ustar header, plus a pax header pair when the name is too long for ustar's 100 bytes. */
function headerBytes(rel: string): number {
  return Buffer.byteLength(rel) > 100 ? 3 * BLOCK + Math.ceil((Buffer.byteLength(rel) + 32) / BLOCK) * BLOCK : BLOCK;
}

async function writeArchive(
  plan: readonly PlannedEntry[],
  file: string,
  inlineBytes: number,
): Promise<{ files: OutputFile[]; bytes: number; sha256: string }> {
  const tar = tarPack();
  const tap = hashingTap();
  const written = pipeline(tar, tap.stream, createWriteStream(file, { mode: 0o600 }));
  written.catch(() => {}); // observed below; an early failure must not go unhandled meanwhile
  const files: OutputFile[] = [];
  let inlineLeft = inlineBytes;
  try {
    for (const e of plan) {
      if (e.stat.isDirectory()) {
        await addEntry(tar, { name: `${e.rel}/`, type: 'directory', mode: 0o755, mtime: EPOCH });
        continue;
      }
      const inline = e.stat.size <= inlineLeft;
      if (inline) inlineLeft -= e.stat.size;
      const out = await addFile(tar, e, inline);
      files.push(out);
    }
    tar.finalize();
  } catch (err) {
    tar.destroy(err as Error);
    throw err;
  }
  await written;
  return { files, bytes: tap.bytes(), sha256: tap.digest() };
}

function addEntry(tar: Pack, header: Parameters<Pack['entry']>[0]): Promise<void> {
  return new Promise((resolve, reject) => tar.entry(header, (err) => (err ? reject(err) : resolve())));
}

/** Streams one file into the archive, hashing it, through a descriptor opened without following symlinks. */
async function addFile(tar: Pack, e: PlannedEntry, inline: boolean): Promise<OutputFile> {
  const handle = await fs.open(e.abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const stat = await handle.stat();
    if (!stat.isFile() || stat.size !== e.stat.size) throw new Error(`${e.rel} changed while it was archived`);
    const hash: Hash = createHash('sha256');
    const kept: Buffer[] = [];
    let entry!: ReturnType<Pack['entry']>;
    const done = new Promise<void>((resolve, reject) => {
      entry = tar.entry({ name: e.rel, size: stat.size, mode: stat.mode & 0o111 ? 0o755 : 0o644, mtime: EPOCH }, (err) => (err ? reject(err) : resolve()));
    });
    done.catch(() => {}); // awaited below, after the body is written
    if (stat.size > 0) {
      for await (const chunk of handle.createReadStream({ autoClose: false, start: 0, end: stat.size - 1 }) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        if (inline) kept.push(chunk);
        if (!entry.write(chunk)) await new Promise<void>((resolve) => entry.once('drain', () => resolve()));
      }
    }
    entry.end(undefined); // streamx's typing wants an argument; undefined ends without writing
    await done;
    const out: OutputFile = { path: e.rel, bytes: stat.size, sha256: `sha256:${hash.digest('hex')}` };
    if (inline) out.contentBase64 = Buffer.concat(kept).toString('base64');
    return out;
  } finally {
    await handle.close();
  }
}
