import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { sha256File } from '../../../blobs/blob-store.ts';
import { InvalidSourceError } from '../../../spec/index.ts';
import type { LayerCompression } from './unpack.ts';

/** What vmesh takes from an image's configuration (the OCI image config's `config` object). */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: Record<string, string>;
  workdir?: string;
}

export interface ImageLayer {
  file: string;
  digest?: string;
  compression: LayerCompression;
}

export interface Image {
  /** A key for the unpacked root file system: the manifest's digest (or its content hash). */
  key: string;
  layers: ImageLayer[];
  config: ImageConfig;
}

const MAX_JSON_BYTES = 4 * 2 ** 20;
const DIGEST = /^sha256:([0-9a-f]{64})$/;

function bad(why: string): never {
  throw new InvalidSourceError(`source: ${why}`, { field: 'source' });
}

/** True when `dir` looks like an image (OCI layout or `docker save`) rather than a root file system. */
export function isImageDir(dir: string): boolean {
  return existsSync(path.join(dir, 'oci-layout')) || existsSync(path.join(dir, 'manifest.json'));
}

/** Reads an OCI image layout, or a `docker save` directory, and checks every blob it names against its digest. */
export async function readImage(dir: string): Promise<Image> {
  if (existsSync(path.join(dir, 'index.json')) && existsSync(path.join(dir, 'oci-layout'))) return readOciLayout(dir);
  if (existsSync(path.join(dir, 'manifest.json'))) return readDockerSave(dir);
  return bad('not an OCI image layout (no oci-layout and index.json) nor a docker save archive (no manifest.json)');
}

async function readOciLayout(dir: string): Promise<Image> {
  const layout = await readJson<{ imageLayoutVersion?: string }>(path.join(dir, 'oci-layout'));
  if (typeof layout.imageLayoutVersion !== 'string') bad('oci-layout has no imageLayoutVersion');
  let index = await readJson<Descriptorish>(path.join(dir, 'index.json'));
  let manifestDigest: string | undefined;
  // An index may point at a manifest or at another index (multi-platform): take linux/amd64 or the only one.
  for (let depth = 0; depth < 4; depth++) {
    const manifests = index.manifests;
    if (!Array.isArray(manifests) || manifests.length === 0) bad('index.json lists no manifests');
    const chosen = manifests.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64') ?? manifests[0]!;
    const blob = await blobPath(dir, chosen.digest);
    const doc = await readJson<Descriptorish>(blob, chosen.digest);
    if (Array.isArray(doc.manifests)) {
      index = doc;
      continue;
    }
    manifestDigest = chosen.digest;
    if (doc.config?.digest === undefined || !Array.isArray(doc.layers)) bad(`manifest ${chosen.digest} has no config or layers`);
    const config = await readJson<RawConfig>(await blobPath(dir, doc.config.digest), doc.config.digest);
    const layers: ImageLayer[] = [];
    for (const l of doc.layers) {
      // Layers can be large: their digests are checked while they are unpacked, not on every read.
      layers.push({ file: await blobPath(dir, l.digest, { verify: false }), digest: l.digest, compression: compressionOf(l.mediaType ?? '') });
    }
    return { key: manifestDigest, layers, config: imageConfig(config) };
  }
  return bad('index.json nests image indexes too deeply');
}

async function readDockerSave(dir: string): Promise<Image> {
  const manifest = await readJson<Array<{ Config?: string; Layers?: string[] }>>(path.join(dir, 'manifest.json'));
  const first = Array.isArray(manifest) ? manifest[0] : undefined;
  if (first?.Config === undefined || !Array.isArray(first.Layers)) bad('manifest.json names no Config and Layers');
  const config = await readJson<RawConfig>(await inside(dir, first.Config));
  const layers: ImageLayer[] = [];
  for (const rel of first.Layers) {
    const file = await inside(dir, rel);
    layers.push({ file, compression: (await isGzip(file)) ? 'gzip' : 'none' });
  }
  const key = `sha256:${createHash('sha256').update(JSON.stringify(manifest)).digest('hex')}`;
  return { key, layers, config: imageConfig(config) };
}

interface Descriptorish {
  manifests?: Array<{ digest: string; mediaType?: string; platform?: { os?: string; architecture?: string } }>;
  config?: { digest: string };
  layers?: Array<{ digest: string; mediaType?: string }>;
}

interface RawConfig {
  config?: { Entrypoint?: string[] | null; Cmd?: string[] | null; Env?: string[] | null; WorkingDir?: string };
}

function imageConfig(raw: RawConfig): ImageConfig {
  const c = raw.config ?? {};
  const env: Record<string, string> = {};
  for (const kv of c.Env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const out: ImageConfig = { entrypoint: c.Entrypoint ?? [], cmd: c.Cmd ?? [], env };
  if (c.WorkingDir) out.workdir = c.WorkingDir;
  return out;
}

function compressionOf(mediaType: string): LayerCompression {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip') || mediaType.endsWith('tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd')) bad(`layers compressed with zstd (${mediaType}) are not supported yet; use gzip or none`);
  return 'none';
}

/** The file of a blob; by default its content is checked against the digest (manifests, configs). */
async function blobPath(dir: string, digest: string, { verify = true } = {}): Promise<string> {
  const m = DIGEST.exec(digest ?? '');
  if (m === null) bad(`${JSON.stringify(digest)} is not a sha256 digest`);
  const file = path.join(dir, 'blobs', 'sha256', m[1]!);
  if (!verify) {
    if (!existsSync(file)) bad(`blob ${digest} is missing`);
    return file;
  }
  const actual = await sha256File(file).catch(() => bad(`blob ${digest} is missing`));
  if (actual !== digest) bad(`blob ${digest} does not match its digest (it hashes to ${actual})`);
  return file;
}

/** A path named by an archive's own files, which must stay inside the archive directory. */
async function inside(dir: string, rel: string): Promise<string> {
  const real = await fs.realpath(path.resolve(dir, rel)).catch(() => bad(`${JSON.stringify(rel)} is missing`));
  const root = await fs.realpath(dir);
  if (!real.startsWith(root + path.sep)) bad(`${JSON.stringify(rel)} points outside the image`);
  return real;
}

async function readJson<T>(file: string, digest?: string): Promise<T> {
  const stat = await fs.stat(file).catch(() => bad(`${path.basename(file)} is missing`));
  if (stat.size > MAX_JSON_BYTES) bad(`${digest ?? path.basename(file)} is over ${MAX_JSON_BYTES} bytes`);
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as T;
  } catch (err) {
    return bad(`${digest ?? path.basename(file)} is not valid JSON: ${(err as Error).message}`);
  }
}

export async function isGzip(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const { buffer } = await handle.read(Buffer.alloc(2), 0, 2, 0);
    return buffer[0] === 0x1f && buffer[1] === 0x8b;
  } finally {
    await handle.close();
  }
}
