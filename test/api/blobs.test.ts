import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer, text } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import { sha256 } from '../../src/blobs/blob-store.ts';
import type { Daemon } from '../../src/daemon/daemon.ts';
import { ApiError, VmeshClient } from '../../src/sdk/client.ts';
import { startMeshDaemon, type TestDaemon } from '../helpers/mesh.ts';

const MiB = 2 ** 20;

/** Bytes as a stream of 64 KiB chunks, as a file or a pipe would give them. */
function chunked(bytes: Buffer): Readable {
  return Readable.from((function* () {
    for (let at = 0; at < bytes.byteLength; at += 65536) yield bytes.subarray(at, at + 65536);
  })());
}

describe('HTTP API: /v1/blobs', () => {
  let node: TestDaemon;
  let daemon: Daemon;
  let client: VmeshClient;
  const incoming = () => {
    try {
      return readdirSync(path.join(daemon.node.blobs.root, 'incoming'));
    } catch {
      return [];
    }
  };

  before(async () => {
    node = await startMeshDaemon({}, undefined, { limits: { blobBytes: 2 * MiB, blobStoreBytes: 4 * MiB } });
    daemon = node.daemon;
    client = new VmeshClient({ url: daemon.url, token: daemon.token });
  });
  after(async () => {
    await client.close();
    await node.remove();
  });

  async function rejects(p: Promise<unknown>, status: number, code: string, message?: RegExp) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof ApiError, String(err));
      assert.equal(err.status, status, err.message);
      assert.equal(err.code, code, err.message);
      if (message !== undefined) assert.match(err.message, message);
      return true;
    });
  }

  it('stores bytes and a stream, lists them, serves them back whole, and answers HEAD from the node alone', async () => {
    const small = randomBytes(1000);
    const put = await client.putBlob(small);
    assert.deepEqual(put, { blob: sha256(small), bytes: 1000, created: true });
    assert.equal((await client.putBlob(small)).created, false, 'the second put finds it');

    const big = randomBytes(MiB + 12345);
    const streamed = await client.putBlob(chunked(big), { size: big.byteLength, expect: sha256(big) });
    assert.deepEqual(streamed, { blob: sha256(big), bytes: big.byteLength, created: true });
    const unsized = randomBytes(300_000);
    assert.equal((await client.putBlob(chunked(unsized))).blob, sha256(unsized), 'a stream of unknown length (chunked) is taken too');

    const got = await client.getBlob(streamed.blob);
    assert.equal(got.bytes, big.byteLength);
    assert.equal(got.from, undefined, 'it was here');
    assert.ok((await buffer(Readable.fromWeb(got.body))).equals(big), '(await buffer(Readable.fromWeb(got.body))).equals(big)');
    assert.equal(await client.blobSize(put.blob), 1000);
    assert.equal(await client.blobSize(sha256(Buffer.from('never stored'))), undefined);

    const list = await client.listBlobs();
    assert.deepEqual(list.blobs.slice(0, 3).map((b) => b.hash), [streamed.blob, sha256(unsized), put.blob], 'most recently used first (the get touched the big one)');
    assert.equal(list.usage.bytes, 1000 + big.byteLength + unsized.byteLength);
    assert.equal(list.usage.maxBytes, 4 * MiB);
    assert.deepEqual(incoming(), []);
  });

  it('refuses bytes that are not what they claim, too many bytes, and a hash that is not one — keeping nothing', async () => {
    const before = (await client.listBlobs()).usage;
    const bytes = randomBytes(5000);
    await rejects(client.putBlob(bytes, { expect: sha256(Buffer.from('other')) }), 400, 'blob_mismatch', /hash to sha256:[0-9a-f]{64}, not sha256:/);
    await rejects(client.putBlob(randomBytes(3 * MiB)), 413, 'blob_too_large', /more than the 2097152 this node takes \(limits\.blobBytes\)/);
    await rejects(client.putBlob(chunked(randomBytes(3 * MiB))), 413, 'blob_too_large', /more than the 2097152 bytes this node takes/);
    await rejects(client.putBlob(bytes, { expect: 'sha256:abc' }), 400, 'invalid_input', /expect/);
    await rejects(client.getBlob('md5:1234'), 400, 'invalid_input', /hash/);
    await rejects(client.deleteBlob(`sha256:${'0'.repeat(64)}`), 404, 'blob_unavailable');
    await rejects(client.getBlob(`sha256:${'0'.repeat(64)}`, { local: true }), 404, 'blob_unavailable', /does not hold/);
    // The node is in a mesh of one: nobody provides it.
    await rejects(client.getBlob(`sha256:${'1'.repeat(64)}`), 404, 'blob_unavailable', /no node of the mesh could provide/);
    const res = await fetch(`${daemon.url}/v1/blobs`, { method: 'POST', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(res.status, 401, 'no token, no blob');
    assert.deepEqual((await client.listBlobs()).usage, before, 'nothing was stored');
    assert.deepEqual(incoming(), [], 'no partial file left');
  });

  it('an upload cut off midway leaves nothing behind', async () => {
    const before = (await client.listBlobs()).usage.blobs;
    const stop = new AbortController();
    const source = Readable.from((async function* () {
      yield randomBytes(65536);
      await new Promise((r) => setTimeout(r, 200));
      stop.abort(new Error('cut'));
      yield randomBytes(65536);
    })());
    await assert.rejects(client.putBlob(source, { size: MiB, signal: stop.signal }));
    const deadline = Date.now() + 5000;
    while (incoming().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(incoming(), []);
    assert.equal((await client.listBlobs()).usage.blobs, before);
  });

  it('evicts the least recently used to make room, refuses what held blobs leave no room for, and deletes on request', async () => {
    const blobs = [];
    for (let i = 0; i < 4; i++) blobs.push((await client.putBlob(randomBytes(MiB))).blob);
    const list = await client.listBlobs();
    assert.ok(list.usage.bytes <= 4 * MiB, `${list.usage.bytes} bytes stored`);
    assert.deepEqual(list.blobs.map((b) => b.hash), [...blobs].reverse(), 'only the four newest are left');

    const release = await daemon.node.blobs.hold(blobs.slice(0, 3));
    assert.deepEqual((await client.listBlobs()).blobs.filter((b) => b.held).length, 3);
    await rejects(client.putBlob(randomBytes(2 * MiB)), 507, 'blob_store_full', /live runs hold 3145728 of its 4194304 bytes/);
    await rejects(client.deleteBlob(blobs[0]!), 409, 'blob_held');
    release();
    await client.deleteBlob(blobs[0]!);
    await rejects(client.getBlob(blobs[0]!, { local: true }), 404, 'blob_unavailable');
    assert.equal(await text(Readable.fromWeb((await client.getBlob(blobs[1]!)).body)).then((t) => t.length > 0), true);
    assert.deepEqual(incoming(), []);
  });
});
