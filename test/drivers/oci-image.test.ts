import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { ImageCache } from '../../src/drivers/oci/image/cache.ts';
import { InvalidInputError, InvalidSourceError } from '../../src/spec/index.ts';
import { entriesOf, tarOf, writeOciLayout, type Entry } from '../helpers/oci-image.ts';
import { skipUnless } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const MiB = 2 ** 20;

describe('image unpacking', () => {
  const tmp = tempDir('vmesh-image-');
  after(() => tmp.remove());
  let n = 0;
  const fresh = () => path.join(tmp.dir, `case${++n}`);
  const cacheRoot = path.join(tmp.dir, 'cache');
  const cache = new ImageCache(cacheRoot);
  /** Nothing but finished images in the cache: no half-unpacked directory. */
  const cacheEntries = () => (existsSync(cacheRoot) ? readdirSync(cacheRoot) : []);

  async function layout(layers: Entry[][], config = {}): Promise<string> {
    const dir = fresh();
    await writeOciLayout(dir, layers, config);
    return dir;
  }

  it('applies layers in order with whiteouts and opaque directories, and keeps modes and links', async () => {
    const dir = await layout(
      [
        [
          { name: 'bin/', type: 'directory' },
          { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o755 },
          { name: 'bin/alias', type: 'symlink', linkname: 'tool' },
          { name: 'etc/', type: 'directory' },
          { name: 'etc/keep', content: 'keep' },
          { name: 'etc/gone', content: 'gone' },
          { name: 'var/cache/', type: 'directory' },
          { name: 'var/cache/old', content: 'old' },
          { name: 'etc/hard', type: 'link', linkname: 'etc/keep' },
        ],
        [
          { name: 'etc/.wh.gone' },
          { name: 'var/cache/.wh..wh..opq' },
          { name: 'var/cache/new', content: 'new' },
        ],
      ],
      { Cmd: ['/bin/tool'], Env: ['A=1'], WorkingDir: '/etc' },
    );
    const image = await cache.ensure(dir, 10 * MiB);
    const r = image.rootfs;
    assert.equal(readFileSync(path.join(r, 'etc', 'keep'), 'utf8'), 'keep');
    assert.equal(existsSync(path.join(r, 'etc', 'gone')), false, 'whiteout removed it');
    assert.deepEqual(readdirSync(path.join(r, 'var', 'cache')), ['new'], 'opaque directory dropped the lower layer');
    assert.equal(readFileSync(path.join(r, 'bin', 'alias'), 'utf8'), '#!/bin/sh\n');
    assert.equal((await import('node:fs')).statSync(path.join(r, 'bin', 'tool')).mode & 0o777, 0o755);
    assert.equal((await import('node:fs')).statSync(path.join(r, 'etc', 'hard')).nlink, 2);
    assert.deepEqual(image.config, { entrypoint: [], cmd: ['/bin/tool'], env: { A: '1' }, workdir: '/etc' });
    const again = await cache.ensure(dir, 10 * MiB);
    assert.equal(again.rootfs, r, 'the second run shares the unpacked image');
  });

  const refusals: Array<[string, Entry[], RegExp]> = [
    ['a path with ..', [{ name: '../evil', content: 'x' }], /leaves the root file system/],
    ['an absolute path', [{ name: '/etc/evil', content: 'x' }], /absolute paths are not allowed/],
    ['a symlink out of the root', [{ name: 'up', type: 'symlink', linkname: '../../../../etc' }], /symlink to "..\/..\/..\/..\/etc" leaves the root/],
    ['a hard link out of the root', [{ name: 'h', type: 'link', linkname: '../../etc/passwd' }], /hard link .* leaves the root/],
    ['a device node', [{ name: 'null', type: 'character-device' }], /device nodes are not allowed/],
  ];
  for (const [what, entries, message] of refusals) {
    it(`refuses a layer with ${what}, leaving nothing in the cache`, async () => {
      const before = cacheEntries();
      await assert.rejects(cache.ensure(await layout([entries]), 10 * MiB), (e: unknown) => e instanceof InvalidSourceError && message.test(e.message));
      assert.deepEqual(cacheEntries(), before);
    });
  }

  it('never writes through an absolute symlink onto the host', async () => {
    const host = path.join(tmp.dir, 'host-target');
    mkdirSync(host);
    const dir = await layout([[{ name: 'evil', type: 'symlink', linkname: host }, { name: 'evil/pwned', content: 'x' }]]);
    const image = await cache.ensure(dir, 10 * MiB);
    assert.deepEqual(readdirSync(host), [], 'nothing reached the host directory');
    assert.equal(readFileSync(path.join(image.rootfs, host, 'pwned'), 'utf8'), 'x', 'the write landed inside the root');
  });

  it('refuses an image that unpacks to more than diskMiB, during the unpack and from the cache', async () => {
    const big: Entry[] = [{ name: 'big', content: Buffer.alloc(3 * MiB) }];
    const before = cacheEntries();
    await assert.rejects(cache.ensure(await layout([big]), 2 * MiB), /unpacks to more than 2 MiB/);
    assert.deepEqual(cacheEntries(), before);
    const dir = await layout([big]);
    await cache.ensure(dir, 10 * MiB);
    await assert.rejects(cache.ensure(dir, 2 * MiB), (e: unknown) => e instanceof InvalidInputError && e.field === 'resources.diskMiB');
  });

  it('refuses a blob that does not match its digest, and a layout with no manifests', async () => {
    const dir = await layout([[{ name: 'a', content: 'a' }]]);
    const blobs = path.join(dir, 'blobs', 'sha256');
    const manifest = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')).manifests[0].digest.slice(7);
    const m = JSON.parse(readFileSync(path.join(blobs, manifest), 'utf8'));
    const layerFile = path.join(blobs, m.layers[0].digest.slice(7));
    writeFileSync(layerFile, 'tampered');
    await assert.rejects(cache.ensure(dir, MiB), /does not match its digest/);
    // A well-formed layer that is not the one the manifest names: caught by its digest after unpacking.
    writeFileSync(layerFile, gzipSync(await tarOf([{ name: 'other', content: 'other' }])));
    await assert.rejects(cache.ensure(dir, MiB), /does not match its digest/);
    assert.ok(!cacheEntries().some((e) => e.startsWith('.unpacking-')), '!cacheEntries().some((e) => e.startsWith(\'.unpacking-\'))');
    writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [] }));
    await assert.rejects(cache.ensure(dir, MiB), /lists no manifests/);
  });

  it('reads a docker save archive directory', async () => {
    const dir = fresh();
    mkdirSync(path.join(dir, 'layer1'), { recursive: true });
    writeFileSync(path.join(dir, 'layer1', 'layer.tar'), await tarOf([{ name: 'hello.txt', content: 'from docker save' }]));
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ config: { Entrypoint: ['/bin/sh'], Cmd: null } }));
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: ['t:latest'], Layers: ['layer1/layer.tar'] }]));
    const image = await cache.ensure(dir, MiB);
    assert.equal(readFileSync(path.join(image.rootfs, 'hello.txt'), 'utf8'), 'from docker save');
    assert.deepEqual(image.config.entrypoint, ['/bin/sh']);
  });

  it('opens an image archive (a layout as a tar, gzipped or not) once, and refuses a hostile one', async () => {
    const dir = await layout([[{ name: 'from-archive', content: 'archived' }]], { Cmd: ['/x'] });
    for (const gzip of [false, true]) {
      const tar = await tarOf(entriesOf(dir));
      const file = path.join(tmp.dir, `image${gzip ? '.tar.gz' : '.tar'}`);
      writeFileSync(file, gzip ? gzipSync(tar) : tar);
      const image = await cache.ensureArchive(file, 10 * MiB);
      assert.equal(readFileSync(path.join(image.rootfs, 'from-archive'), 'utf8'), 'archived');
      assert.deepEqual(image.config.cmd, ['/x']);
      assert.equal((await cache.ensureArchive(file, 10 * MiB)).rootfs, image.rootfs);
    }
    assert.ok(!cacheEntries().some((e) => e.startsWith('.archive-')), 'no opened archive is left');
    const evil = path.join(tmp.dir, 'evil.tar');
    writeFileSync(evil, await tarOf([{ name: '../../escaped', content: 'x' }]));
    await assert.rejects(cache.ensureArchive(evil, MiB), /archive evil\.tar entry "..\/..\/escaped": the path leaves the root file system/);
    assert.ok(!cacheEntries().some((e) => e.startsWith('.archive-')), '!cacheEntries().some((e) => e.startsWith(\'.archive-\'))');
  });

  it('unpacks a real root file system (busybox with its applet links)', { skip: skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') }, async () => {
    const rootfs = busyboxRootfs(fresh());
    const image = await cache.ensure(await layout([entriesOf(rootfs)]), 64 * MiB);
    assert.equal(readdirSync(path.join(image.rootfs, 'bin')).length, readdirSync(path.join(rootfs, 'bin')).length);
  });
});
