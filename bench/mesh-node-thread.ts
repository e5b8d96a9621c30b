// One worker thread of the in-process mesh benchmark (bench/mesh-threads.ts): it runs the mesh nodes it is
// asked to start, each its own libp2p host on loopback, and answers for them.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { parentPort } from 'node:worker_threads';
import { pino } from 'pino';
import { BlobStore } from '../src/blobs/blob-store.ts';
import { loadOrCreateIdentity } from '../src/mesh/identity.ts';
import { Mesh, type NodeDescription } from '../src/mesh/mesh.ts';
import { loadConfig } from '../src/node/config.ts';
import { VMESH_VERSION } from '../src/version.ts';
import { collectGarbage } from './lib/proc.ts';
import type { ThreadAnswer, ThreadRequest } from './mesh-threads.ts';

const meshes = new Map<number, Mesh>();
/** Connections the nodes of this thread dialled that have closed since. */
let closed = 0;
const logger = pino({ level: 'silent' });
const describe = (): NodeDescription => ({
  version: VMESH_VERSION,
  drivers: [{ name: 'wasm', kinds: ['function'], isolation: 'language', available: true }],
  capacity: { vcpus: 2, memoryMiB: 4096, diskMiB: 10_000, egressMbps: 1000, ingressMbps: 1000 },
  free: { vcpus: 2, memoryMiB: 4096, diskMiB: 10_000, egressMbps: 1000, ingressMbps: 1000 },
  runs: { queued: 0, active: 0 },
});

async function answer(req: ThreadRequest): Promise<ThreadAnswer> {
  switch (req.op) {
    case 'start': {
      const home = path.join(req.root, `n${req.index}`);
      await fs.mkdir(home);
      // Default timers; all peers share 127.0.0.1, so libp2p's 5 new connections per second per IP would throttle the start.
      const config = loadConfig(home, { mesh: { listen: ['/ip4/127.0.0.1/tcp/0'], join: req.join, inboundConnectionsPerSecond: 1000 } }).mesh;
      const mesh = await Mesh.start({ identity: await loadOrCreateIdentity(home), config, logger, describe, blobs: new BlobStore(path.join(home, 'blobs')), maxBlobBytes: 2 ** 30 });
      meshes.set(req.index, mesh);
      mesh.host.addEventListener('connection:close', (e) => {
        if (e.detail.direction === 'outbound') closed++;
      });
      return { op: 'started', id: mesh.id, addresses: mesh.addresses() };
    }
    case 'state':
      return { op: 'state', nodes: [...meshes.values()].map((m) => ({ id: m.id, members: m.membership.list().map((x) => [x.id, x.advert.seq] as [string, number]) })), closed };
    case 'publish':
      await Promise.all([...meshes.values()].map((m) => m.publish()));
      return { op: 'done' };
    case 'held': {
      await collectGarbage();
      const h = v8.getHeapStatistics();
      return { op: 'held', bytes: h.used_heap_size + h.external_memory };
    }
    case 'stop':
      for (const m of meshes.values()) await m.stop();
      meshes.clear();
      return { op: 'done' };
  }
}

parentPort!.on('message', (msg: { seq: number; req: ThreadRequest }) => {
  answer(msg.req).then(
    (a) => parentPort!.postMessage({ seq: msg.seq, answer: a }),
    (err: Error) => parentPort!.postMessage({ seq: msg.seq, error: err.stack ?? err.message }),
  );
});
