import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Stream } from '@libp2p/interface';
import { JsonFrames } from '../../src/mesh/frames.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { bareMeshHost } from '../helpers/mesh.ts';

const CHUNK = 256 * 1024;

describe('JsonFrames between two libp2p hosts', () => {
  const hosts: MeshHost[] = [];
  after(async () => {
    for (const h of hosts) await h.stop();
  });

  it('a reader slower than its sender gets every byte: the stream is paused, not overrun', async () => {
    const [sender, reader] = [await bareMeshHost(), await bareMeshHost()];
    hosts.push(sender, reader);
    const total = 48; // chunks of 256 KiB: 12 MiB, three times libp2p's 4 MiB read buffer
    await sender.handle('/test/flood/1', async (stream: Stream) => {
      const frames = new JsonFrames(stream, 1024, CHUNK);
      for (let i = 0; i < total; i++) await frames.writeChunk(new Uint8Array(CHUNK).fill(i));
      await stream.close();
    });
    await reader.dial(sender.getMultiaddrs()[0]!);
    const frames = new JsonFrames(await reader.dialProtocol(sender.peerId, '/test/flood/1'), 1024, CHUNK);
    // Nothing is read for a while: everything the sender can push arrives meanwhile.
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < total; i++) {
      const chunk = await frames.readChunk();
      assert.equal(chunk.byteLength, CHUNK);
      assert.equal(chunk[0], i, `chunk ${i} in order`);
      if (i % 8 === 0) await new Promise((r) => setTimeout(r, 50)); // and slowly after that
    }
  });
});
