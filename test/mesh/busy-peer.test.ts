import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import { MONITOR_PING_TIMEOUT_MS } from '../../src/mesh/host.ts';
import { bareMeshHost, FAST_MESH } from '../helpers/mesh.ts';

const PEER = new URL('../fixtures/mesh-peer.ts', import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a busy peer', () => {
  it('keeps its connection while it answers nothing for longer than libp2p\'s 5 s ping timeout', async () => {
    // The peer's process is frozen (SIGSTOP) for 16 s: libp2p's connection monitor pings every 10 s with
    // these timers, so one ping goes unanswered for at least 6 s. With libp2p's own 5 s floor the
    // connection was aborted; a peer that is only busy keeps it.
    assert.ok(MONITOR_PING_TIMEOUT_MS > 16_000, `the floor (${MONITOR_PING_TIMEOUT_MS} ms) outlasts the freeze`);
    const peer = spawn(process.execPath, ['--import', 'tsx', PEER, JSON.stringify(FAST_MESH)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const host = await bareMeshHost(undefined, FAST_MESH);
    try {
      const [line] = (await once(createInterface({ input: peer.stdout }), 'line')) as [string];
      const conn = await host.dial(multiaddr(line));
      const closed: string[] = [];
      host.addEventListener('connection:close', (e) => closed.push(`${e.detail.id} (${e.detail.status})`));
      assert.ok(peer.kill('SIGSTOP'), 'the peer froze');
      await sleep(16_000);
      assert.ok(peer.kill('SIGCONT'), 'the peer went on');
      const rtt = await host.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(5000) });
      assert.deepEqual(closed, [], 'no connection closed');
      assert.deepEqual(host.getConnections(conn.remotePeer).map((c) => c.id), [conn.id], 'the same connection, still open');
      assert.ok(rtt >= 0, `a ping over it came back (${rtt} ms)`);
    } finally {
      peer.kill('SIGCONT');
      peer.kill('SIGKILL');
      await host.stop();
    }
  });
});
