import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import pino from 'pino';
import { sha256 } from '../../src/blobs/blob-store.ts';
import { BLOB_PROTOCOL } from '../../src/mesh/blob-exchange.ts';
import { BlobLane, laneAddresses, openLane, type LaneTicket } from '../../src/mesh/blob-lane.ts';
import { JsonFrames } from '../../src/mesh/frames.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { tempDir } from '../helpers/tmp.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

const logger = pino({ level: 'silent' });

/** A port on loopback that nothing listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('blob lane', () => {
  const tmp = tempDir('vmesh-lane-');
  const file = path.join(tmp.dir, 'blob');
  const bytes = randomBytes(3 * 2 ** 20 + 5);
  let lane: BlobLane;
  before(async () => {
    writeFileSync(file, bytes);
    lane = await BlobLane.open(['127.0.0.1'], 0, logger);
  });
  after(async () => {
    await lane.close();
    tmp.remove();
  });

  it('sends an offer to whoever shows its ticket, once, then lets the blob go', async () => {
    let released = 0;
    const ticket = lane.offer(file, bytes.byteLength, () => released++)!;
    assert.equal(ticket.port, lane.port, 'the ticket names the lane\'s port');
    const socket = await openLane('127.0.0.1', ticket);
    const got = Buffer.concat(await socket.toArray());
    assert.ok(got.equals(bytes), `the bytes came whole (${got.byteLength} of ${bytes.byteLength})`);
    await until(() => released === 1, 2000, 'the offer to be released');
    await assert.rejects(openLane('127.0.0.1', ticket), 'a second connection with the same ticket fails its handshake');
    assert.equal(released, 1, 'released once');
  });

  it('sends only the offered bytes of a file that grew', async () => {
    const ticket = lane.offer(file, 10, () => {})!;
    const got = Buffer.concat(await (await openLane('127.0.0.1', ticket)).toArray());
    assert.ok(got.equals(bytes.subarray(0, 10)), `ten bytes came, not ${got.byteLength}`);
  });

  it('refuses a wrong key and an unknown ticket; a withdrawn offer is gone', async () => {
    let released = 0;
    const ticket = lane.offer(file, bytes.byteLength, () => released++)!;
    await assert.rejects(openLane('127.0.0.1', { ...ticket, key: randomBytes(32).toString('hex') }), 'a wrong key fails the handshake');
    await assert.rejects(openLane('127.0.0.1', { ...ticket, id: randomBytes(16).toString('hex') }), 'an unknown ticket fails the handshake');
    assert.equal(released, 0, 'a failed handshake does not take the offer');
    lane.withdraw(ticket.id);
    lane.withdraw(ticket.id);
    assert.equal(released, 1, 'withdrawn, and released once');
    await assert.rejects(openLane('127.0.0.1', ticket), 'a withdrawn offer cannot be taken');
  });

  it('holds at most 8 offers for one peer', async () => {
    let released = 0;
    const tickets = Array.from({ length: 9 }, () => lane.offer(file, 1, () => released++, 'peer-a'));
    assert.equal(tickets.filter((t) => t !== undefined).length, 8, 'eight for peer-a');
    assert.equal(released, 1, 'the ninth refused and let go');
    const other = lane.offer(file, 1, () => released++, 'peer-b');
    assert.notEqual(other, undefined, 'another peer still gets one');
    for (const t of [...tickets, other]) if (t !== undefined) lane.withdraw(t.id);
  });

  it('holds at most 64 offers; close withdraws every one', async () => {
    let released = 0;
    const tickets: Array<LaneTicket | undefined> = [];
    for (let i = 0; i < 65; i++) tickets.push(lane.offer(file, 1, () => released++, `peer-${i % 9}`));
    assert.equal(tickets.filter((t) => t !== undefined).length, 64, '64 offers open');
    assert.equal(released, 1, 'the 65th was refused and its blob let go at once');
    await lane.close();
    assert.equal(released, 65, 'closing withdrew the rest');
    assert.equal(lane.offer(file, 1, () => released++), undefined, 'a closed lane offers nothing');
    lane = await BlobLane.open(['127.0.0.1'], 0, logger);
  });

  it('listens on the TCP addresses the mesh listens on, once each, on one port', async () => {
    const addrs = ['/ip4/10.0.0.2/tcp/7421', '/ip6/::1/tcp/7421', '/ip4/10.0.0.3/udp/7421', '/dns4/example.org/tcp/1', '/ip4/10.0.0.2/tcp/7422'].map((a) => multiaddr(a));
    assert.deepEqual(laneAddresses(addrs), ['10.0.0.2', '::1']);
    const wild = ['/ip4/0.0.0.0/tcp/1', '/ip4/10.0.0.2/tcp/1', '/ip6/::/tcp/1', '/ip6/::1/tcp/1'].map((a) => multiaddr(a));
    assert.deepEqual(laneAddresses(wild), ['0.0.0.0', '::'], 'a wildcard covers the other addresses of its family');
    // IPv4 and IPv6 on one port: the IPv6 listener takes IPv6 only (it clashed with IPv4 on the same port before).
    const ipv6Loopback = Object.values(os.networkInterfaces()).some((addrs) => addrs?.some((a) => a.address === '::1'));
    if (!ipv6Loopback) return; // a host without IPv6 on loopback: the part above still ran
    const both = await BlobLane.open(['127.0.0.1', '::1'], 0, logger);
    try {
      const ticket = both.offer(file, 10, () => {})!;
      const got = Buffer.concat(await (await openLane('::1', ticket)).toArray());
      assert.ok(got.equals(bytes.subarray(0, 10)), 'served over IPv6 on the same port');
    } finally {
      await both.close();
    }
  });
});

describe('blob lane between nodes', () => {
  const daemons: TestDaemon[] = [];
  const peers: MeshHost[] = [];
  const tmp = tempDir('vmesh-lane-peer-');
  let b: TestDaemon;
  before(async () => {
    b = await startMeshDaemon();
    daemons.push(b);
  });
  after(async () => {
    for (const p of peers) await p.stop();
    for (const d of daemons) await d.remove();
    tmp.remove();
  });

  async function fetchesOf(d: TestDaemon): Promise<Record<string, number>> {
    return Object.fromEntries((await d.daemon.node.metrics.blobFetches.get()).values.map((v) => [String(v.labels.via), v.value]));
  }

  /** A bare peer connected to B that answers blob requests its own way. */
  async function peer(answer: (frames: JsonFrames, request: { hash: string; lane?: boolean }) => Promise<void>): Promise<MeshHost> {
    const host = await bareMeshHost();
    peers.push(host);
    await host.handle(BLOB_PROTOCOL, async (stream) => {
      const frames = new JsonFrames(stream, 1024, 1 << 20);
      const request = JSON.parse(new TextDecoder().decode((await frames.readChunk()) as Uint8Array)) as { hash: string; lane?: boolean };
      await answer(frames, request);
      await stream.close();
    });
    await host.dial(multiaddr(b.daemon.mesh!.addresses()[0]!));
    await until(() => b.daemon.mesh!.host.getConnections(host.peerId).length > 0, 5000, 'B to see the peer\'s connection');
    return host;
  }

  /** B's fetch of `hash` from `host` fails, and B keeps nothing of it; `lane` is closed after. */
  async function fetchFails(hash: string, host: MeshHost, lane: BlobLane): Promise<void> {
    try {
      await assert.rejects(b.daemon.mesh!.blobs.fetch(hash, { hints: [host.peerId], lookup: false }), { code: 'blob_unavailable' });
    } finally {
      await lane.close();
    }
    assert.equal(await b.daemon.node.blobs.has(hash), false, 'nothing kept');
    assert.deepEqual(readdirSync(path.join(b.daemon.node.blobs.root, 'incoming')), [], 'no partial file left');
  }

  it('takes the bytes over the mesh stream when the lane offered cannot be reached', async () => {
    const bytes = randomBytes(100_000);
    const hash = sha256(bytes);
    let choice: unknown;
    let asked: boolean | undefined;
    const host = await peer(async (frames, request) => {
      asked = request.lane;
      await frames.write({ ok: true, size: bytes.byteLength, lane: { port: await closedPort(), id: randomBytes(16).toString('hex'), key: randomBytes(32).toString('hex') } });
      choice = JSON.parse(new TextDecoder().decode((await frames.readChunk()) as Uint8Array));
      await frames.writeChunk(bytes);
    });
    const before = await fetchesOf(b);
    await b.daemon.mesh!.blobs.fetch(hash, { hints: [host.peerId], lookup: false });
    assert.equal(asked, true, 'B asked for the lane');
    assert.deepEqual(choice, { via: 'stream' }, 'B said it wants the bytes on the stream');
    assert.ok((await b.daemon.node.blobs.get(hash))?.equals(bytes), 'B holds the blob');
    assert.equal((await fetchesOf(b)).stream, (before.stream ?? 0) + 1, 'counted as come over the stream');
    // A lane that could not be reached is not asked for again soon: the next fetch spares the wait.
    await b.daemon.node.blobs.remove(hash);
    await b.daemon.mesh!.blobs.fetch(hash, { hints: [host.peerId], lookup: false });
    assert.equal(asked, undefined, 'the second fetch did not ask for the lane');
  });

  it('bans a peer whose lane sends the wrong bytes, and keeps nothing', async () => {
    const lane = await BlobLane.open(['127.0.0.1'], 0, logger);
    const file = path.join(tmp.dir, 'lies');
    writeFileSync(file, 'lies!');
    const host = await peer(async (frames) => {
      await frames.write({ ok: true, size: 5, lane: lane.offer(file, 5, () => {}) });
      await frames.readChunk();
    });
    await fetchFails(sha256(new TextEncoder().encode('truth')), host, lane);
    const ban = b.daemon.mesh!.guard.list().find((x) => x.peer === host.peerId.toString());
    assert.match(ban?.reason ?? '', /\/vmesh\/blob\/2: the bytes that came hash to sha256:[0-9a-f]{64}, not sha256:/);
  });

  it('does not ban a peer whose lane broke off before the end, and keeps nothing', async () => {
    const lane = await BlobLane.open(['127.0.0.1'], 0, logger);
    const bytes = randomBytes(1000);
    const file = path.join(tmp.dir, 'short');
    writeFileSync(file, bytes.subarray(0, 600));
    const host = await peer(async (frames) => {
      // It announces 1000 bytes; the file it offers ends after 600.
      await frames.write({ ok: true, size: 1000, lane: lane.offer(file, 1000, () => {}) });
      await frames.readChunk();
    });
    await fetchFails(sha256(bytes), host, lane);
    assert.equal(b.daemon.mesh!.guard.isBanned(host.peerId.toString()), false, 'a lane that broke off is not an offence');
  });

  it('a node whose lane port is taken starts without its lane, and still sends blobs', async () => {
    const taken = createServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => taken.once('listening', resolve));
    try {
      const c = await startMeshDaemon({ join: b.daemon.mesh!.addresses(), blobLanePort: (taken.address() as { port: number }).port });
      daemons.push(c);
      assert.equal(c.daemon.mesh!.blobs.lanePort, undefined, 'no lane');
      await until(() => c.daemon.mesh!.nodes().length >= 2, 10_000, 'C to see B');
      const bytes = randomBytes(20_000);
      const hash = await c.daemon.node.blobs.put(bytes);
      await b.daemon.mesh!.blobs.fetch(hash, { hints: [c.daemon.mesh!.host.peerId], lookup: false });
      assert.ok((await b.daemon.node.blobs.get(hash))?.equals(bytes), 'B took the blob from C over the mesh stream');
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('a node with the lane switched off neither asks for it nor offers it', async () => {
    const a = await startMeshDaemon({ join: b.daemon.mesh!.addresses(), blobLane: false });
    daemons.push(a);
    await until(() => a.daemon.mesh!.nodes().length >= 2, 10_000, 'A and B to see each other');
    const [toA, toB] = [randomBytes(50_000), randomBytes(50_000)];
    const [onA, onB] = [await a.daemon.node.blobs.put(toA), await b.daemon.node.blobs.put(toB)];
    const before = await fetchesOf(b);
    await a.daemon.mesh!.blobs.fetch(onB, { hints: [b.daemon.mesh!.host.peerId], lookup: false });
    await b.daemon.mesh!.blobs.fetch(onA, { hints: [a.daemon.mesh!.host.peerId], lookup: false });
    assert.deepEqual(await fetchesOf(a), { stream: 1 }, 'A did not ask for B\'s lane');
    assert.equal((await fetchesOf(b)).stream, (before.stream ?? 0) + 1, 'A offered B no lane');
    assert.equal(a.daemon.mesh!.blobs.lanePort, undefined, 'A runs no lane');
    assert.ok((await a.daemon.node.blobs.get(onB))?.equals(toB), 'A holds B\'s blob');
    assert.ok((await b.daemon.node.blobs.get(onA))?.equals(toA), 'B holds A\'s blob');
  });
});
