import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { pino } from 'pino';
import { createMeshHost, type MeshHost } from '../../src/mesh/host.ts';
import { startDaemon, type Daemon } from '../../src/daemon/daemon.ts';
import { loadConfig, type ConfigFile } from '../../src/node/config.ts';
import { tempDir } from './tmp.ts';

/** Mesh timings short enough for tests: adverts twice a second, peers gone after 3 s of silence. */
export const FAST_MESH = { advertIntervalMs: 500, peerTtlMs: 3000, pingIntervalMs: 300 } as const;

export interface TestDaemon {
  daemon: Daemon;
  home: string;
  /** Stops the daemon (its home stays, so that it can be started again). */
  stop(): Promise<void>;
  /** Stops it and removes its home. */
  remove(): Promise<void>;
}

/** A real daemon (node, mesh on loopback, API on a free port) on a temporary or given home. */
export async function startMeshDaemon(mesh: NonNullable<ConfigFile['mesh']> = {}, home?: string, overrides: ConfigFile = {}): Promise<TestDaemon> {
  const tmp = home === undefined ? tempDir('vmesh-mesh-') : { dir: home, remove: () => {} };
  const config = loadConfig(tmp.dir, {
    api: { port: 0 },
    logLevel: 'silent',
    workers: 2,
    ...overrides,
    mesh: { listen: ['/ip4/127.0.0.1/tcp/0'], ...FAST_MESH, ...mesh },
  });
  const daemon = await startDaemon(config, pino({ level: process.env.VMESH_TEST_LOG ?? 'silent' }));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await daemon.close();
  };
  return { daemon, home: tmp.dir, stop, remove: async () => (await stop(), tmp.remove()) };
}

/**
 * Polls `check` every 50 ms until it holds or `ms` pass; returns the time it took. A check that throws
 * counts as not yet (a node's API may not answer for a moment); the last error is in the timeout's message.
 */
export async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<number> {
  const start = performance.now();
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return performance.now() - start;
    } catch (err) {
      last = err;
    }
    if (performance.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}${last === undefined ? '' : ` (last error: ${(last as Error).message})`}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A bare libp2p host with vmesh's transports and services on loopback, and a fresh key: a stranger to the
 * mesh. `mesh` sets its timers (FAST_MESH, say).
 */
export async function bareMeshHost(key?: PrivateKey, mesh: NonNullable<ConfigFile['mesh']> = {}): Promise<MeshHost> {
  const tmp = tempDir('vmesh-bare-');
  const config = loadConfig(tmp.dir, { mesh: { listen: ['/ip4/127.0.0.1/tcp/0'], ...mesh } }).mesh;
  tmp.remove();
  return createMeshHost(key ?? (await generateKeyPair('Ed25519')), config, {});
}
