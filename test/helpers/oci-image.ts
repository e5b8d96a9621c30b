import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, lstatSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

/** One tar entry of a test layer. */
export interface Entry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
  /** Owner in the image (default 0:0). */
  uid?: number;
  gid?: number;
}

/** A layer's tar, built in memory. */
export async function tarOf(entries: Entry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => (p.on('end', () => resolve()), p.on('error', reject)));
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = { name: e.name, type, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644), uid: e.uid ?? 0, gid: e.gid ?? 0, ...(e.linkname ? { linkname: e.linkname } : {}), ...(type === 'character-device' ? { devmajor: 1, devminor: 3 } : {}) };
    const body = type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => p.entry(header, body, (err) => (err ? reject(err) : resolve())));
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Every file, directory and symlink under `dir`, as tar entries (file modes kept). */
export function entriesOf(dir: string, prefix = ''): Entry[] {
  const out: Entry[] = [];
  for (const name of readdirSync(dir).sort()) {
    const host = path.join(dir, name);
    const rel = prefix + name;
    const st = lstatSync(host);
    if (st.isSymbolicLink()) out.push({ name: rel, type: 'symlink', linkname: readlinkSync(host) });
    else if (st.isDirectory()) out.push({ name: `${rel}/`, type: 'directory', mode: st.mode & 0o7777 }, ...entriesOf(host, `${rel}/`));
    else out.push({ name: rel, content: readFileSync(host), mode: st.mode & 0o7777 });
  }
  return out;
}

export interface ImageConfigJson {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Writes an OCI image layout (as `skopeo copy … oci:` makes) with the given layers, gzipped. */
export async function writeOciLayout(dir: string, layers: Entry[][], config: ImageConfigJson): Promise<void> {
  mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const blob = (bytes: Buffer) => {
    const hex = sha(bytes);
    writeFileSync(path.join(dir, 'blobs', 'sha256', hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.byteLength };
  };
  const layerDescs = [];
  const diffIds = [];
  for (const entries of layers) {
    const tar = await tarOf(entries);
    diffIds.push(`sha256:${sha(tar)}`);
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...blob(gzipSync(tar)) });
  }
  const cfg = blob(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: diffIds } })));
  const manifest = blob(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg }, layers: layerDescs })),
  );
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest }] }));
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}
