import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { BlobStore, BlobStoreFullError, sha256 } from '../../src/blobs/blob-store.ts';
import { isVmeshError } from '../../src/spec/index.ts';
import { startTestNode } from '../helpers/node.ts';
import { tempDir } from '../helpers/tmp.ts';

const KB = 1000;
const blob = (n = KB) => randomBytes(n);
const hex = (hash: string) => hash.slice('sha256:'.length);

/** What is really on disk: blob files and their total size, and leftovers in incoming/. */
function onDisk(root: string): { hashes: string[]; bytes: number; incoming: string[] } {
  const names = (dir: string) => {
    try {
      return readdirSync(path.join(root, dir));
    } catch {
      return [];
    }
  };
  const files = names('sha256');
  return {
    hashes: files.map((n) => `sha256:${n}`).sort(),
    bytes: files.reduce((n, f) => n + statSync(path.join(root, 'sha256', f)).size, 0),
    incoming: names('incoming'),
  };
}

describe('blob store: size cap and least-recently-used eviction', () => {
  const dirs: Array<() => void> = [];
  const fresh = (maxBytes?: number) => {
    const tmp = tempDir('vmesh-blobs-');
    dirs.push(tmp.remove);
    return new BlobStore(tmp.dir, maxBytes === undefined ? {} : { maxBytes });
  };
  afterEach(() => {
    for (const remove of dirs.splice(0)) remove();
  });

  it('stores, reads back and lists blobs by hash, and refuses a malformed hash by field', async () => {
    const store = fresh();
    const bytes = blob();
    const hash = await store.put(bytes);
    assert.equal(hash, sha256(bytes));
    assert.deepEqual(await store.get(hash), bytes);
    assert.equal(await store.sizeOf(hash), KB);
    assert.deepEqual(await store.list(), [hash]);
    assert.equal(await store.put(bytes), hash, 'a second put of the same bytes is the same blob');
    assert.deepEqual(onDisk(store.root).hashes, [hash]);
    await assert.rejects(store.has('sha256:xyz'), (err) => isVmeshError(err) && err.field === 'blob' && /not a sha256:<64 hex> hash/.test(err.message));
  });

  it('evicts the least recently used blob to make room, counting reads as use', async () => {
    const store = fresh(3 * KB);
    const removed: string[] = [];
    store.onRemoved((h) => removed.push(h));
    const [a, b, c] = [await store.put(blob()), await store.put(blob()), await store.put(blob())];
    assert.ok(await store.get(a), 'a read makes a the most recently used');
    const d = await store.put(blob());
    assert.deepEqual(removed, [b]);
    assert.deepEqual(onDisk(store.root).hashes, [a, c, d].sort());
    assert.equal((await store.usage()).bytes, 3 * KB);
    await store.fileOf(c);
    const e = await store.put(blob(2 * KB));
    assert.deepEqual(removed, [b, a, d], 'a and d were the oldest uses; c was just streamed');
    assert.deepEqual(onDisk(store.root).hashes, [c, e].sort());
  });

  it('never evicts a held blob, refuses a blob that cannot fit, and loses nothing doing so', async () => {
    const store = fresh(3 * KB);
    const a = await store.put(blob());
    const b = await store.put(blob());
    const release = await store.hold([a, b]);
    const c = await store.put(blob());
    const d = await store.put(blob());
    assert.deepEqual(onDisk(store.root).hashes, [a, b, d].sort(), 'c went, held a and b stayed');
    assert.equal(await store.has(c), false);

    await assert.rejects(store.put(blob(2 * KB)), (err) => err instanceof BlobStoreFullError && /live runs hold 2000 of its 3000 bytes/.test(err.message));
    await assert.rejects(store.put(blob(4 * KB)), (err) => err instanceof BlobStoreFullError && /larger than this node's whole blob store \(limits.blobStoreBytes = 3000\)/.test(err.message));
    const tmp = await store.tempPath();
    writeFileSync(tmp, blob(2 * KB));
    await assert.rejects(store.adopt(tmp, sha256(randomBytes(1))), BlobStoreFullError);
    assert.deepEqual(onDisk(store.root).incoming, [], 'a refused file is removed');
    assert.deepEqual(onDisk(store.root).hashes, [a, b, d].sort(), 'a refusal evicts nothing');

    release();
    release(); // a second release changes nothing
    const big = await store.put(blob(2 * KB));
    assert.deepEqual(onDisk(store.root).hashes, [d, big].sort(), 'once released, the oldest go first');
    const twice = [await store.hold([d]), await store.hold([d])];
    twice[0]!();
    await store.put(blob(2 * KB));
    assert.equal(await store.has(d), true, 'one of two holds is still there');
    twice[1]!();
  });

  it('concurrent writers never take the store past its cap; one blob written twice at once is stored once', async () => {
    const store = fresh(3 * KB);
    await Promise.all(Array.from({ length: 12 }, () => store.put(blob())));
    const disk = onDisk(store.root);
    assert.equal(disk.hashes.length, 3);
    assert.equal(disk.bytes, 3 * KB);
    assert.equal((await store.usage()).bytes, 3 * KB);

    const same = blob();
    const hashes = await Promise.all(Array.from({ length: 5 }, () => store.put(same)));
    assert.ok(hashes.every((h) => h === sha256(same)), 'hashes.every((h) => h === sha256(same))');
    assert.equal((await store.usage()).bytes, onDisk(store.root).bytes, 'counted once');
    assert.deepEqual(onDisk(store.root).incoming, []);
  });

  it('after a restart, knows its blobs, evicts oldest by mtime, and trims to a lowered cap', async () => {
    const first = fresh();
    const hashes = [];
    for (let i = 0; i < 4; i++) hashes.push(await first.put(blob()));
    // Uses a minute apart, newest first: hashes[3] is the oldest.
    const now = Date.now() / 1000;
    hashes.forEach((h, i) => utimesSync(path.join(first.root, 'sha256', hex(h)), now - 60 * i, now - 60 * i));
    const again = new BlobStore(first.root, { maxBytes: 2 * KB });
    assert.deepEqual(await again.list(), [hashes[1], hashes[0]], 'trimmed to 2 blobs, least recently used first');
    assert.deepEqual(onDisk(first.root).hashes, [hashes[0], hashes[1]].sort());
  });

  it('keeps a pinned copy (kept for another node) through eviction and a restart until its pin runs out; pins take at most half the store', async () => {
    const store = fresh(4 * KB);
    const kept = await store.put(blob());
    await store.pin(kept, 60_000);
    for (let i = 0; i < 6; i++) await store.put(blob()); // the kept copy is the least recently used throughout
    assert.ok(await store.has(kept), 'the pinned copy outlived six newer blobs in a store of four');
    const entry = (await store.entries()).find((e) => e.hash === kept)!;
    assert.ok(Date.parse(entry.pinnedUntil!) > Date.now() + 50_000, `pinned until ${entry.pinnedUntil}`);
    assert.equal((await store.usage()).pinnedBytes, KB);
    // Half the store at most: 2 KB of 4 are pinned, a third 1 KB copy is refused before it is fetched.
    const second = await store.put(blob());
    await store.pin(second, 60_000);
    await assert.rejects(store.assertPinRoom(KB), (err) => err instanceof BlobStoreFullError && /copies for other nodes already/.test(err.message));
    const third = await store.put(blob());
    await assert.rejects(store.pin(third, 60_000), BlobStoreFullError);
    await assert.rejects(store.pin(sha256(blob()), 60_000), (err) => isVmeshError(err) && err.field === 'blob');
    // A restarted store still keeps them; a copy whose pin ran out is an ordinary cached blob again.
    const again = new BlobStore(store.root, { maxBytes: 4 * KB });
    assert.deepEqual((await again.entries()).filter((e) => e.pinnedUntil !== undefined).map((e) => e.hash).sort(), [kept, second].sort());
    const pins = JSON.parse(readFileSync(path.join(store.root, 'pins.json'), 'utf8')) as Record<string, string>;
    writeFileSync(path.join(store.root, 'pins.json'), JSON.stringify({ ...pins, [kept]: new Date(Date.now() - 1000).toISOString() }));
    const later = new BlobStore(store.root, { maxBytes: 4 * KB });
    for (let i = 0; i < 4; i++) await later.put(blob());
    assert.equal(await later.has(kept), false, 'evicted once its pin ran out');
    assert.ok(await later.has(second), 'the other pin still holds');
    // The operator may still remove a kept copy by hand.
    assert.equal(await later.remove(second), true);
    assert.equal((await new BlobStore(store.root, { maxBytes: 4 * KB }).usage()).pinnedBytes, 0);
  });

  it('drops a corrupted copy when it is read, and tells its listeners', async () => {
    const store = fresh();
    const removed: string[] = [];
    store.onRemoved((h) => removed.push(h));
    const hash = await store.put(blob());
    writeFileSync(path.join(store.root, 'sha256', hex(hash)), blob());
    assert.equal(await store.get(hash), undefined);
    assert.equal(await store.has(hash), false);
    assert.deepEqual(removed, [hash]);
    assert.equal((await store.usage()).bytes, 0);
  });
});

describe('node: a run holds the blobs it reads', () => {
  it('keeps a live run\'s source in a full store, and lets it go once the run is over', async () => {
    const { node, remove } = await startTestNode({ limits: { blobStoreBytes: 4 * KB } });
    try {
      const code = Buffer.from(`export default () => { const end = Date.now() + 1500; while (Date.now() < end); return 'held'; }`);
      const source = await node.blobs.put(code);
      const run = await node.submit({ kind: 'function', source: { blob: source } });
      // Fill the store twice over while the run is live: its source is the least recently used blob.
      for (let i = 0; i < 8; i++) await node.blobs.put(blob());
      assert.equal(await node.blobs.has(source), true, 'a live run\'s source is never evicted');
      await assert.rejects(node.blobs.put(blob(4 * KB)), BlobStoreFullError);
      const ended = await node.waitFor(run.id);
      assert.equal(ended.state, 'succeeded', ended.reason ?? JSON.stringify(ended.result));
      assert.equal(ended.result?.output, 'held');
      await node.settled(run.id);
      for (let i = 0; i < 4; i++) await node.blobs.put(blob());
      assert.equal(await node.blobs.has(source), false, 'released at the end of the run, it is evicted like any other');
    } finally {
      await remove();
    }
  });
});
